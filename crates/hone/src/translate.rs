//! `hone translate`: translate sentences (one per line, from a file or stdin) with a
//! sequence-to-sequence model, one translation per line on stdout.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use hone_core::inference::translate::{translate, GenerationFile};
use hone_core::model::{Model, ModelDir, Seq2SeqLm};
use hone_core::runtime::DeviceSpec;

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// A translation model directory (MarianMTModel) with its tokenizer.json.
    model_dir: PathBuf,
    /// For an adapter directory: the base model (instead of the one its
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Sentences to translate, one per line (default: stdin).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Beam width; 1 decodes greedily. Default: the model's generation_config.json, else 1.
    #[arg(long)]
    beam: Option<usize>,
    /// Most tokens generated per sentence (EOS included). Default: the model's
    /// generation_config.json `max_length` - 1, else 256, within the model's positions.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Exponent of the length normalisation of beams (Hugging Face's length_penalty).
    #[arg(long)]
    length_penalty: Option<f64>,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// JSON lines: the text, the generated ids and the sequence score.
    #[arg(long)]
    json: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

pub fn run(args: TranslateArgs) -> Result<()> {
    let device = args.device.open()?;
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    let model = Model::open(&dir, &device)?
        .frozen()
        .into_kind::<dyn Seq2SeqLm>()
        .map_err(|e| e.context(args.model_dir.display().to_string()))?;
    let tokenizer = dir.tokenizer()?;
    let cfg = GenerationFile::load(&dir.path)?.translation_config(
        model.net.max_positions(),
        args.beam,
        args.max_new_tokens,
        args.length_penalty,
    );
    let lines: Vec<String> = match &args.input {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        None => std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("cannot read stdin")?,
    };
    let mut out = std::io::stdout().lock();
    for chunk in lines.chunks(args.batch_size.max(1)) {
        // An empty line translates to an empty line, so output lines match input lines.
        let texts: Vec<String> = chunk
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect();
        let mut translated =
            translate(&*model.net, &tokenizer, &texts, &cfg, args.batch_size)?.into_iter();
        for line in chunk {
            let t = match line.trim().is_empty() {
                true => None,
                false => translated.next(),
            };
            match (t, args.json) {
                (Some(t), true) => writeln!(out, "{}", serde_json::to_string(&t)?)?,
                (Some(t), false) => writeln!(out, "{}", t.text)?,
                (None, true) => writeln!(out, "{}", serde_json::json!({"text": "", "ids": []}))?,
                (None, false) => writeln!(out)?,
            }
        }
        out.flush()?;
    }
    Ok(())
}
