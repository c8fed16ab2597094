//! Heads: what a model computes on top of its base network. [`Head`] names a head (with
//! its labels), the traits here are what each kind of head offers the pipelines, whatever
//! the architecture underneath, and [`registry`] maps Hugging Face's class names to the
//! builders that put a head on an architecture.

pub mod registry;

use std::sync::Arc;

use anyhow::{anyhow, Result as AnyResult};
use candle_core::{DType, Result, Tensor, D};
use serde::{Deserialize, Serialize};

use super::config::{Architecture, ModelConfig};
use super::layers::KvCache;
use crate::onnx;
use crate::ops::{binary_cross_entropy_with_logits, cross_entropy, mse_loss, CrossEntropyOptions};

/// What a sequence-classification head's loss is (Hugging Face's `problem_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ProblemType {
    #[default]
    #[serde(rename = "single_label_classification")]
    SingleLabel,
    #[serde(rename = "multi_label_classification")]
    MultiLabel,
    #[serde(rename = "regression")]
    Regression,
}

/// The head a model carries, with what it needs to know to be built.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// No head: the base model's hidden states (`hone embed`).
    Base,
    /// One label (or value) per sequence.
    SequenceClassification {
        id2label: Vec<String>,
        problem: ProblemType,
    },
    /// One label per token.
    TokenClassification { id2label: Vec<String> },
    /// Masked LM, plus next-sentence prediction when `nsp`.
    MaskedLm { nsp: bool },
    /// Next-token prediction.
    CausalLm,
    /// Sequence-to-sequence generation (translation): encoder, decoder, LM head.
    Seq2SeqLm,
}

/// A [`Head`] without its labels: what the registry is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    Base,
    SequenceClassification,
    TokenClassification,
    /// Masked LM + next-sentence prediction.
    PreTraining,
    MaskedLm,
    CausalLm,
    Seq2SeqLm,
}

impl Head {
    pub fn kind(&self) -> HeadKind {
        match self {
            Head::Base => HeadKind::Base,
            Head::SequenceClassification { .. } => HeadKind::SequenceClassification,
            Head::TokenClassification { .. } => HeadKind::TokenClassification,
            Head::MaskedLm { nsp: true } => HeadKind::PreTraining,
            Head::MaskedLm { nsp: false } => HeadKind::MaskedLm,
            Head::CausalLm => HeadKind::CausalLm,
            Head::Seq2SeqLm => HeadKind::Seq2SeqLm,
        }
    }

    /// The head a saved model was trained with: its `architectures` entry through the
    /// registry, with the labels and problem type of `config.json` (Hugging Face's rule
    /// when `problem_type` is absent: one label means regression); a class hone does not
    /// know gets the architecture's default head.
    pub fn from_config(config: &ModelConfig) -> Self {
        let labels: Vec<String> = config.id2label.values().cloned().collect();
        let kind = config
            .architecture
            .as_deref()
            .and_then(registry::by_class_name)
            .map(|spec| spec.kind);
        match kind {
            Some(HeadKind::SequenceClassification) => Head::SequenceClassification {
                problem: config.problem_type.unwrap_or(if labels.len() == 1 {
                    ProblemType::Regression
                } else {
                    ProblemType::SingleLabel
                }),
                id2label: labels,
            },
            Some(HeadKind::TokenClassification) => Head::TokenClassification { id2label: labels },
            Some(HeadKind::PreTraining) => Head::MaskedLm { nsp: true },
            Some(HeadKind::MaskedLm) => Head::MaskedLm { nsp: false },
            Some(HeadKind::CausalLm) => Head::CausalLm,
            Some(HeadKind::Seq2SeqLm) => Head::Seq2SeqLm,
            Some(HeadKind::Base) => Head::Base,
            None => config.arch.default_head(),
        }
    }

    /// The label names of a classification head (empty otherwise).
    pub fn labels(&self) -> &[String] {
        match self {
            Head::SequenceClassification { id2label, .. }
            | Head::TokenClassification { id2label } => id2label,
            _ => &[],
        }
    }

    /// Width of a classification head's output: one per label, one for regression.
    pub fn num_outputs(&self) -> usize {
        match self {
            Head::SequenceClassification {
                problem: ProblemType::Regression,
                ..
            } => 1,
            _ => self.labels().len(),
        }
    }

