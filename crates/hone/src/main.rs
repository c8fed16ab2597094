//! `hone`: the command line over the hone library (crate `hone_core`). Each subcommand is
//! a thin wrapper that parses its arguments and calls the library's pipelines; what only a
//! terminal needs (logging, progress bars, the metrics plot) lives here.

mod bench;
mod callbacks;
mod embed;
mod eval;
mod export;
mod finetune;
mod generate;
mod info;
mod launch;
mod merge;
mod predict;
mod pretrain;
mod prune;
mod quantize;
mod run_recipe;
mod score;
mod serve;
mod sweep;
mod tokenizer;
mod translate;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hone_core::runtime::Runtime;

/// hone: build, pretrain, fine-tune, evaluate and use Transformer models.
#[derive(Parser, Debug)]
#[command(name = "hone", version, about)]
struct Cli {
    /// Log level filter (error, warn, info, debug, trace), or set RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    /// CPU threads for the kernels and matrix products (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
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
    /// Score predictions against gold labels or references.
    Score(score::ScoreArgs),
    /// Time a training step or a forward pass on random token ids.
    Bench(bench::BenchArgs),
    /// Pretrain a model from scratch or continue pretraining (MLM, MLM+NSP, causal LM).
    Pretrain(pretrain::PretrainArgs),
    /// Generate text with a causal language model.
    Generate(generate::GenerateArgs),
    /// Translate sentences with a sequence-to-sequence model (greedy or beam search).
    Translate(translate::TranslateArgs),
    /// Fold a LoRA adapter into its base: a plain Hugging Face model directory.
    Merge(merge::MergeArgs),
    /// Export a model to another runtime's format (ONNX).
    Export(export::ExportArgs),
    /// Quantize a model's linear layers to int8 (dynamic quantization).
    Quantize(quantize::QuantizeArgs),
    /// Serve models over HTTP (Text Embeddings Inference / Text Generation Inference routes).
    Serve(serve::ServeArgs),
    /// Train or inspect tokenizers.
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Start a data-parallel run on this machine: `hone launch --nproc 2 -- finetune --config ...`
    /// (CPU ranks through mpirun; GPU ranks with torchrun's variables and NCCL).
    Launch(launch::LaunchArgs),
    /// Remove the least important attention heads and feed-forward neurons of a classifier.
    Prune(prune::PruneArgs),
    /// Distil a fine-tuned teacher into a student (a recipe with a [distill] section).
    Distill(finetune::FinetuneArgs),
    /// Search hyper-parameters over a recipe: grid, random, or ASHA (`--config sweep.toml`).
    Sweep(sweep::SweepArgs),
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line. candle appends a backtrace to its errors when
/// `RUST_BACKTRACE` is set: a user's mistake (a text longer than the model, say) gets the
/// message, not the dump.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string();
        // An error that prints its source already (`I/O error: No space left on device`)
        // is not followed by that source again.
        if parts.last().is_some_and(|p| p.ends_with(&first)) {
            continue;
        }
        parts.push(first);
    }
    parts.join(": ")
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log);
    Runtime {
        threads: cli
            .threads
            .or_else(hone_core::distributed::threads_per_local_rank),
    }
    .init()
    .context("runtime set-up")?;
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
        Command::Translate(a) => translate::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Export(a) => export::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Launch(a) => launch::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Distill(a) => finetune::run_distill(a),
        Command::Prune(a) => prune::run(a),
    }
}

/// Refuse to write a new model directory over a non-empty one (`what` writes it).
fn ensure_new_output(dir: &std::path::Path, what: &str) -> anyhow::Result<()> {
    let non_empty = dir
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if non_empty {
        anyhow::bail!(
            "{} is not empty: {what} writes a new directory",
            dir.display()
        )
    }
    Ok(())
}

fn init_logging(level: &str) {
    // Data-parallel ranks other than 0 report only warnings and errors: rank 0 logs the run.
    // A malformed launch environment is reported when the run reads it; log as rank 0.
    let rank = hone_core::distributed::Launch::from_env().map_or(0, |l| l.rank());
    let level = if rank == 0 { level } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The two kinds of classifier `eval` and `predict` take.
enum ClassifierKind {
    Sequence,
    Token,
}

/// Which classifier the model directory holds (from its config alone), or an error naming
/// what it holds instead.
fn classifier_kind(
    model_dir: &hone_core::model::ModelDir,
    command: &str,
) -> anyhow::Result<ClassifierKind> {
    use hone_core::model::{Head, HeadKind};
    match Head::from_config(&model_dir.config).kind() {
        HeadKind::SequenceClassification => Ok(ClassifierKind::Sequence),
        HeadKind::TokenClassification => Ok(ClassifierKind::Token),
        _ => anyhow::bail!(
            "{} holds a {}; {command} takes sequence or token classifiers",
            model_dir.path.display(),
            model_dir
                .config
                .architecture
                .as_deref()
                .unwrap_or("model without a head")
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::one_line;

    /// An error that prints its source in its own message, as safetensors' I/O error does.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "I/O error: {}", self.0)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_source_already_printed_is_not_repeated() {
        let io = std::io::Error::other("No space left on device");
        let e = anyhow::Error::new(Wrapping(io)).context("cannot write x/model.safetensors");
        assert_eq!(
            one_line(&e),
            "cannot write x/model.safetensors: I/O error: No space left on device"
        );
        let plain = anyhow::anyhow!("bad\nsecond line").context("outer");
        assert_eq!(one_line(&plain), "outer: bad");
    }
}
