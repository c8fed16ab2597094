use anyhow::Result;
use clap::Args;

use super::run_recipe::{train_and_report, RecipeRunArgs};
use hone_core::tasks::classification::ClassificationData;
use hone_core::tasks::ner::NerData;
use hone_core::tasks::translation::TranslationData;
use hone_core::tasks::FinetuneRecipe;

/// `hone finetune`: the recipe's top-level `task` = "text-classification" (default),
/// "token-classification" or "translation" picks its [model], [data] and [training]
/// sections.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    run: RecipeRunArgs,
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let args = args.run;
    // Every key and value is checked here, before any data is read.
    match FinetuneRecipe::load(&args.config, &args.overrides)? {
        FinetuneRecipe::TextClassification(mut recipe) => {
            let device = args.apply(&mut recipe.training)?;
            // Read and check all data before touching the output directory.
            let (model, data) = ClassificationData::prepare(&recipe, &device)?;
            train_and_report(&recipe, &recipe.training, &model, &data, args.resume)
        }
        FinetuneRecipe::TokenClassification(mut recipe) => {
            let device = args.apply(&mut recipe.training)?;
            let (model, data) = NerData::prepare(&recipe, &device)?;
            train_and_report(&recipe, &recipe.training, &model, &data, args.resume)
        }
        FinetuneRecipe::Translation(mut recipe) => {
            let device = args.apply(&mut recipe.training)?;
            let (model, data) = TranslationData::prepare(&recipe, &device)?;
            train_and_report(&recipe, &recipe.training, &model, &data, args.resume)
        }
    }
}
