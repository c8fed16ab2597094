//! `hone merge`: a LoRA adapter folded into its base, `W + (lora_alpha / r) B A`, written
//! as a plain Hugging Face model directory (PEFT's `merge_and_unload` + `save_pretrained`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;

use hone_core::model::{Model, ModelDir};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// An adapter directory (adapter_config.json + adapter_model.safetensors).
    adapter_dir: PathBuf,
    /// Where to write the merged model (must not exist, or be empty).
    #[arg(long)]
    output: PathBuf,
    /// The base model (instead of the one adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
}

pub fn run(args: MergeArgs) -> Result<()> {
    let dir = ModelDir::open_with_base(&args.adapter_dir, args.base.as_deref())?;
    if dir.adapter.is_none() {
        bail!(
            "{} has no adapter_config.json: nothing to merge",
            args.adapter_dir.display()
        )
    }
    super::ensure_new_output(&args.output, "merge")?;
    // Everything is read and checked before anything is written.
    let model = Model::open(&dir, &Device::Cpu)?;
    // Filled under a temporary name: a kill leaves no half-written model directory.
    hone_core::io::write_dir_atomically(&args.output, |out| {
        model.save_merged(out)?;
        hone_core::tokenization::copy_tokenizer_files(dir.tokenizer_dir(), out)
    })?;
    tracing::info!(
        "merged {} into {} -> {}",
        args.adapter_dir.display(),
        dir.weights_dir.display(),
        args.output.display()
    );
    Ok(())
}
