//! What `hone finetune` and `hone pretrain` share: the recipe-run flags, and the steps
//! around the trainer (output directory, saved recipe, summary).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use hone::model::LoadedModel;
use hone::training::{Trainer, TrainingArguments, TrainingTask};

/// Flags of every command that runs a training recipe.
#[derive(Args, Debug)]
pub struct RecipeRunArgs {
    /// The recipe (TOML; see examples/).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a recipe key: `--set learning_rate=3e-5` or `--set data.max_train_samples=2000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Replace a non-empty output directory.
    #[arg(long)]
    pub overwrite_output_dir: bool,
    /// Continue the run in the output directory from its latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda or cuda:N (overrides the recipe).
    #[arg(long)]
    pub device: Option<String>,
    /// fp32, bf16 or fp16 (overrides the recipe's `precision`).
    #[arg(long)]
    pub precision: Option<hone::training::Precision>,
}

impl RecipeRunArgs {
    /// Apply the command-line flags to the recipe's training arguments; the device to use.
    pub fn apply(&self, training: &mut TrainingArguments) -> Result<candle_core::Device> {
        training.overwrite_output_dir |= self.overwrite_output_dir;
        if let Some(d) = &self.device {
            training.device = d.clone();
        }
        if let Some(p) = self.precision {
            (training.precision, training.bf16, training.fp16) = (p, false, false);
        }
        hone::set_tf32(training.tf32);
        hone::device_from_str(&training.device)
    }
}

/// Prepare the output directory, save the recipe, train and print a summary. Call it only
/// after the data has been read and checked, so bad input never touches the output.
pub fn train_and_report<R: Serialize, T: TrainingTask>(
    recipe: &R,
    training: &TrainingArguments,
    model: &LoadedModel,
    task: &T,
    resume: bool,
) -> Result<()> {
    Trainer::<T>::prepare_output_dir(training, resume)?;
    hone::io::write_bytes_atomically(
        &training.output_dir.join("recipe.toml"),
        toml::to_string_pretty(recipe)?.as_bytes(),
    )?;
    let out = Trainer::new(training.clone(), model, task).train(resume)?;
    let summary = serde_json::json!({
        "output_dir": training.output_dir.display().to_string(),
        "global_step": out.global_step,
        "train_seconds": out.train_seconds,
        "best_metric": out.best_metric,
        "stopped_early": out.stopped_early,
        "last_eval": out.last_eval,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
