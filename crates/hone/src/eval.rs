use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use hone_data::{read_table, TableSpec};
use hone_metrics::seqeval::Scheme;
use hone_metrics::{ClassificationReport, ZeroDivision};

use super::score::SeqevalMode;
use super::ClassifierKind;
use hone_core::inference::classify::TextClassificationPipeline;
use hone_core::inference::ner::TokenClassificationPipeline;
use hone_core::model::{Head, HeadKind, Model, ModelDir, Seq2SeqLm};
use hone_core::runtime::DeviceSpec;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A fine-tuned model directory.
    model_dir: PathBuf,
    /// For an adapter directory: the base model (instead of the one its
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// A labelled file (.tsv/.csv/.jsonl); for a translation model, the source sentences
    /// (one per line, with --target), or a TSV/JSONL of (source, target); for a causal LM,
    /// a text file (perplexity over blocks of --max-length tokens).
    #[arg(long)]
    data: PathBuf,
    /// Translation: the reference translations, one per line, aligned with --data.
    #[arg(long)]
    target: Option<PathBuf>,
    /// Translation: beam width (1: greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// Translation: most tokens generated per sentence.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long = "text-column")]
    text_columns: Vec<String>,
    #[arg(long, default_value = "label")]
    label_column: String,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Token classification: pieces shared by consecutive windows of a long sentence.
    #[arg(long, default_value_t = 32)]
    stride: usize,
    /// Token classification: tag scheme of the data (strict mode decodes with it).
    #[arg(long, value_enum, default_value = "iob2", ignore_case = true)]
    scheme: Scheme,
    /// Token classification: lenient (conlleval-like) or strict entities.
    #[arg(long, value_enum, default_value = "default")]
    mode: SeqevalMode,
    /// Token classification: 0-based column of the gold tags (default: the last).
    #[arg(long)]
    tag_column: Option<usize>,
    /// Digits in the text report (token classification).
    #[arg(long, default_value_t = 4)]
    digits: usize,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let device = args.device.open()?;
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    match Head::from_config(&dir.config).kind() {
        HeadKind::Seq2SeqLm => return run_translation(&args, &dir, &device),
        HeadKind::CausalLm => return run_perplexity(&args, &dir, &device),
        _ => {}
    }
    match super::classifier_kind(&dir, "eval")? {
        ClassifierKind::Sequence => run_classification(&args, &dir, &device),
        ClassifierKind::Token => run_ner(&args, &dir, &device),
    }
}

/// Loss and perplexity of a causal LM on a text file, over packed blocks of
/// `--max-length` tokens (each block scored on its own, as in training).
fn run_perplexity(args: &EvalArgs, dir: &ModelDir, device: &candle_core::Device) -> Result<()> {
    use hone_core::model::CausalLm;
    use hone_core::tasks::pretrain::CausalLmData;
    use hone_core::training::TrainingData;
    let model = Model::open(dir, device)?
        .frozen()
        .into_kind::<dyn CausalLm>()?;
    let block = args.max_length.min(model.net.config().max_positions());
    let tokenizer = dir.tokenizer()?;
    let data = CausalLmData::for_evaluation(
        tokenizer,
        std::slice::from_ref(&args.data),
        block,
        args.batch_size,
        device,
    )?;
    let metrics = data.evaluate(&*model.net, None)?;
    print_metrics(args.json, &metrics, |m| {
        format!(
            "{}: loss {:.4}  perplexity {:.2} (blocks of {block} tokens)",
            args.data.display(),
            m["loss"],
            m["perplexity"]
        )
    })
}

/// The metrics as one JSON object, or as the line `text` makes of them.
fn print_metrics(
    json: bool,
    metrics: &hone_core::training::Metrics,
    text: impl FnOnce(&hone_core::training::Metrics) -> String,
) -> Result<()> {
    match json {
        true => println!("{}", serde_json::to_string(metrics)?),
        false => println!("{}", text(metrics)),
    }
    Ok(())
}

