use anyhow::Result;
use clap::Args;

use super::run_recipe::{train_and_report, RecipeRunArgs};
use hone::recipe::load_recipe;
use hone::tasks::pretrain::{PretrainRecipe, PretrainTask};

/// `hone pretrain`: a recipe with a top-level `objective` ("clm", "mlm" or "mlm+nsp") and
/// [model], [data] and [training] sections.
#[derive(Args, Debug)]
pub struct PretrainArgs {
    #[command(flatten)]
    run: RecipeRunArgs,
}

pub fn run(args: PretrainArgs) -> Result<()> {
    let args = args.run;
    let mut recipe: PretrainRecipe = load_recipe(&args.config, &args.overrides)?;
    let device = args.apply(&mut recipe.training)?;
    let (model, task) = PretrainTask::prepare(&recipe, &device)?;
    tracing::info!("{} parameters", model.num_parameters());
    train_and_report(&recipe, &recipe.training, &model, &task, args.resume)
}
