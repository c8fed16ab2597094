//! `hone prune MODEL_DIR --heads 0.3 --ffn 0.2 --output DIR --data FILE`: structured
//! pruning of a fine-tuned classifier. Heads and feed-forward neurons are ranked by their
//! importance on a calibration set (gradient x activation, `tasks::prune`), the least
//! important removed, and a smaller Hugging Face directory written (Transformers loads it:
//! `pruned_heads` in its config). `--recover RECIPE` then fine-tunes the pruned model
//! briefly with a recipe, as `hone finetune` would.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::finetune::FinetuneArgs;
use crate::run_recipe::RecipeRunArgs;
use hone_core::model::surgery::prune_dir;
use hone_core::tasks::classification::{ClassificationData, ClassificationRecipe};
use hone_core::tasks::prune::{importance, plan};

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// A fine-tuned classifier's directory.
    pub model: PathBuf,
    /// Fraction of all attention heads to remove.
    #[arg(long, default_value_t = 0.0)]
    pub heads: f64,
    /// Fraction of each layer's feed-forward neurons to remove.
    #[arg(long, default_value_t = 0.0)]
    pub ffn: f64,
    /// Where the pruned model goes (a new directory).
    #[arg(long)]
    pub output: PathBuf,
    /// The calibration set: a labelled table (TSV, CSV or JSONL), e.g. the training file.
    #[arg(long)]
    pub data: PathBuf,
    /// Text column(s) of the table (default: from its header).
    #[arg(long = "text-column")]
    pub text_columns: Vec<String>,
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Calibration examples (the first N rows).
    #[arg(long, default_value_t = 512)]
    pub samples: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub max_seq_length: usize,
    /// Then recover: fine-tune the pruned model with this recipe (its model replaced by the
    /// pruned one), into `--recover-output`.
    #[arg(long, value_name = "RECIPE")]
    pub recover: Option<PathBuf>,
    /// Overrides of the recovery recipe (`--recover-set num_train_epochs=1`).
    #[arg(long = "recover-set", value_name = "KEY=VALUE")]
    pub recover_overrides: Vec<String>,
    /// Where the recovered model goes (default: the output directory's name + `-recovered`).
    #[arg(long)]
    pub recover_output: Option<PathBuf>,
}

pub fn run(args: PruneArgs) -> Result<()> {
    super::ensure_new_output(&args.output, "hone prune")?;
    let mut recipe = ClassificationRecipe::default();
    recipe.model.model_name_or_path = args.model.clone();
    recipe.data.train_file = args.data.clone();
    recipe.data.validation_file = Some(args.data.clone());
    recipe.data.text_column_names = args.text_columns.clone();
    recipe.data.label_column_name = args.label_column.clone();
    recipe.data.max_train_samples = Some(args.samples);
    recipe.data.max_eval_samples = Some(1);
    recipe.data.max_seq_length = args.max_seq_length;
    let (model, data) = ClassificationData::prepare(&recipe, &candle_core::Device::Cpu)
        .with_context(|| format!("calibration set {}", args.data.display()))?;
    let scores = importance(&model, &data, args.batch_size)?;
    let plan = plan(&scores, args.heads, args.ffn)?;
    let removed: usize = plan.heads.values().map(Vec::len).sum();
    let total: usize = scores.heads.iter().map(Vec::len).sum();
    tracing::info!(
        "removing {removed} of {total} heads {:?}; feed-forward {} -> {} neurons a layer",
        plan.heads,
        scores.neurons.first().map_or(0, Vec::len),
        plan.neurons
            .values()
            .next()
            .map_or(scores.neurons.first().map_or(0, Vec::len), Vec::len)
    );
    prune_dir(&args.model, &plan, &args.output)?;
    // What was measured and removed, beside the model.
    hone_core::io::write_json(
        &args.output.join("pruning.json"),
        &serde_json::json!({
            "source": args.model.display().to_string(),
            "calibration": args.data.display().to_string(),
            "calibration_examples": data_len(&data),
            "head_importance": scores.heads,
            "removed_heads": plan.heads,
            "ffn_kept": plan.neurons.values().next().map(Vec::len),
        }),
    )?;
    println!(
        "{}: {removed} of {total} heads removed, written to {}",
        args.model.display(),
        args.output.display()
    );
    let Some(recipe) = args.recover else {
        return Ok(());
    };
    // The short recovery fine-tune: `hone finetune` on the pruned model.
    let out = args.recover_output.unwrap_or_else(|| {
        let mut name = args.output.file_name().unwrap_or_default().to_os_string();
        name.push("-recovered");
        args.output.with_file_name(name)
    });
    let mut overrides = args.recover_overrides;
    overrides.push(format!(
        "model.model_name_or_path={:?}",
        args.output.display().to_string()
    ));
    overrides.push(format!("output_dir={:?}", out.display().to_string()));
    super::finetune::run(FinetuneArgs {
        run: RecipeRunArgs {
            config: recipe,
            overrides,
            overwrite_output_dir: false,
            resume: false,
            device: None,
            precision: None,
        },
    })
}

fn data_len(data: &ClassificationData) -> usize {
    use hone_core::training::TrainingData;
    data.num_train_examples()
}
