//! Tasks: the problems a recipe solves (Hugging Face's pipeline names: text
//! classification, token classification, pretraining). For each, its data turned into
//! batches, its loss, its evaluation report and its predictions: a [`TrainingData`] the
//! trainer runs. The CLI calls these; they call the model.
//!
//! [`TrainingData`]: crate::training::TrainingData

pub mod classification;
pub mod ner;
pub mod pretrain;

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::model::{Head, Model, ModelDir, NetKind};
use crate::recipe::{load_recipe, parse_recipe};
use crate::tokenization::TextTokenizer;
use classification::ClassificationRecipe;
use ner::NerRecipe;

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
    /// one with one pads with it: its head may rely on it).
    pub fn load<N: NetKind + ?Sized>(
        &self,
        head: Head,
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
        if self.from_scratch {
            Model::from_scratch(model_dir.config, head, device, seed)
        } else {
            Model::load_for(&model_dir, head, device, seed)
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
}

/// A `hone finetune` recipe: one type per task, picked by its `task` key.
#[derive(Debug, Clone)]
pub enum FinetuneRecipe {
    TextClassification(ClassificationRecipe),
    TokenClassification(NerRecipe),
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
        })
    }
}
