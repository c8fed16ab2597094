use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::run_recipe::{train_and_report, RecipeRunArgs};
use hone::recipe::apply_overrides;
use hone::tasks::classification::{ClassificationRecipe, ClassificationTask};
use hone::tasks::ner::{NerRecipe, NerTask};

/// The recipe `task` when the key is absent.
const DEFAULT_TASK: &str = "text-classification";

/// `hone finetune`: the recipe may carry a top-level `task` = "text-classification"
/// (default) or "token-classification" beside its [model], [data] and [training] sections.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    run: RecipeRunArgs,
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
    let args = args.run;
    let (mut table, task) = read_table(&args.config)?;
    match task.as_str() {
        DEFAULT_TASK => {
            // The classification recipe has no `task` key of its own.
            table.remove("task");
            let mut recipe: ClassificationRecipe =
                deserialize(&args.config, table, &args.overrides)?;
            let device = args.apply(&mut recipe.training)?;
            // Read and check all data before touching the output directory.
            let (model, task) = ClassificationTask::prepare(&recipe, &device)?;
            train_and_report(&recipe, &recipe.training, &model, &task, args.resume)
        }
        hone::tasks::ner::TASK_NAME => {
            let mut recipe: NerRecipe = deserialize(&args.config, table, &args.overrides)?;
            let device = args.apply(&mut recipe.training)?;
            let (model, task) = NerTask::prepare(&recipe, &device)?;
            train_and_report(&recipe, &recipe.training, &model, &task, args.resume)
        }
        other => bail!(
            "{}: unknown task {other:?} (text-classification or token-classification)",
            args.config.display()
        ),
    }
}
