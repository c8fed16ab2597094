use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use hone_core::inference::embed::{embed_texts, Pooling};
use hone_core::model::{Encoder, Model, ModelDir};
use hone_core::runtime::DeviceSpec;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// A BERT-family model directory with its tokenizer.
    model_dir: PathBuf,
    /// For an adapter directory: the base model (instead of the one its
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Texts to embed; when none are given, one text per line is read from stdin.
    texts: Vec<String>,
    /// How token vectors become one sentence vector.
    #[arg(long, value_enum, default_value = "mean")]
    pooling: Pooling,
    /// Truncate each text to this many tokens (special tokens included).
    #[arg(long, default_value_t = 128)]
    max_length: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let device = args.device.open()?;
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    let model = Model::open(&dir, &device)?
        .frozen()
        .into_kind::<dyn Encoder>()
        .map_err(|e| e.context(args.model_dir.display().to_string()))?;
    let mut tokenizer = dir.tokenizer()?;
    tokenizer.set_max_length(Some(args.max_length))?;
    let texts = if args.texts.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .enumerate()
            .map(|(i, l)| l.with_context(|| format!("stdin line {}: not valid UTF-8", i + 1)))
            .collect::<Result<Vec<_>>>()?
    } else {
        args.texts
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    for e in embed_texts(&model, &tokenizer, &texts, args.pooling, args.batch_size)? {
        writeln!(out, "{}", serde_json::to_string(&e)?)?;
    }
    Ok(())
}