    /// The problem type of a sequence classifier (single-label for other heads).
    pub fn problem(&self) -> ProblemType {
        match self {
            Head::SequenceClassification { problem, .. } => *problem,
            _ => ProblemType::SingleLabel,
        }
    }
}

/// The outputs of a base encoder.
pub struct EncoderOutput {
    /// `[B, T, H]` final hidden states.
    pub sequence: Tensor,
    /// `[B, H]`: BERT's pooler, tanh(W h_[CLS] + b), when the model has one.
    pub pooled: Option<Tensor>,
}

/// Outputs of [`MaskedLm::forward`].
pub struct PreTrainingOutput {
    /// `[B, T, vocab]`.
    pub prediction_logits: Tensor,
    /// `[B, 2]` when the model has an NSP head.
    pub seq_relationship_logits: Option<Tensor>,
}

// What each kind of head offers. Inputs are `[B, T]` u32 token ids, segment ids and
// attention mask (1 token, 0 padding); an architecture without segments ignores them.

/// A base model read as an encoder: hidden states per token (embeddings).
pub trait Encoder: Send + Sync {
    /// Adds this network to an ONNX graph: its token inputs and its outputs, named as
    /// Optimum names them. Networks without an exporter say so.
    fn onnx(&self, _g: &mut onnx::Graph) -> Result<()> {
        // A plain message: `bail!` would attach a backtrace under RUST_BACKTRACE.
        Err(candle_core::Error::Msg("has no ONNX exporter yet".into()))
    }

    fn encode(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<EncoderOutput>;
}

/// One label (or value) per sequence.
pub trait SequenceClassifier: Send + Sync {
    /// Adds this network to an ONNX graph: its token inputs and its outputs, named as
    /// Optimum names them. Networks without an exporter say so.
    fn onnx(&self, _g: &mut onnx::Graph) -> Result<()> {
        // A plain message: `bail!` would attach a backtrace under RUST_BACKTRACE.
        Err(candle_core::Error::Msg("has no ONNX exporter yet".into()))
    }

    /// Logits `[B, num_labels]` (`[B, 1]` for regression).
    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor>;

    fn problem(&self) -> ProblemType;

    /// The loss of the problem type. `labels`: class ids `[B]` (single label), multi-hot
    /// `[B, L]` (multi-label) or targets `[B]` (regression).
    fn loss(&self, logits: &Tensor, labels: &Tensor, opts: &CrossEntropyOptions) -> Result<Tensor> {
        match self.problem() {
            ProblemType::SingleLabel => cross_entropy(logits, labels, opts),
            ProblemType::MultiLabel => binary_cross_entropy_with_logits(logits, labels),
            ProblemType::Regression => mse_loss(&logits.squeeze(D::Minus1)?, labels),
        }
    }
}

/// One label per token.
pub trait TokenClassifier: Send + Sync {
    /// Adds this network to an ONNX graph: its token inputs and its outputs, named as
    /// Optimum names them. Networks without an exporter say so.
    fn onnx(&self, _g: &mut onnx::Graph) -> Result<()> {
        // A plain message: `bail!` would attach a backtrace under RUST_BACKTRACE.
        Err(candle_core::Error::Msg("has no ONNX exporter yet".into()))
    }

    /// Logits `[B, T, num_labels]`.
    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Tensor>;

