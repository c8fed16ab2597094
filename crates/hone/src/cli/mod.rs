//! `hone` subcommands: thin wrappers that parse arguments and call the pipelines.

mod bench;
mod embed;
mod eval;
mod finetune;
mod generate;
mod info;
mod predict;
mod pretrain;
mod run_recipe;
mod score;
mod tokenizer;

use clap::{Parser, Subcommand};

/// hone: build, pretrain, fine-tune, evaluate and serve Transformer models.
#[derive(Parser, Debug)]
#[command(name = "hone", version, about)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace), or set RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Describe a model directory: architecture, sizes, parameter count.
    Info(info::InfoArgs),
    /// Embed texts (arguments, or one per line on stdin) as JSON lines.
    Embed(embed::EmbedArgs),
    /// Fine-tune a pretrained checkpoint on a labelled file (a TOML recipe).
    Finetune(finetune::FinetuneArgs),
    /// Evaluate a fine-tuned model on a labelled file.
    Eval(eval::EvalArgs),
    /// Predict labels for texts (JSON lines out).
    Predict(predict::PredictArgs),
    /// Score predictions against gold labels.
    Score(score::ScoreArgs),
    /// Time a training step or a forward pass on random token ids.
    Bench(bench::BenchArgs),
    /// Pretrain a model from scratch or continue pretraining (MLM, MLM+NSP, causal LM).
    Pretrain(pretrain::PretrainArgs),
    /// Generate text with a causal language model.
    Generate(generate::GenerateArgs),
    /// Train or inspect tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
}

/// Parse the command line and run it.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match cli.command {
        Command::Info(a) => info::run(a),
        Command::Embed(a) => embed::run(a),
        Command::Finetune(a) => finetune::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Score(a) => score::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Pretrain(a) => pretrain::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Inputs for prediction: a table file (text columns by name) or plain text lines
/// (a file, or `-` for stdin).
fn read_inputs(
    input: &str,
    text_columns: &[String],
) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let path = std::path::Path::new(input);
    if input != "-" && hone_data::TableFormat::from_path(path).is_some() {
        let spec = hone_data::TableSpec::default().text_columns(text_columns.to_vec());
        let table = hone_data::read_table(path, &spec)?;
        return Ok(table
            .examples
            .into_iter()
            .map(|e| (e.texts[0].clone(), e.texts.get(1).cloned()))
            .collect());
    }
    let lines = read_lines_or_stdin(input)?;
    Ok(lines
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| (l, None))
        .collect())
}

/// Every line of a file, or of stdin for `-`; invalid UTF-8 names the line.
fn read_lines_or_stdin(input: &str) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    use std::io::BufRead;
    if input != "-" {
        return Ok(hone_data::read_lines(input)?);
    }
    std::io::stdin()
        .lock()
        .lines()
        .enumerate()
        .map(|(i, l)| l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1)))
        .collect()
}

/// Whether the model directory holds a token-classification (NER) model, which `eval` and
/// `predict` handle apart from sequence classifiers.
fn is_token_classifier(dir: &std::path::Path) -> anyhow::Result<bool> {
    use hone::model::loading::{ModelDir, Task};
    let dir = ModelDir::open(dir)?;
    Ok(matches!(
        Task::from_config(&dir.config)?,
        Task::TokenClassification { .. }
    ))
}
