//! The training loop shared by every task: batching, accumulation, clipping, the optimizer
//! and schedule, evaluation, early stopping, checkpoints with exact resume, progress,
//! `metrics.jsonl` and a PNG plot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::args::{EvalStrategy, OptimizerKind, TrainingArguments};
use super::log::MetricsLog;
use super::optim::{
    clip_grad_norm, first_non_finite_grad, global_grad_norm, select_params, AdamW, AdamWConfig,
    GradAccumulator, NoDecayRule, Optimizer, OptimizerState, Sgd, SgdConfig,
};
use super::precision::{GradScaler, Precision};
use super::schedule::LrSchedule;
use crate::model::LoadedModel;

/// What the trainer needs from a task.
pub trait TrainingTask {
    /// Number of training examples.
    fn num_train_examples(&self) -> usize;

    /// Length in tokens of training example `i` (for length-grouped batching).
    fn train_example_length(&self, i: usize) -> usize;

    /// The mean loss over training examples `indices` (the model is in training mode).
    fn training_loss(&self, model: &LoadedModel, indices: &[usize]) -> Result<Tensor>;

    /// Evaluate on the validation data (evaluation mode): metrics by name, `loss` included.
    /// `max_batches` limits the work for quick checks.
    fn evaluate(
        &self,
        model: &LoadedModel,
        max_batches: Option<usize>,
    ) -> Result<BTreeMap<String, f64>>;

    /// Write what a model directory needs besides config and weights (the tokenizer).
    fn save_extras(&self, dir: &Path) -> Result<()>;
}

/// Where a run stands; saved with every checkpoint so a resumed run continues exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: usize,
    pub epoch: usize,
    /// The next micro-batch of `epoch` to run.
    pub batch_in_epoch: usize,
    pub best_metric: Option<f64>,
    pub best_checkpoint: Option<PathBuf>,
    /// Evaluations since the best one.
    pub evals_without_improvement: usize,
    /// The dropout random stream: seed, stream, word position.
    pub rng_seed: [u8; 32],
    pub rng_stream: u64,
    pub rng_word_pos: String,
    /// Losses since the last log line (so logged averages survive a resume).
    pub loss_since_log: f64,
    pub steps_since_log: usize,
    pub done: bool,
    /// fp16's loss scaler (absent in fp32 and bf16 runs).
    #[serde(default)]
    pub grad_scaler: Option<GradScaler>,
}

/// The outcome of [`Trainer::train`].
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub global_step: usize,
    /// The last evaluation's metrics (eval_ prefixed).
    pub last_eval: BTreeMap<String, f64>,
    pub best_metric: Option<f64>,
    /// Whether the run stopped early (patience) or was interrupted on purpose.
    pub stopped_early: bool,
    pub interrupted: bool,
    pub train_seconds: f64,
}

const STATE_FILE: &str = "trainer_state.json";

/// The training loop.
pub struct Trainer<'a, T: TrainingTask> {
    pub args: TrainingArguments,
    pub model: &'a LoadedModel,
    pub task: &'a T,
}

impl<'a, T: TrainingTask> Trainer<'a, T> {
    pub fn new(args: TrainingArguments, model: &'a LoadedModel, task: &'a T) -> Self {
        Self { args, model, task }
    }

    fn micro_batches_per_epoch(&self) -> usize {
        self.task
            .num_train_examples()
            .div_ceil(self.args.per_device_train_batch_size.max(1))
    }

    /// Optimizer updates per epoch (a partial accumulation at the end of an epoch still
    /// makes an update, as in Hugging Face).
    fn updates_per_epoch(&self) -> usize {
        self.micro_batches_per_epoch()
            .div_ceil(self.args.gradient_accumulation_steps.max(1))
    }

    /// Total optimizer updates of the run.
    pub fn total_updates(&self) -> usize {
        match self.args.max_steps {
            Some(s) if s > 0 => s,
            _ => (self.args.num_train_epochs * self.updates_per_epoch() as f64).ceil() as usize,
        }
    }