    /// Token-level cross-entropy, labels `[B, T]` with -100 on ignored pieces.
    fn loss(&self, logits: &Tensor, labels: &Tensor, opts: &CrossEntropyOptions) -> Result<Tensor> {
        let (b, t, l) = logits.dims3()?;
        let labels = labels.to_dtype(DType::I64)?.reshape(b * t)?;
        let opts = CrossEntropyOptions {
            ignore_index: Some(-100),
            ..opts.clone()
        };
        cross_entropy(&logits.reshape((b * t, l))?, &labels, &opts)
    }
}

/// Masked language modelling, with next-sentence prediction when the model has it.
pub trait MaskedLm: Send + Sync {
    /// Adds this network to an ONNX graph: its token inputs and its outputs, named as
    /// Optimum names them. Networks without an exporter say so.
    fn onnx(&self, _g: &mut onnx::Graph) -> Result<()> {
        // A plain message: `bail!` would attach a backtrace under RUST_BACKTRACE.
        Err(candle_core::Error::Msg("has no ONNX exporter yet".into()))
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<PreTrainingOutput>;

    /// The training loss of [`MaskedLm::loss`] with the vocabulary logits computed only at
    /// the flat `positions` (`b * T + t`, u32) whose labels are `targets` (i64); same value
    /// and gradients.
    fn masked_loss(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        positions: &Tensor,
        targets: &Tensor,
        next_sentence_labels: Option<&Tensor>,
    ) -> Result<Tensor>;

    /// MLM cross-entropy over labels != -100, plus NSP cross-entropy when given.
    fn loss(
        &self,
        out: &PreTrainingOutput,
        mlm_labels: &Tensor,
        next_sentence_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, v) = out.prediction_logits.dims3()?;
        let opts = CrossEntropyOptions {
            ignore_index: Some(-100),
            ..Default::default()
        };
        let mlm = cross_entropy(
            &out.prediction_logits.reshape((b * t, v))?,
            &mlm_labels.to_dtype(DType::I64)?.reshape(b * t)?,
            &opts,
        )?;
        match (&out.seq_relationship_logits, next_sentence_labels) {
            (Some(logits), Some(labels)) => {
                mlm + cross_entropy(logits, labels, &Default::default())?
            }
            _ => Ok(mlm),
        }
    }
}

/// The rows `[B*T]` labels select for the masked-LM loss (`!= -100`) as flat u32 positions,
/// with their target ids: the inputs of [`MaskedLm::masked_loss`].
pub fn masked_rows(labels: &[i64]) -> (Vec<u32>, Vec<i64>) {
    labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != -100)
        .map(|(i, &l)| (i as u32, l))
        .unzip()
}

/// Next-token prediction, with a KV cache for decoding.
pub trait CausalLm: Send + Sync {
    /// Adds this network to an ONNX graph: its token inputs and its outputs, named as
    /// Optimum names them. Networks without an exporter say so.
    fn onnx(&self, _g: &mut onnx::Graph) -> Result<()> {
        // A plain message: `bail!` would attach a backtrace under RUST_BACKTRACE.
        Err(candle_core::Error::Msg("has no ONNX exporter yet".into()))
    }

    /// Logits `[B, T, vocab]` for `input_ids` `[B, T]`. With a cache, the ids are the new
    /// positions only and the cache grows by T.
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor>;

    /// A fresh cache, one entry per layer.
    fn new_cache(&self) -> Vec<KvCache>;

    /// The architecture's facts (positions, special token ids, vocabulary).
    fn config(&self) -> &dyn Architecture;

    /// The device the weights live on (inputs must be built there).
    fn device(&self) -> &candle_core::Device;

    /// Causal-LM loss with `labels` `[B, T]` (i64, -100 ignored), shifted inside as in
    /// Hugging Face: position t predicts label t+1.
    fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        let logits = logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?;
        let labels = labels
            .to_dtype(DType::I64)?
            .narrow(1, 1, t - 1)?
            .flatten_all()?;
        let opts = CrossEntropyOptions {
            ignore_index: Some(-100),
            ..Default::default()
        };
        cross_entropy(&logits, &labels, &opts)
    }
}

/// The token ids a sequence-to-sequence model generates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq2SeqTokens {
    /// The first decoder input (Marian: the pad id).
    pub decoder_start: u32,
    pub eos: u32,
    pub pad: u32,
    /// Forced as the last token when generation reaches its length limit.
    pub forced_eos: Option<u32>,
}

/// Sequence-to-sequence generation: an encoder reads the source once, a decoder attends to
/// it while predicting the target. Source inputs are `[B, S]` ids with a `[B, S]` mask
/// (1 token, 0 padding).
pub trait Seq2SeqLm: Send + Sync {
    /// Adds this network to an ONNX graph: its token inputs and its outputs, named as
    /// Optimum names them. Networks without an exporter say so.
    fn onnx(&self, _g: &mut onnx::Graph) -> Result<()> {
        // A plain message: `bail!` would attach a backtrace under RUST_BACKTRACE.
        Err(candle_core::Error::Msg("has no ONNX exporter yet".into()))
    }

