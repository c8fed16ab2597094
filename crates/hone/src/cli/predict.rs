use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use hone::inference::classify::TextClassifier;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A fine-tuned model directory.
    model_dir: PathBuf,
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
    device: String,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let device = hone::device_from_str(&args.device)?;
    let classifier = TextClassifier::load(&args.model_dir, &device, args.max_length)?;
    let inputs = super::read_inputs(&args.input, &args.text_columns)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for p in classifier.predict(&inputs, args.batch_size)? {
        writeln!(out, "{}", serde_json::to_string(&p)?)?;
    }
    Ok(())
}
