//! Tasks: the problems a recipe solves (Hugging Face's pipeline names: text
//! classification, token classification, pretraining). For each, its data turned into
//! batches, its loss, its evaluation report and its predictions: a [`TrainingData`] the
//! trainer runs. The CLI calls these; they call the model.
//!
//! [`TrainingData`]: crate::training::TrainingData

pub mod classification;
pub mod distill;
pub mod ner;
pub mod pretrain;
pub mod prune;
pub mod translation;

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::model::adapter::{LoraBias, LoraConfig, PeftType, TargetModules};
use crate::model::{Architecture, Head, Model, ModelDir, NetKind};
use crate::recipe::{load_recipe, parse_recipe};
use crate::tokenization::TextTokenizer;
use crate::training::TrainingArguments;
use classification::ClassificationRecipe;
use ner::NerRecipe;
use translation::TranslationRecipe;

/// The `[model]` section of a fine-tuning recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelArgs {
    /// A Hugging Face model directory (config.json, model.safetensors, tokenizer.json).
    pub model_name_or_path: PathBuf,
    /// Dropout before the classifier (None: the architecture's rule).
    pub classifier_dropout: Option<f64>,
    /// Use only the architecture and tokenizer of `model_name_or_path`; initialise every
    /// weight afresh (the baseline that shows what pretraining buys).
    pub from_scratch: bool,
}

impl Default for ModelArgs {
    fn default() -> Self {
        Self {
            model_name_or_path: PathBuf::from("models/all-MiniLM-L6-v2"),
            classifier_dropout: None,
            from_scratch: false,
        }
    }
}

/// A recipe's `[peft]` section: train a LoRA adapter instead of the whole model, with
/// PEFT's `LoraConfig` names and defaults (r 8, lora_alpha 8, no dropout, the
/// architecture's usual targets: `query`/`value` for BERT, `c_attn` for GPT-2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeftArgs {
    pub peft_type: PeftType,
    pub r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// Module names (`query`, `c_attn`, ...) or "all-linear"; None: the architecture's.
    pub target_modules: Option<TargetModules>,
    /// Trained and saved whole beside the adapter; None: the task head (PEFT's rule).
    pub modules_to_save: Option<Vec<String>>,
    pub bias: LoraBias,
}

impl Default for PeftArgs {
    fn default() -> Self {
        Self {
            peft_type: PeftType::Lora,
            r: 8,
            lora_alpha: 8.0,
            lora_dropout: 0.0,
            target_modules: None,
            modules_to_save: None,
            bias: LoraBias::None,
        }
    }
}

impl PeftArgs {
    /// The adapter's settings on `arch`, trained on the base model at `base`.
    pub fn lora_config(&self, arch: &dyn Architecture, base: &Path) -> LoraConfig {
        LoraConfig {
            peft_type: self.peft_type,
            r: self.r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            target_modules: self
                .target_modules
                .clone()
                .unwrap_or_else(|| TargetModules::Names(arch.default_lora_targets())),
            modules_to_save: self.modules_to_save.clone(),
            bias: self.bias,
            fan_in_fan_out: false,
            base_model_name_or_path: Some(base.display().to_string()),
            task_type: None,
            use_rslora: false,
            use_dora: false,
        }
    }
}

impl ModelArgs {
    /// The tokenizer of `model_name_or_path` (a missing directory is named as such).
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        let dir = ModelDir::open(&self.model_name_or_path)?;
        TextTokenizer::from_dir(&dir.path)
    }

    /// The model a fine-tuning recipe starts from: `model_name_or_path` with `head` on it
    /// (head weights the checkpoint lacks drawn from `seed`), or with `from_scratch` the same
    /// architecture freshly initialised; with the recipe's classifier dropout, and padding
    /// agreed between model and tokenizer (a model without a pad id takes the tokenizer's;
    /// one with one pads with it: its head may rely on it). With `peft`, a new LoRA
    /// adapter on the frozen checkpoint.
    pub fn load<N: NetKind + ?Sized>(
        &self,
        head: Head,
        peft: Option<&PeftArgs>,
        tokenizer: &mut TextTokenizer,
        device: &Device,
        seed: u64,
    ) -> Result<Model<N>> {
        let mut model_dir = ModelDir::open(&self.model_name_or_path)?;
        let arch = &mut model_dir.config.arch;
        if let Some(p) = self.classifier_dropout {
            arch.set_classifier_dropout(p)?;
        }
        match arch.pad_token_id() {
            Some(pad) => tokenizer.set_pad_id(pad),
            None => arch.set_pad_token_id(tokenizer.pad_id()),
        }
        match (peft, self.from_scratch) {
            (Some(_), true) => anyhow::bail!(
                "[peft] with model.from_scratch would train adapters on random weights: use one or the other"
            ),
            (Some(peft), false) => {
                let lora = peft.lora_config(&*model_dir.config.arch, &self.model_name_or_path);
                Model::load_with_new_adapter(&model_dir, head, lora, device, seed)
            }
            (None, true) => Model::from_scratch(model_dir.config, head, device, seed),
            (None, false) => Model::load_for(&model_dir, head, device, seed),
        }
    }
}

/// The fine-tuning tasks, by the recipe's top-level `task` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinetuneTask {
    #[default]
    TextClassification,
    TokenClassification,
    Translation,
}

/// A `hone finetune` recipe: one type per task, picked by its `task` key.
#[derive(Debug, Clone)]
pub enum FinetuneRecipe {
    TextClassification(ClassificationRecipe),
    TokenClassification(NerRecipe),
    Translation(TranslationRecipe),
}

impl FinetuneRecipe {
    /// Read a recipe: its `task` first (a misspelt one names its line and the tasks), then
    /// the whole recipe of that task.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        #[derive(Default, Serialize, Deserialize)]
        struct TaskOnly {
            #[serde(default)]
            task: FinetuneTask,
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read recipe {}: {e}", path.display()))?;
        let TaskOnly { task } = parse_recipe(&text, path, &[])?;
        Ok(match task {
            FinetuneTask::TextClassification => {
                FinetuneRecipe::TextClassification(load_recipe(path, overrides)?)
            }
            FinetuneTask::TokenClassification => {
                FinetuneRecipe::TokenClassification(load_recipe(path, overrides)?)
            }
            FinetuneTask::Translation => FinetuneRecipe::Translation(load_recipe(path, overrides)?),
        })
    }

    /// The recipe's training arguments, whatever its task.
    pub fn training(&self) -> &TrainingArguments {
        match self {
            FinetuneRecipe::TextClassification(r) => &r.training,
            FinetuneRecipe::TokenClassification(r) => &r.training,
            FinetuneRecipe::Translation(r) => &r.training,
        }
    }
}
