//! Training arguments, named after Hugging Face's `TrainingArguments` where one exists.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::optim::OptimizerKind;
use super::precision::Precision;
use super::schedule::ScheduleKind;
use crate::model::Architecture;
use crate::runtime::DeviceSpec;

/// When to evaluate (and checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EvalStrategy {
    No,
    Steps,
    #[default]
    Epoch,
}

/// Everything that shapes a training run; the recipe's `[training]` keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArguments {
    pub output_dir: PathBuf,
    /// Replace the contents of a non-empty `output_dir` instead of refusing.
    pub overwrite_output_dir: bool,
    pub num_train_epochs: f64,
    /// When set (> 0), the number of optimizer updates, overriding epochs.
    pub max_steps: Option<usize>,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    pub optim: OptimizerKind,
    /// SGD momentum (PyTorch semantics).
    pub momentum: f64,
    /// Clip the global L2 norm of the gradients to this (0 disables).
    pub max_grad_norm: f64,
    pub lr_scheduler_type: ScheduleKind,
    pub warmup_ratio: f64,
    pub warmup_steps: usize,
    /// For cosine_with_min_lr: the floor the rate decays to.
    pub min_learning_rate: f64,
    /// For cosine_with_min_lr: the step at which the floor is reached (default: all steps).
    pub lr_decay_steps: Option<usize>,
    pub eval_strategy: EvalStrategy,
    pub eval_steps: usize,
    /// Evaluate on at most this many validation batches (None: all). For quick checks.
    pub max_eval_batches: Option<usize>,
    pub logging_steps: usize,
    pub seed: u64,
    /// Stop after this many evaluations without improvement (None: never).
    pub early_stopping_patience: Option<usize>,
    /// Which evaluation metric decides the best checkpoint (without the `eval_` prefix).
    pub metric_for_best_model: String,
    /// None: higher is better unless the metric is a loss.
    pub greater_is_better: Option<bool>,
    pub load_best_model_at_end: bool,
    /// Batch examples of similar length together (less padding).
    pub group_by_length: bool,
    /// Token-based batching (fairseq's `--max-tokens`): examples sorted by length, cut into
    /// batches whose padded size (rows x longest) stays within this many tokens; the
    /// batches are fixed and their order shuffled every epoch. Replaces the batch size.
    pub max_tokens_per_batch: Option<usize>,
    /// Freeze the embedding layer.
    pub freeze_embeddings: bool,
    /// Freeze the bottom k encoder layers.
    pub freeze_layers: usize,
    /// Freeze parameters whose name starts with one of these.
    pub freeze_parameters: Vec<String>,
    /// Show a progress bar (off in tests).
    pub progress: bool,
    /// Where to train: cpu, cuda or cuda:N.
    pub device: DeviceSpec,
    /// fp32, or bf16 / fp16 mixed precision (matrix products in the lower precision, fp32
    /// master weights; fp16 adds dynamic loss scaling). Meant for GPUs: on the CPU the
    /// low-precision products are emulated and slower than fp32.
    pub precision: Precision,
    /// Hugging Face's switches for the same thing: `bf16 = true` means precision bf16.
    pub bf16: bool,
    /// `fp16 = true` means precision fp16.
    pub fp16: bool,
    /// fp32 matrix products in TF32 on Ampere+ GPUs (Hugging Face's `tf32`).
    pub tf32: bool,
    /// Stop (as if interrupted) after this many updates in this process; for resume tests.
    #[serde(skip)]
    pub interrupt_after_steps: Option<usize>,
}

impl Default for TrainingArguments {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from("runs/output"),
            overwrite_output_dir: false,
            num_train_epochs: 3.0,
            max_steps: None,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 64,
            gradient_accumulation_steps: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            optim: OptimizerKind::Adamw,
            momentum: 0.0,
            max_grad_norm: 1.0,
            lr_scheduler_type: ScheduleKind::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            min_learning_rate: 0.0,
            lr_decay_steps: None,
            eval_strategy: EvalStrategy::Epoch,
            eval_steps: 500,
            max_eval_batches: None,
            logging_steps: 50,
            seed: 42,
            early_stopping_patience: None,
            metric_for_best_model: "loss".into(),
            greater_is_better: None,
            load_best_model_at_end: true,
            group_by_length: false,
            max_tokens_per_batch: None,
            freeze_embeddings: false,
            freeze_layers: 0,
            freeze_parameters: vec![],
            progress: true,
            device: DeviceSpec::Cpu,
            precision: Precision::Fp32,
            bf16: false,
            fp16: false,
            tf32: false,
            interrupt_after_steps: None,
        }
    }
}

impl TrainingArguments {
    /// Whether a larger value of the selection metric is better.
    pub fn higher_is_better(&self) -> bool {
        self.greater_is_better
            .unwrap_or(!self.metric_for_best_model.contains("loss"))
    }

    /// Name prefixes of the parameters to freeze, from the freezing options; the
    /// architecture names its embeddings and layers.
    pub fn frozen_prefixes(&self, arch: &dyn Architecture) -> Vec<String> {
        let mut p = self.freeze_parameters.clone();
        if self.freeze_embeddings {
            p.extend(arch.embedding_prefixes());
        }
        p.extend((0..self.freeze_layers).map(|i| arch.layer_prefix(i)));
        p
    }
}

impl TrainingArguments {
    /// The precision to train in, with Hugging Face's `bf16` / `fp16` switches folded in.
    pub fn effective_precision(&self) -> anyhow::Result<Precision> {
        match (self.bf16, self.fp16, self.precision) {
            (true, true, _) => anyhow::bail!("bf16 and fp16 cannot both be true"),
            (true, false, Precision::Fp32 | Precision::Bf16) => Ok(Precision::Bf16),
            (false, true, Precision::Fp32 | Precision::Fp16) => Ok(Precision::Fp16),
            (false, false, p) => Ok(p),
            (_, _, p) => anyhow::bail!(
                "precision = {p:?} contradicts bf16 = {} / fp16 = {}",
                self.bf16,
                self.fp16
            ),
        }
    }
}
