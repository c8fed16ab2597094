use anyhow::{bail, Result};
use clap::Args;

use super::run_recipe::{train_and_report, RecipeRunArgs};
use hone_core::tasks::classification::{ClassificationData, ClassificationRecipe};
use hone_core::tasks::distill::{DistillArgs, Distillation, StudentInit};
use hone_core::tasks::ner::NerData;
use hone_core::tasks::translation::TranslationData;
use hone_core::tasks::FinetuneRecipe;

/// `hone finetune`: the recipe's top-level `task` = "text-classification" (default),
/// "token-classification" or "translation" picks its [model], [data] and [training]
/// sections.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub run: RecipeRunArgs,
}

pub fn run(args: FinetuneArgs) -> Result<()> {
    let args = args.run;
    // Every key and value is checked here, before any data is read.
    match FinetuneRecipe::load(&args.config, &args.overrides)? {
        FinetuneRecipe::TextClassification(mut recipe) => {
            let device = args.apply(&mut recipe.training)?;
            if let Some(distill) = recipe.distill.clone() {
                return distill_classifier(&recipe, &distill, &device, args.resume);
            }
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

/// `hone distill`: `hone finetune` on a recipe with a `[distill]` section (required here).
pub fn run_distill(args: FinetuneArgs) -> Result<()> {
    let recipe = FinetuneRecipe::load(&args.run.config, &args.run.overrides)?;
    match &recipe {
        FinetuneRecipe::TextClassification(r) if r.distill.is_some() => run(args),
        FinetuneRecipe::TextClassification(_) => bail!(
            "{}: hone distill needs a [distill] section (teacher, alpha, temperature, student_layers)",
            args.run.config.display()
        ),
        _ => bail!(
            "{}: distillation is built for text classification recipes so far",
            args.run.config.display()
        ),
    }
}

/// Train the recipe's model (or a student made of the teacher's layers) against the
/// teacher's soft predictions and the gold labels.
fn distill_classifier(
    recipe: &ClassificationRecipe,
    distill: &DistillArgs,
    device: &candle_core::Device,
    resume: bool,
) -> Result<()> {
    let init = StudentInit::make(distill)?;
    let mut student = recipe.clone();
    if let Some(init) = &init {
        student.model.model_name_or_path = init.dir.clone();
    }
    let (model, data) = ClassificationData::prepare(&student, device)?;
    drop(init);
    let data = Distillation::new(data, distill, device)?;
    // The recipe as written (student_layers, not the temporary directory) is what is saved.
    train_and_report(recipe, &recipe.training, &model, &data, resume)
}
