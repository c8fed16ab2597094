//! The head registry: one row per Hugging Face model class hone builds, saying which
//! architecture and kind of head it is, which parameters belong to the head, and which
//! function builds it. Adding a head to an architecture is adding a row here and the
//! builder beside the architecture.

use anyhow::{bail, Result};
use candle_nn::VarBuilder;

use super::{Head, HeadKind, Net};
use crate::model::config::{ArchConfig, ModelType};
use crate::model::layers::ModelMode;
use crate::model::{bert, gpt2, marian};

/// What a builder gets: the parameters, the architecture, the head and the dropout switch.
pub struct Build<'a> {
    /// The model root (parameter names start with the base prefix, e.g. `bert.`).
    pub vb: VarBuilder<'a>,
    pub arch: &'a ArchConfig,
    pub head: &'a Head,
    pub mode: &'a ModelMode,
}

/// One model class.
pub struct HeadSpec {
    /// Hugging Face's class name (`architectures[0]` of `config.json`).
    pub class_name: &'static str,
    pub model_type: ModelType,
    pub kind: HeadKind,
    /// Name prefixes of the head's own parameters: a checkpoint of the base model lacks
    /// them, so fine-tuning from one initialises them afresh.
    pub head_params: &'static [&'static str],
    /// Tensors of the head saved with the model that never train (Transformers' buffers).
    pub buffers: &'static [&'static str],
    pub build: fn(&Build) -> candle_core::Result<Net>,
}

/// Every head hone can put on every architecture.
pub const HEADS: &[HeadSpec] = &[
    HeadSpec {
        class_name: "BertModel",
        model_type: ModelType::Bert,
        kind: HeadKind::Base,
        head_params: &[],
        buffers: &[],
        build: bert::build_base,
    },
    HeadSpec {
        class_name: "BertForSequenceClassification",
        model_type: ModelType::Bert,
        kind: HeadKind::SequenceClassification,
        head_params: &["classifier.", "bert.pooler."],
        buffers: &[],
        build: bert::build_sequence_classifier,
    },
    HeadSpec {
        class_name: "BertForTokenClassification",
        model_type: ModelType::Bert,
        kind: HeadKind::TokenClassification,
        head_params: &["classifier."],
        buffers: &[],
        build: bert::build_token_classifier,
    },
    HeadSpec {
        class_name: "BertForPreTraining",
        model_type: ModelType::Bert,
        kind: HeadKind::PreTraining,
        head_params: &["cls.", "bert.pooler."],
        buffers: &[],
        build: bert::build_pretraining,
    },
    HeadSpec {
        class_name: "BertForMaskedLM",
        model_type: ModelType::Bert,
        kind: HeadKind::MaskedLm,
        head_params: &["cls."],
        buffers: &[],
        build: bert::build_masked_lm,
    },
    HeadSpec {
        class_name: "GPT2LMHeadModel",
        model_type: ModelType::Gpt2,
        kind: HeadKind::CausalLm,
        // Tied to the token embedding: nothing of its own.
        head_params: &[],
        buffers: &[],
        build: gpt2::build_causal_lm,
    },
    HeadSpec {
        class_name: "GPT2ForSequenceClassification",
        model_type: ModelType::Gpt2,
        kind: HeadKind::SequenceClassification,
        head_params: &["score."],
        buffers: &[],
        build: gpt2::build_sequence_classifier,
    },
    HeadSpec {
        class_name: "MarianMTModel",
        model_type: ModelType::Marian,
        kind: HeadKind::Seq2SeqLm,
        // A buffer of zeros that a bare `MarianModel` checkpoint lacks.
        head_params: &["final_logits_bias"],
        buffers: &["final_logits_bias"],
        build: marian::build_seq2seq_lm,
    },
];

/// The row of a Hugging Face class name.
pub fn by_class_name(name: &str) -> Option<&'static HeadSpec> {
    HEADS.iter().find(|s| s.class_name == name)
}

/// The row that puts `kind` on `model_type`, or an error listing the heads it has.
pub fn find(model_type: ModelType, kind: HeadKind) -> Result<&'static HeadSpec> {
    if let Some(spec) = HEADS
        .iter()
        .find(|s| s.model_type == model_type && s.kind == kind)
    {
        return Ok(spec);
    }
    let available: Vec<&str> = HEADS
        .iter()
        .filter(|s| s.model_type == model_type)
        .map(|s| s.class_name)
        .collect();
    bail!(
        "hone has no {kind:?} head for {model_type} models (it has {})",
        available.join(", ")
    )
}
