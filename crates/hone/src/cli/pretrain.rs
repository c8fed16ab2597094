use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use hone::recipe::load_recipe;
use hone::tasks::pretrain::{PretrainRecipe, PretrainTask};
use hone::training::Trainer;

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// The recipe (TOML: objective, [model], [data], [training]).
    #[arg(long)]
    config: PathBuf,
    /// Override a recipe key, e.g. `--set max_steps=100`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[arg(long)]
    overwrite_output_dir: bool,
    /// Continue the run in the output directory from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let mut recipe: PretrainRecipe = load_recipe(&args.config, &args.overrides)?;
    recipe.training.overwrite_output_dir |= args.overwrite_output_dir;
    if let Some(d) = args.device {
        recipe.training.device = d;
    }
    let device = hone::device_from_str(&recipe.training.device)?;
    let (model, task) = PretrainTask::prepare(&recipe, &device)?;
    tracing::info!("{} parameters", model.num_parameters());
    Trainer::<PretrainTask>::prepare_output_dir(&recipe.training, args.resume)?;
    hone::io::write_bytes_atomically(
        &recipe.training.output_dir.join("recipe.toml"),
        toml::to_string_pretty(&recipe)?.as_bytes(),
    )?;
    let out = Trainer::new(recipe.training.clone(), &model, &task).train(args.resume)?;
    let summary = serde_json::json!({
        "output_dir": recipe.training.output_dir.display().to_string(),
        "global_step": out.global_step,
        "train_seconds": out.train_seconds,
        "best_metric": out.best_metric,
        "last_eval": out.last_eval,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
