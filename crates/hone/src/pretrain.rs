use anyhow::Result;
use clap::Args;

use super::run_recipe::{train_and_report, RecipeRunArgs};
use hone_core::recipe::load_recipe;
use hone_core::tasks::pretrain::{CausalLmData, MaskedLmData, Objective, PretrainRecipe};

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
    match recipe.objective {
        Objective::Clm => {
            let (model, data) = CausalLmData::prepare(&recipe, &device)?;
            tracing::info!("{} parameters", model.num_parameters());
            train_and_report(&recipe, &recipe.training, &model, &data, args.resume)
        }
        Objective::Mlm | Objective::MlmNsp => {
            let (model, data) = MaskedLmData::prepare(&recipe, &device)?;
            tracing::info!("{} parameters", model.num_parameters());
            train_and_report(&recipe, &recipe.training, &model, &data, args.resume)
        }
    }
}
