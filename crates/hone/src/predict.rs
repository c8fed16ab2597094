use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use hone_core::inference::classify::TextClassificationPipeline;
use hone_core::inference::ner::TokenClassificationPipeline;
use hone_core::model::ModelDir;
use hone_core::runtime::DeviceSpec;

use super::ClassifierKind;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A fine-tuned model directory.
    model_dir: PathBuf,
    /// For an adapter directory: the base model (instead of the one its
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Input: a .tsv/.csv/.jsonl table (text columns by name) or plain text, one input per
    /// line; `-` (the default) reads plain text from stdin.
    #[arg(long, default_value = "-")]
    input: String,
    /// Text column(s) of a table input (one, or two for pairs).
    #[arg(long = "text-column")]
    text_columns: Vec<String>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// What the input is (token classification reads either).
    #[arg(long, value_enum, default_value = "text")]
    format: InputFormat,
    /// Token classification: pieces shared by consecutive windows of a long input.
    #[arg(long, default_value_t = 32)]
    stride: usize,
}

/// The `--format` of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputFormat {
    /// Raw text, one input per line (or a table); token classifiers write JSON lines of
    /// entities.
    Text,
    /// One token per line, blank lines between sentences; the lines come back with a
    /// predicted tag column appended (token classifiers only).
    Conll,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let device = args.device.open()?;
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    match super::classifier_kind(&dir, "predict")? {
        ClassifierKind::Sequence => run_classification(&args, &dir, &device),
        ClassifierKind::Token => run_ner(&args, &dir, &device),
    }
}

fn run_classification(
    args: &PredictArgs,
    dir: &ModelDir,
    device: &candle_core::Device,
) -> Result<()> {
    if args.format != InputFormat::Text {
        bail!("--format conll is for token-classification models")
    }
    let classifier = TextClassificationPipeline::open(dir, device, args.max_length)?;
    let inputs = super::read_inputs(&args.input, &args.text_columns)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for p in classifier.predict(&inputs, args.batch_size)? {
        writeln!(out, "{}", serde_json::to_string(&p)?)?;
    }
    Ok(())
}

/// One line of a CoNLL input: a token line (its fields) or a separator kept as it is.
enum ConllLine {
    Token(String),
    Other(String),
}

/// Read CoNLL-style input leniently (any number of columns, token first; the same number
/// on every token line): sentences of tokens, and the lines to write back.
fn read_conll_input(input: &str) -> Result<(Vec<ConllLine>, Vec<Vec<String>>)> {
    let lines = super::read_lines_or_stdin(input)?;
    let mut out = Vec::with_capacity(lines.len());
    let mut sentences = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut columns: Option<(usize, usize)> = None;
    for (i, line) in lines.into_iter().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "-DOCSTART-" {
            if !current.is_empty() {
                sentences.push(std::mem::take(&mut current));
            }
            out.push(ConllLine::Other(line));
            continue;
        }
        match columns {
            None => columns = Some((fields.len(), i + 1)),
            Some((n, first)) if n != fields.len() => bail!(
                "{input}:{}: expected {n} columns (as on line {first}), found {}",
                i + 1,
                fields.len()
            ),
            Some(_) => {}
        }
        current.push(fields[0].to_string());
        out.push(ConllLine::Token(fields.join(" ")));
    }
    if !current.is_empty() {
        sentences.push(current);
    }
    Ok((out, sentences))
}

fn run_ner(args: &PredictArgs, dir: &ModelDir, device: &candle_core::Device) -> Result<()> {
    // Loaded once the input has been read and checked.
    let load = || TokenClassificationPipeline::open(dir, device, args.max_length, args.stride);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        InputFormat::Text => {
            let inputs = super::read_inputs(&args.input, &args.text_columns)?;
            if inputs.iter().any(|(_, pair)| pair.is_some()) {
                bail!("token classification takes one text per input, not pairs")
            }
            let classifier = load()?;
            let texts: Vec<String> = inputs.into_iter().map(|(t, _)| t).collect();
            for p in classifier.predict_entities(&texts, args.batch_size)? {
                writeln!(out, "{}", serde_json::to_string(&p)?)?;
            }
        }
        InputFormat::Conll => {
            let (lines, sentences) = read_conll_input(&args.input)?;
            let classifier = load()?;
            let tags = classifier.predict_tags(&sentences, args.batch_size)?;
            let mut next = tags.iter().flatten();
            for line in &lines {
                match line {
                    ConllLine::Token(l) => {
                        let tag = next.next().expect("one tag per token");
                        writeln!(out, "{l} {tag}")?;
                    }
                    ConllLine::Other(l) => writeln!(out, "{l}")?,
                }
            }
        }
    }
    Ok(())
}
