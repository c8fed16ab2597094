//! ONNX export: [`export`] writes a model's graph at a chosen opset and precision, its
//! inputs and outputs named as Optimum names them, with dynamic batch and sequence axes.

use std::path::Path;

use anyhow::{bail, Result};
use prost::Message;

use crate::onnx::{ElemType, Graph};
pub use crate::onnx::{MAX_OPSET, MIN_OPSET};

use crate::model::heads::Net;
use crate::model::Model;

/// The float type of an exported graph's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OnnxPrecision {
    #[default]
    Fp32,
    Fp16,
}

/// What [`export`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnnxOptions {
    pub opset: u32,
    pub precision: OnnxPrecision,
}

impl Default for OnnxOptions {
    fn default() -> Self {
        Self {
            opset: MIN_OPSET,
            precision: OnnxPrecision::Fp32,
        }
    }
}

/// `model` as an ONNX model. Every tensor the network uses must have come from its
/// checkpoint: a graph of freshly initialised weights would export silently wrong.
pub fn to_onnx(model: &Model<Net>, opts: &OnnxOptions) -> Result<tract_onnx::pb::ModelProto> {
    let class = model.class_name();
    if let Some(first) = model.params.newly_initialized().first() {
        bail!("the checkpoint lacks tensor `{first}`, which {class} needs");
    }
    if !(MIN_OPSET..=MAX_OPSET).contains(&opts.opset) {
        bail!(
            "opset {} is outside {MIN_OPSET}..={MAX_OPSET}, the opsets hone writes (LayerNormalization needs {MIN_OPSET})",
            opts.opset
        );
    }
    let float = match opts.precision {
        OnnxPrecision::Fp32 => ElemType::F32,
        OnnxPrecision::Fp16 => ElemType::F16,
    };
    let mut g = Graph::new(float);
    let written = match &*model.net {
        Net::Base(n) => n.onnx(&mut g),
        Net::SequenceClassifier(n) => n.onnx(&mut g),
        Net::TokenClassifier(n) => n.onnx(&mut g),
        Net::MaskedLm(n) => n.onnx(&mut g),
        Net::CausalLm(n) => n.onnx(&mut g),
        Net::Seq2SeqLm(n) => n.onnx(&mut g),
    };
    written.map_err(|e| anyhow::anyhow!("{class} {e}"))?;
    let (needs, op) = g.required_opset();
    if opts.opset < needs {
        bail!("opset {} is below {needs}, which {op} needs", opts.opset);
    }
    Ok(g.into_model(opts.opset, format!("{class} exported by hone")))
}

/// Exports `model` to `path`, all or nothing: an error leaves no file behind.
pub fn export(model: &Model<Net>, opts: &OnnxOptions, path: &Path) -> Result<()> {
    let proto = to_onnx(model, opts)?;
    crate::io::write_bytes_atomically(path, &proto.encode_to_vec())
}
