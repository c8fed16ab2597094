use anyhow::{bail, Result};
use clap::Args;

use super::run_recipe::{train_and_report, RecipeRunArgs};
use std::path::Path;

use serde::Serialize;

use hone_core::model::{Model, NetKind};
use hone_core::tasks::classification::ClassificationData;
use hone_core::tasks::distill::{DistillArgs, Distillation, LogitsData, StudentInit};
use hone_core::tasks::ner::NerData;
use hone_core::tasks::translation::TranslationData;
use hone_core::tasks::FinetuneRecipe;
use hone_core::training::TrainingArguments;

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
                return distill_into(&recipe, &recipe.training, &distill, args.resume, |dir| {
                    let mut student = recipe.clone();
                    if let Some(dir) = dir {
                        student.model.model_name_or_path = dir.to_path_buf();
                    }
                    ClassificationData::prepare(&student, &device)
                });
            }
            // Read and check all data before touching the output directory.
            let (model, data) = ClassificationData::prepare(&recipe, &device)?;
            train_and_report(&recipe, &recipe.training, &model, &data, args.resume)
        }
        FinetuneRecipe::TokenClassification(mut recipe) => {
            let device = args.apply(&mut recipe.training)?;
            if let Some(distill) = recipe.distill.clone() {
                return distill_into(&recipe, &recipe.training, &distill, args.resume, |dir| {
                    let mut student = recipe.clone();
                    if let Some(dir) = dir {
                        student.model.model_name_or_path = dir.to_path_buf();
                    }
                    NerData::prepare(&student, &device)
                });
            }
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
    let has_distill = match &recipe {
        FinetuneRecipe::TextClassification(r) => r.distill.is_some(),
        FinetuneRecipe::TokenClassification(r) => r.distill.is_some(),
        FinetuneRecipe::Translation(_) => bail!(
            "{}: distillation is built for text and token classification recipes",
            args.run.config.display()
        ),
    };
    if !has_distill {
        bail!(
            "{}: hone distill needs a [distill] section (teacher, alpha, temperature, student_layers)",
            args.run.config.display()
        )
    }
    run(args)
}

/// Train the recipe's model (or a student made of the teacher's layers, whose directory
/// `prepare` gets) against the teacher's soft predictions and the gold labels.
fn distill_into<R, D>(
    recipe: &R,
    training: &TrainingArguments,
    distill: &DistillArgs,
    resume: bool,
    prepare: impl FnOnce(Option<&Path>) -> Result<(Model<D::Net>, D)>,
) -> Result<()>
where
    R: Serialize,
    D: LogitsData,
    D::Net: NetKind,
{
    distill.check()?;
    let init = StudentInit::make(distill)?;
    let (model, data) = prepare(init.as_ref().map(|i| i.dir.as_path()))?;
    drop(init);
    let data = Distillation::new(data, distill, &model.device)?;
    // The recipe as written (student_layers, not the temporary directory) is what is saved.
    train_and_report(recipe, training, &model, &data, resume)
}