    /// Encoder states `[B, S, D]`.
    fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor>;

    /// Logits `[B, T, vocab]` for `decoder_input_ids` `[B, T]` attending to
    /// `encoder_states` (masked by the source `attention_mask`). With a cache, the ids are
    /// the new positions only and the cache grows by T.
    fn decode(
        &self,
        decoder_input_ids: &Tensor,
        encoder_states: &Tensor,
        attention_mask: &Tensor,
        cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor>;

    /// A fresh decoder cache, one entry per decoder layer.
    fn new_cache(&self) -> Vec<KvCache>;

    fn tokens(&self) -> Seq2SeqTokens;

    /// The longest source or target the position table covers.
    fn max_positions(&self) -> usize;

    /// The device the weights live on (inputs must be built there).
    fn device(&self) -> &candle_core::Device;

    /// Teacher-forced logits `[B, T, vocab]`.
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        decoder_input_ids: &Tensor,
    ) -> Result<Tensor> {
        let states = self.encode(input_ids, attention_mask)?;
        self.decode(decoder_input_ids, &states, attention_mask, None)
    }

    /// Mean cross-entropy of `logits` `[B, T, V]` against `labels` `[B, T]` (-100 ignored),
    /// label-smoothed by `label_smoothing` as PyTorch's `cross_entropy` does.
    fn loss(&self, logits: &Tensor, labels: &Tensor, label_smoothing: f64) -> Result<Tensor> {
        let (b, t, v) = logits.dims3()?;
        let opts = CrossEntropyOptions {
            ignore_index: Some(-100),
            label_smoothing,
            ..Default::default()
        };
        cross_entropy(
            &logits.reshape((b * t, v))?,
            &labels.to_dtype(DType::I64)?.reshape(b * t)?,
            &opts,
        )
    }
}

/// A built network, by the kind of its head.
#[derive(Clone)]
pub enum Net {
    Base(Arc<dyn Encoder>),
    SequenceClassifier(Arc<dyn SequenceClassifier>),
    TokenClassifier(Arc<dyn TokenClassifier>),
    MaskedLm(Arc<dyn MaskedLm>),
    CausalLm(Arc<dyn CausalLm>),
    Seq2SeqLm(Arc<dyn Seq2SeqLm>),
}

/// A kind of network a pipeline can ask for: [`Net`] itself (any head) or one of the head
/// traits. [`crate::model::Model::load_for`] builds one; its conversion from [`Net`] is the
/// only place a head is checked at run time.
pub trait NetKind {
    /// How an error names what was expected ("a sequence classifier").
    const WHAT: &'static str;
    fn from_net(net: Net) -> Option<Arc<Self>>;
}

impl NetKind for Net {
    const WHAT: &'static str = "a model";
    fn from_net(net: Net) -> Option<Arc<Self>> {
        Some(Arc::new(net))
    }
}

macro_rules! net_kind {
    ($trait:ident, $variant:ident, $what:literal) => {
        impl NetKind for dyn $trait {
            const WHAT: &'static str = $what;
            fn from_net(net: Net) -> Option<Arc<Self>> {
                match net {
                    Net::$variant(n) => Some(n),
                    _ => None,
                }
            }
        }
    };
}

net_kind!(Encoder, Base, "an encoder");
net_kind!(
    SequenceClassifier,
    SequenceClassifier,
    "a sequence classifier"
);
net_kind!(TokenClassifier, TokenClassifier, "a token classifier");
net_kind!(MaskedLm, MaskedLm, "a masked language model");
net_kind!(CausalLm, CausalLm, "a causal language model");
net_kind!(Seq2SeqLm, Seq2SeqLm, "a sequence-to-sequence model");

/// Convert a [`Net`] (of the model class `class_name`), or say what it is instead.
pub(crate) fn net_as<N: NetKind + ?Sized>(net: Net, class_name: &str) -> AnyResult<Arc<N>> {
    N::from_net(net).ok_or_else(|| anyhow!("a {class_name} is not {}", N::WHAT))
}
