//! `hone export`: a model directory (or an adapter with its base, merged on the way) as an
//! ONNX graph that ONNX Runtime and tract run as is.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};

use hone_core::export::onnx::{self, OnnxOptions, OnnxPrecision};
use hone_core::model::{Model, ModelDir};

/// The formats `hone export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Onnx,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A model directory, or an adapter directory (its base from adapter_config.json or --base).
    model_dir: PathBuf,
    #[arg(long, value_enum, default_value = "onnx")]
    format: ExportFormat,
    /// The file to write (written whole or not at all).
    #[arg(long)]
    output: PathBuf,
    /// ONNX opset (17 to 21; LayerNormalization needs 17).
    #[arg(long, default_value_t = onnx::MIN_OPSET)]
    opset: u32,
    /// The float type of weights and activations.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: OnnxPrecision,
    /// The base model of an adapter directory (instead of the one its config names).
    #[arg(long)]
    base: Option<PathBuf>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let dir = ModelDir::open_with_base(&args.model_dir, args.base.as_deref())?;
    let model = Model::open(&dir, &Device::Cpu)?;
    let ExportFormat::Onnx = args.format;
    let opts = OnnxOptions {
        opset: args.opset,
        precision: args.precision,
    };
    onnx::export(&model, &opts, &args.output)
        .with_context(|| format!("exporting {}", args.model_dir.display()))?;
    tracing::info!(
        "{} ({}) -> {} (opset {}, {:?})",
        args.model_dir.display(),
        model.class_name(),
        args.output.display(),
        opts.opset,
        opts.precision
    );
    Ok(())
}
