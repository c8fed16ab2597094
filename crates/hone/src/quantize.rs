//! `hone quantize`: a model directory with its linear layers in int8 (per-output-channel
//! weights; activations quantized per row at run time), which every inference command
//! loads as it loads any model directory.

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clap::Args;

use hone_core::model::{Model, ModelDir};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A model directory (merge an adapter first with `hone merge`).
    model_dir: PathBuf,
    /// Where to write the quantized model (must not exist, or be empty).
    #[arg(long)]
    output: PathBuf,
    /// Dynamic int8 quantization (the one scheme today).
    #[arg(long, required = true)]
    int8: bool,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    super::ensure_new_output(&args.output, "quantize")?;
    let dir = ModelDir::open(&args.model_dir)?;
    let model = Model::load_quantizing(&dir, &Device::Cpu)?;
    // Filled under a temporary name: a kill leaves no half-written model directory.
    hone_core::io::write_dir_atomically(&args.output, |out| {
        model.save_int8(out)?;
        hone_core::tokenization::copy_tokenizer_files(dir.tokenizer_dir(), out)
    })?;
    let layers = model.mode.int8().map_or(0, |q| q.modules().len());
    tracing::info!(
        "{} -> {}: {layers} linear layers in int8",
        args.model_dir.display(),
        args.output.display()
    );
    Ok(())
}
