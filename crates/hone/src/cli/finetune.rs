use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use hone::recipe::load_recipe;
use hone::tasks::classification::{ClassificationRecipe, ClassificationTask};
use hone::training::Trainer;

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// The recipe (TOML with [model], [data] and [training] sections).
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

pub fn run(args: FinetuneArgs) -> Result<()> {
    let mut recipe: ClassificationRecipe = load_recipe(&args.config, &args.overrides)?;
    recipe.training.overwrite_output_dir |= args.overwrite_output_dir;
    if let Some(d) = args.device {
        recipe.training.device = d;
    }
    let device = hone::device_from_str(&recipe.training.device)?;
    // Read and check all data before touching the output directory.
    let (model, task) = ClassificationTask::prepare(&recipe, &device)?;
    Trainer::<ClassificationTask>::prepare_output_dir(&recipe.training, args.resume)?;
    hone::io::write_bytes_atomically(
        &recipe.training.output_dir.join("recipe.toml"),
        toml::to_string_pretty(&recipe)?.as_bytes(),
    )?;
    let trainer = Trainer::new(recipe.training.clone(), &model, &task);
    let out = trainer.train(args.resume)?;
    let summary = serde_json::json!({
        "output_dir": recipe.training.output_dir.display().to_string(),
        "global_step": out.global_step,
        "train_seconds": out.train_seconds,
        "best_metric": out.best_metric,
        "stopped_early": out.stopped_early,
        "last_eval": out.last_eval,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