    /// Example order of `epoch`: a permutation drawn from (seed, epoch), so any epoch can be
    /// rebuilt on resume. With grouping, examples of similar length share a batch and the
    /// batches are shuffled.
    fn epoch_batches(&self, epoch: usize) -> Vec<Vec<usize>> {
        let n = self.task.num_train_examples();
        let bs = self.args.per_device_train_batch_size.max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.args.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(epoch as u64 + 1)),
        );
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        if !self.args.group_by_length {
            return order.chunks(bs).map(<[usize]>::to_vec).collect();
        }
        // Sort within mega-batches of 50 batches by length (Hugging Face's grouping).
        let mut batches: Vec<Vec<usize>> = Vec::new();
        for mega in order.chunks(bs * 50) {
            let mut mega = mega.to_vec();
            mega.sort_by_key(|&i| std::cmp::Reverse(self.task.train_example_length(i)));
            batches.extend(mega.chunks(bs).map(<[usize]>::to_vec));
        }
        batches.shuffle(&mut rng);
        batches
    }

    fn build_optimizer(&self) -> Result<Box<dyn Optimizer>> {
        let params = self.model.params.params();
        let prefixes = self.args.frozen_prefixes();
        let frozen: Vec<String> = params
            .iter()
            .filter(|(n, _)| prefixes.iter().any(|p| n.starts_with(p.as_str())))
            .map(|(n, _)| n.clone())
            .collect();
        for p in &self.args.freeze_parameters {
            if !params.iter().any(|(n, _)| n.starts_with(p.as_str())) {
                bail!("freeze_parameters: no parameter name starts with `{p}`")
            }
        }
        if frozen.len() == params.len() {
            bail!("every parameter is frozen: nothing to train")
        }
        if !frozen.is_empty() {
            tracing::info!(
                "{} of {} parameter tensors frozen",
                frozen.len(),
                params.len()
            );
        }
        let trainable = select_params(params, &NoDecayRule::default(), &frozen)?;
        let a = &self.args;
        Ok(match a.optim {
            OptimizerKind::Adamw => Box::new(AdamW::new(
                trainable,
                AdamWConfig {
                    beta1: a.adam_beta1,
                    beta2: a.adam_beta2,
                    eps: a.adam_epsilon,
                    weight_decay: a.weight_decay,
                },
            )?),
            OptimizerKind::Sgd => Box::new(Sgd::new(
                trainable,
                SgdConfig {
                    momentum: a.momentum,
                    weight_decay: a.weight_decay,
                    ..Default::default()
                },
            )?),
        })
    }

    fn schedule(&self) -> Result<LrSchedule> {
        let a = &self.args;
        let total = self.total_updates();
        let warmup = if a.warmup_steps > 0 {
            a.warmup_steps
        } else {
            (a.warmup_ratio * total as f64).ceil() as usize
        };
        LrSchedule::from_name(
            &a.lr_scheduler_type,
            a.learning_rate,
            warmup as u64,
            total as u64,
            a.min_learning_rate,
            a.lr_decay_steps.unwrap_or(total) as u64,
        )
    }

    /// Refuse to clobber an existing run unless asked; a resume needs one.
    pub fn prepare_output_dir(args: &TrainingArguments, resume: bool) -> Result<()> {
        let dir = &args.output_dir;
        let non_empty = dir
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if resume {
            if latest_checkpoint(dir)?.is_none() {
                bail!("--resume: no checkpoint-* directory in {}", dir.display())
            }
            return Ok(());
        }
        if non_empty {
            if !args.overwrite_output_dir {
                bail!(
                    "output directory {} is not empty: pass --overwrite-output-dir to replace it or --resume to continue it",
                    dir.display()
                )
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
    }

    /// Run training (resuming from the latest checkpoint in `output_dir` when `resume`).
    pub fn train(&self, resume: bool) -> Result<TrainOutput> {
        let args = &self.args;
        let precision = args.effective_precision()?;
        // Forward passes (training and evaluation) of this thread run their matrix
        // products in the lower precision until the guard drops at the end of training.
        let _autocast = crate::ops::autocast(precision.autocast_dtype());
        let out_dir = args.output_dir.clone();
        let mut optimizer = self.build_optimizer()?;
        let schedule = self.schedule()?;
        let total = self.total_updates();
        let accum = args.gradient_accumulation_steps.max(1);
        let batches_per_epoch = self.micro_batches_per_epoch();
        if batches_per_epoch == 0 {
            bail!("no training examples")
        }
        let log = MetricsLog::new(&out_dir.join("metrics.jsonl"))?;

        let mut state = TrainerState {
            grad_scaler: (precision == Precision::Fp16).then(GradScaler::default),
            ..Default::default()
        };
        if resume {
            let ckpt = latest_checkpoint(&out_dir)?.context("no checkpoint to resume from")?;
            state = self.restore(&ckpt, optimizer.as_mut())?;
            // A scaler only in fp16 runs (the precision may differ from the first run's).
            state.grad_scaler = match precision {
                Precision::Fp16 => state.grad_scaler.or_else(|| Some(GradScaler::default())),
                _ => None,
            };
            tracing::info!(
                "resuming from {} at step {}",
                ckpt.display(),
                state.global_step
            );
            log.truncate_after(state.global_step)?;
            if state.done {
                tracing::info!("that run had finished");
            }
        }

        let progress = progress_bar(args.progress, total as u64, state.global_step as u64);
        let started = Instant::now();
        let mut examples_seen = 0usize;
        let mut last_eval = BTreeMap::new();
        let mut stopped_early = false;
        let mut interrupted = false;
        let mut steps_this_run = 0usize;
        let mut acc = GradAccumulator::new();
        let mut micro_in_update = 0usize;
        self.model.mode.set_training(true);

        'epochs: while !state.done && state.global_step < total {
            let batches = self.epoch_batches(state.epoch);
            while state.batch_in_epoch < batches.len() {
                let batch = &batches[state.batch_in_epoch];
                let loss = self.task.training_loss(self.model, batch)?;
                let loss_value: f32 = loss.to_dtype(candle_core::DType::F32)?.to_scalar()?;
                if !loss_value.is_finite() {
                    bail!(
                        "loss is {loss_value} at update {} (epoch {}, batch {}): stopping; checkpoints already written are untouched",
                        state.global_step + 1,
                        state.epoch,
                        state.batch_in_epoch
                    )
                }
                // fp16: backward through the scaled loss, unscale as the gradients add up.
                let loss_scale = state.grad_scaler.as_ref().map_or(1.0, |s| s.scale);
                let grads = (loss * (loss_scale / accum as f64))?.backward()?;
                acc.add(optimizer.params(), &grads, 1.0 / loss_scale)?;
                state.loss_since_log += loss_value as f64 / accum as f64;
                micro_in_update += 1;
                examples_seen += batch.len();
                state.batch_in_epoch += 1;
                let epoch_end = state.batch_in_epoch == batches.len();
                if micro_in_update < accum && !epoch_end {
                    continue;
                }
                micro_in_update = 0;
                let mut grads = acc.take();
                let grad_norm = if args.max_grad_norm > 0.0 {
                    clip_grad_norm(optimizer.params(), &mut grads, args.max_grad_norm)?
                } else {
                    global_grad_norm(optimizer.params(), &grads)?
                };
                let lr = schedule.lr_at(state.global_step as u64);
                let finite = grad_norm.is_finite();
                if let Some(scaler) = state.grad_scaler.as_mut() {
                    // An fp16 overflow skips the update and lowers the scale.
                    if scaler.update(finite) {
                        optimizer.step(&grads, lr)?;
                    } else {
                        tracing::warn!(
                            "fp16 gradients overflowed at update {}: update skipped, loss scale now {}",
                            state.global_step + 1,
                            scaler.scale
                        );
                    }
                } else if finite {
                    optimizer.step(&grads, lr)?;
                } else {
                    let name = first_non_finite_grad(optimizer.params(), &grads)?;
                    bail!(
                        "the gradient of `{}` is not finite at update {} (epoch {}, batch {}): stopping; checkpoints already written are untouched",
                        name.unwrap_or_default(),
                        state.global_step + 1,
                        state.epoch,
                        state.batch_in_epoch
                    )
                }
                state.global_step += 1;
                state.steps_since_log += 1;
                steps_this_run += 1;
                progress.set_position(state.global_step as u64);
                let epoch_float =
                    state.epoch as f64 + state.batch_in_epoch as f64 / batches.len() as f64;

                if state.global_step.is_multiple_of(args.logging_steps.max(1))
                    || state.global_step == total
                {
                    let mean_loss = state.loss_since_log / state.steps_since_log.max(1) as f64;
                    let secs = started.elapsed().as_secs_f64();
                    log.append(&serde_json::json!({
                        "step": state.global_step, "epoch": epoch_float, "loss": mean_loss,
                        "learning_rate": lr, "grad_norm": grad_norm,
                    }))?;
                    progress.set_message(format!(
                        "loss {mean_loss:.4} lr {lr:.2e} {:.1} ex/s",
                        examples_seen as f64 / secs.max(1e-9)
                    ));
                    state.loss_since_log = 0.0;
                    state.steps_since_log = 0;
                }

                let finished = state.global_step >= total;
                if epoch_end {
                    state.epoch += 1;
                    state.batch_in_epoch = 0;
                }
                let eval_now = match args.eval_strategy {
                    EvalStrategy::No => false,
                    EvalStrategy::Steps => {
                        state.global_step.is_multiple_of(args.eval_steps.max(1)) || finished
                    }
                    EvalStrategy::Epoch => epoch_end || finished,
                };
                if eval_now {
                    last_eval = self.evaluate_and_checkpoint(
                        &mut state,
                        optimizer.as_ref(),
                        &log,
                        epoch_float,
                    )?;
                    if let Some(patience) = args.early_stopping_patience {
                        if state.evals_without_improvement >= patience {
                            tracing::info!(
                                "early stopping: {patience} evaluations without improvement"
                            );
                            stopped_early = true;
                            break 'epochs;
                        }
                    }
                } else if finished {
                    self.save_checkpoint(&mut state, optimizer.as_ref())?;
                }
                if finished {
                    break 'epochs;
                }
                if args
                    .interrupt_after_steps
                    .is_some_and(|k| steps_this_run >= k)
                {
                    if !eval_now {
                        self.save_checkpoint(&mut state, optimizer.as_ref())?;
                    }
                    interrupted = true;
                    break 'epochs;
                }
                if epoch_end {
                    continue 'epochs;
                }
            }
            // Only reached with a partially consumed epoch list (resume at its end).
            state.epoch += 1;
            state.batch_in_epoch = 0;
        }
        progress.finish_and_clear();
        self.model.mode.set_training(false);
        let train_seconds = started.elapsed().as_secs_f64();

        if !interrupted {
            state.done = true;
            self.finish(&state)?;
        }
        self.write_plot()?;
        Ok(TrainOutput {
            global_step: state.global_step,
            last_eval,
            best_metric: state.best_metric,
            stopped_early,
            interrupted,
            train_seconds,
        })
    }

    fn evaluate_and_checkpoint(
        &self,
        state: &mut TrainerState,
        optimizer: &dyn Optimizer,
        log: &MetricsLog,
        epoch: f64,
    ) -> Result<BTreeMap<String, f64>> {
        self.model.mode.set_training(false);
        let metrics = self.task.evaluate(self.model, self.args.max_eval_batches);
        self.model.mode.set_training(true);
        let metrics = metrics?;
        let mut record = serde_json::json!({"step": state.global_step, "epoch": epoch});
        let mut prefixed = BTreeMap::new();
        for (k, v) in &metrics {
            record[format!("eval_{k}")] = serde_json::json!(v);
            prefixed.insert(format!("eval_{k}"), *v);
        }
        log.append(&record)?;
        let key = &self.args.metric_for_best_model;
        let value = *metrics.get(key).with_context(|| {
            format!(
                "metric_for_best_model `{key}` is not among the evaluation metrics {:?}",
                metrics.keys().collect::<Vec<_>>()
            )
        })?;
        let improved = match state.best_metric {
            None => true,
            Some(best) if self.args.higher_is_better() => value > best,
            Some(best) => value < best,
        };
        let ckpt = self.save_checkpoint_with(state, optimizer, improved.then_some(value))?;
        if improved {
            state.best_metric = Some(value);
            state.best_checkpoint = Some(ckpt);
            state.evals_without_improvement = 0;
        } else {
            state.evals_without_improvement += 1;
        }
        // The state file must record the new best too.
        self.write_state(&self.checkpoint_dir(state.global_step), state)?;
        self.prune_checkpoints(state)?;
        self.write_plot()?;
        tracing::info!("step {}: {}", state.global_step, format_metrics(&metrics));
        Ok(prefixed)
    }

    fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.args.output_dir.join(format!("checkpoint-{step}"))
    }

    fn save_checkpoint(
        &self,
        state: &mut TrainerState,
        optimizer: &dyn Optimizer,
    ) -> Result<PathBuf> {
        let dir = self.save_checkpoint_with(state, optimizer, None)?;
        self.prune_checkpoints(state)?;
        Ok(dir)
    }

    /// Write model, tokenizer, optimizer and trainer state to `checkpoint-{step}`; the
    /// directory is filled under a temporary name and renamed into place when complete.
    fn save_checkpoint_with(
        &self,
        state: &mut TrainerState,
        optimizer: &dyn Optimizer,
        _best: Option<f64>,
    ) -> Result<PathBuf> {
        let dir = self.checkpoint_dir(state.global_step);
        let tmp = self
            .args
            .output_dir
            .join(format!(".checkpoint-{}.partial", state.global_step));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        self.model.save(&tmp)?;
        self.task.save_extras(&tmp)?;
        optimizer.state()?.save(&tmp)?;
        let (seed, stream, pos) = self.model.mode.rng_state();
        state.rng_seed = seed;
        state.rng_stream = stream;
        state.rng_word_pos = pos.to_string();
        self.write_state(&tmp, state)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot move checkpoint into {}", dir.display()))?;
        Ok(dir)
    }

    fn write_state(&self, dir: &Path, state: &TrainerState) -> Result<()> {
        crate::io::write_json(&dir.join(STATE_FILE), state)
    }

    /// Load weights, optimizer and trainer state from a checkpoint.
    fn restore(&self, ckpt: &Path, optimizer: &mut dyn Optimizer) -> Result<TrainerState> {
        let state: TrainerState = crate::io::read_json(&ckpt.join(STATE_FILE))?;
        let weights = ckpt.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights, &self.model.device)
            .with_context(|| format!("cannot read {}", weights.display()))?;
        for (name, var) in self.model.params.params() {
            let t = tensors.get(&name).with_context(|| {
                format!("checkpoint {} lacks tensor `{name}`", weights.display())
            })?;
            if t.shape() != var.shape() {
                bail!(
                    "tensor `{name}` in {} has shape {:?}, the model expects {:?}",
                    weights.display(),
                    t.dims(),
                    var.dims()
                )
            }
            var.set(t)?;
        }
        optimizer.load_state(OptimizerState::load(ckpt, &self.model.device)?)?;
        let pos: u128 = state.rng_word_pos.parse().unwrap_or(0);
        self.model
            .mode
            .set_rng_state(state.rng_seed, state.rng_stream, pos);
        Ok(state)
    }

    /// Keep the latest checkpoint and the best one; remove the others.
    fn prune_checkpoints(&self, state: &TrainerState) -> Result<()> {
        let latest = self.checkpoint_dir(state.global_step);
        for dir in list_checkpoints(&self.args.output_dir)? {
            if dir != latest && Some(&dir) != state.best_checkpoint.as_ref() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Put the final (or best) model at the top of the output directory.
    fn finish(&self, state: &TrainerState) -> Result<()> {
        let out = &self.args.output_dir;
        let source = match (&state.best_checkpoint, self.args.load_best_model_at_end) {
            (Some(best), true) if best.exists() => {
                // Load the best weights back so the in-memory model matches what is saved.
                let tensors = candle_core::safetensors::load(
                    best.join("model.safetensors"),
                    &self.model.device,
                )?;
                for (name, var) in self.model.params.params() {
                    if let Some(t) = tensors.get(&name) {
                        var.set(t)?;
                    }
                }
                best.clone()
            }
            _ => {
                let latest = self.checkpoint_dir(state.global_step);
                if !latest.exists() {
                    self.model.save(&latest)?;
                    self.task.save_extras(&latest)?;
                }
                latest
            }
        };
        for entry in std::fs::read_dir(&source)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == STATE_FILE || name.starts_with("optimizer") {
                continue;
            }
            let bytes = std::fs::read(entry.path())?;
            crate::io::write_bytes_atomically(&out.join(&*name), &bytes)?;
        }
        Ok(())
    }

    fn write_plot(&self) -> Result<()> {
        let metrics = self.args.output_dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&metrics).unwrap_or_default();
        let charts = hone_plot::plot_metrics_jsonl(&text);
        if charts.is_empty() {
            return Ok(());
        }
        let png = hone_plot::render_charts(&charts, 900, 320);
        crate::io::write_bytes_atomically(&self.args.output_dir.join("metrics.png"), &png)
    }
}

/// `checkpoint-N` directories in `dir`, oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(vec![]);
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(step) = name
            .to_string_lossy()
            .strip_prefix("checkpoint-")
            .and_then(|s| s.parse().ok())
        {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The newest checkpoint in `dir`.
pub fn latest_checkpoint(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(dir)?.pop())
}

fn format_metrics(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn progress_bar(show: bool, total: u64, position: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} updates (eta {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(position);
    bar
}
