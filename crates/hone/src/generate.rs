//! `hone generate`: stream a causal language model's continuation of a prompt to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use hone_core::inference::generate::{generate, GenerationConfig};
use hone_core::model::{CausalLm, Model, ModelDir};
use hone_core::runtime::DeviceSpec;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A GPT-2 model directory with its tokenizer.json.
    model_dir: PathBuf,
    /// For an adapter directory: the base model (instead of the one its
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 100)]
    max_new_tokens: usize,
    /// Softmax temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling: only among the most likely tokens that together reach p.
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of the sampler (the same seed gives the same text).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the generated text contains this (repeatable); it is not printed.
    #[arg(long)]
    stop: Vec<String>,
    /// Always take the most likely token.
    #[arg(long)]
    greedy: bool,
    /// Print only the continuation, not the prompt before it.
    #[arg(long)]
    no_prompt: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let device = args.device.open()?;
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    let model = Model::open(&dir, &device)?
        .frozen()
        .into_kind::<dyn CausalLm>()
        .map_err(|e| e.context(args.model_dir.display().to_string()))?;
    let tokenizer = dir.tokenizer()?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        stop: args.stop,
        greedy: args.greedy,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    if !args.no_prompt {
        write!(out, "{}", args.prompt)?;
        out.flush()?;
    }
    // A closed pipe (`| head`) ends the stream; the error surfaces after generation.
    let mut write_err = None;
    let result = generate(&*model.net, &tokenizer, &args.prompt, &cfg, |_, piece| {
        if write_err.is_none() {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    writeln!(out)?;
    tracing::debug!(
        "{} new tokens, finished by {:?}",
        result.new_tokens,
        result.finish_reason
    );
    Ok(())
}