/// Loss, perplexity, BLEU (sacrebleu 13a) and chrF2 of a translation model on parallel text.
fn run_translation(args: &EvalArgs, dir: &ModelDir, device: &candle_core::Device) -> Result<()> {
    use hone_core::tasks::translation::{GenerationArgs, TranslationData, TranslationDataArgs};
    use hone_core::training::TrainingData;
    let model = Model::open(dir, device)?
        .frozen()
        .into_kind::<dyn Seq2SeqLm>()?;
    let tokenizer = dir.tokenizer()?;
    let files = TranslationDataArgs {
        validation_source: args.target.as_ref().map(|_| args.data.clone()),
        validation_target: args.target.clone(),
        validation_file: args.target.is_none().then(|| args.data.clone()),
        ..Default::default()
    };
    let pairs = files.read_validation()?;
    let generation = GenerationArgs {
        num_beams: args.beam,
        max_new_tokens: args.max_new_tokens,
        length_penalty: 1.0,
    };
    let n = pairs.len();
    let data = TranslationData::new(
        &*model.net,
        tokenizer,
        &[],
        pairs,
        (args.max_length, args.max_length),
        &generation,
        args.batch_size,
    )?;
    let metrics = data.evaluate(&*model.net, None)?;
    print_metrics(args.json, &metrics, |m| {
        format!(
            "{n} sentences: BLEU {:.2}  chrF2 {:.2}  loss {:.4}  perplexity {:.2}",
            m["bleu"], m["chrf"], m["loss"], m["perplexity"]
        )
    })
}

/// Scikit-learn's report of a sequence classifier on a labelled table.
fn run_classification(args: &EvalArgs, dir: &ModelDir, device: &candle_core::Device) -> Result<()> {
    let classifier = TextClassificationPipeline::open(dir, device, args.max_length)?;
    let spec =
        TableSpec::with_label(args.label_column.clone()).text_columns(args.text_columns.clone());
    let table = read_table(&args.data, &spec)?;
    // Every gold label must be one the model knows; name the line that is not.
    let mut gold = Vec::with_capacity(table.len());
    for ex in &table.examples {
        let label = table.require_label(ex)?;
        if !classifier.labels.iter().any(|l| l == label) {
            anyhow::bail!(
                "{}:{}: label {label:?} is not one of the model's labels {:?}",
                args.data.display(),
                ex.line,
                classifier.labels
            )
        }
        gold.push(label.to_string());
    }
    let inputs: Vec<(String, Option<String>)> = table
        .examples
        .iter()
        .map(|e| (e.texts[0].clone(), e.texts.get(1).cloned()))
        .collect();
    let preds = classifier.predict(&inputs, args.batch_size)?;
    let pred: Vec<String> = preds.into_iter().map(|p| p.label).collect();
    let report =
        ClassificationReport::compute(&gold, &pred, Some(&classifier.labels), ZeroDivision::Zero)
            .context("cannot compute the report")?;
    if args.json {
        let mut j = report.to_json();
        j["confusion_matrix"] = serde_json::json!(hone_metrics::classification::confusion_matrix(
            &gold,
            &pred,
            Some(&classifier.labels)
        )?);
        j["labels"] = serde_json::json!(classifier.labels);
        println!("{j}");
    } else {
        println!("{}", report.to_text(4));
    }
    Ok(())
}

/// Entity-level report of a token-classification model on a labelled CoNLL file.
fn run_ner(args: &EvalArgs, dir: &ModelDir, device: &candle_core::Device) -> Result<()> {
    let mode = args.mode.with_scheme(args.scheme);
    // Read (and check) the data before the model: bad input fails fast, with file:line.
    let sentences = super::score::read_tagged(&args.data, args.tag_column, args.scheme)?;
    let classifier = TokenClassificationPipeline::open(dir, device, args.max_length, args.stride)?;
    let words: Vec<Vec<String>> = sentences.iter().map(|s| s.tokens.clone()).collect();
    let pred = classifier.predict_tags(&words, args.batch_size)?;
    let gold: Vec<Vec<String>> = sentences.into_iter().map(|s| s.tags).collect();
    super::score::print_ner_report(&gold, &pred, mode, args.json, args.digits)
}
