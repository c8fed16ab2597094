use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;

use hone::recipe::apply_overrides;
use hone::tasks::classification::{ClassificationRecipe, ClassificationTask};
use hone::tasks::ner::{NerRecipe, NerTask};
use hone::training::{Trainer, TrainingArguments, TrainingTask};

/// The recipe `task` when the key is absent.
const DEFAULT_TASK: &str = "text-classification";

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The recipe (TOML with an optional top-level `task` = "text-classification" (default)
    /// or "token-classification", and [model], [data] and [training] sections).
    #[arg(long)]
    config: PathBuf,
    /// Override a recipe key: `--set learning_rate=3e-5` or `--set data.max_train_samples=2000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Replace a non-empty output directory.
    #[arg(long)]
    overwrite_output_dir: bool,
    /// Continue the run in the output directory from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or cuda:N (overrides the recipe).
    #[arg(long)]
    device: Option<String>,
}

/// The recipe file as a TOML table, and its `task` (peeked before the full recipe is
/// deserialised, since each task has its own sections).
fn read_table(path: &Path) -> Result<(toml::Table, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read recipe {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let task = match table.get("task") {
        None => DEFAULT_TASK.to_string(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => bail!("{}: `task` must be a string, not {other}", path.display()),
    };
    Ok((table, task))
}

fn deserialize<R: DeserializeOwned + Serialize + Default>(
    path: &Path,
    mut table: toml::Table,
    overrides: &[String],
) -> Result<R> {
    apply_overrides::<R>(&mut table, overrides)?;
    R::deserialize(toml::Value::Table(table)).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let (mut table, task) = read_table(&args.config)?;
    let device_of = |training: &mut TrainingArguments| -> Result<candle_core::Device> {
        training.overwrite_output_dir |= args.overwrite_output_dir;
        if let Some(d) = &args.device {
            training.device = d.clone();
        }
        hone::device_from_str(&training.device)
    };
    match task.as_str() {
        DEFAULT_TASK => {
            // The classification recipe has no `task` key of its own.
            table.remove("task");
            let mut recipe: ClassificationRecipe =
                deserialize(&args.config, table, &args.overrides)?;
            let device = device_of(&mut recipe.training)?;
            // Read and check all data before touching the output directory.
            let (model, task) = ClassificationTask::prepare(&recipe, &device)?;
            train(&recipe, &recipe.training, &model, &task, args.resume)
        }
        hone::tasks::ner::TASK_NAME => {
            let mut recipe: NerRecipe = deserialize(&args.config, table, &args.overrides)?;
            let device = device_of(&mut recipe.training)?;
            let (model, task) = NerTask::prepare(&recipe, &device)?;
            train(&recipe, &recipe.training, &model, &task, args.resume)
        }
        other => bail!(
            "{}: unknown task {other:?} (text-classification or token-classification)",
            args.config.display()
        ),
    }
}

/// Prepare the output directory, save the recipe, train and print a summary.
fn train<R: Serialize, T: TrainingTask>(
    recipe: &R,
    training: &TrainingArguments,
    model: &hone::model::LoadedModel,
    task: &T,
    resume: bool,
) -> Result<()> {
    Trainer::<T>::prepare_output_dir(training, resume)?;
    hone::io::write_bytes_atomically(
        &training.output_dir.join("recipe.toml"),
        toml::to_string_pretty(recipe)?.as_bytes(),
    )?;
    let trainer = Trainer::new(training.clone(), model, task);
    let out = trainer.train(resume)?;
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
