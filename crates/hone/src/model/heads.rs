//! Task heads on the BERT encoder, with Hugging Face semantics and tensor names.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::bert::{BertModel, BertOutput};
use super::config::BertConfig;
use super::layers::{Activation, Dropout, LayerNorm, Linear, TrainingMode};
use crate::ops::{binary_cross_entropy_with_logits, cross_entropy, mse_loss, CrossEntropyOptions};

/// What a sequence-classification head's loss is (Hugging Face `problem_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    SingleLabel,
    MultiLabel,
    Regression,
}

impl ProblemType {
    /// Hugging Face's name for it in `config.json`.
    pub fn hf_name(&self) -> &'static str {
        match self {
            ProblemType::SingleLabel => "single_label_classification",
            ProblemType::MultiLabel => "multi_label_classification",
            ProblemType::Regression => "regression",
        }
    }

    pub fn from_hf(name: Option<&str>, num_labels: usize) -> Self {
        match name {
            Some("multi_label_classification") => ProblemType::MultiLabel,
            Some("regression") => ProblemType::Regression,
            Some(_) => ProblemType::SingleLabel,
            None if num_labels == 1 => ProblemType::Regression,
            None => ProblemType::SingleLabel,
        }
    }
}

/// `BertForSequenceClassification`: pooler output -> dropout -> linear.
#[derive(Debug, Clone)]
pub struct BertForSequenceClassification {
    pub bert: BertModel,
    dropout: Dropout,
    classifier: Linear,
    pub problem: ProblemType,
}

/// The dropout and `classifier` linear layer both classification heads put on the encoder
/// (`classifier_dropout`, else the hidden dropout, as Hugging Face does).
fn classifier_head(
    vb: VarBuilder,
    c: &BertConfig,
    num_labels: usize,
    mode: &TrainingMode,
) -> Result<(Dropout, Linear)> {
    let p = c.classifier_dropout.unwrap_or(c.hidden_dropout_prob);
    let classifier = Linear::new(
        vb.pp("classifier"),
        c.hidden_size,
        num_labels,
        c.initializer_range,
    )?;
    Ok((Dropout::new(p, mode), classifier))
}

impl BertForSequenceClassification {
    pub fn new(
        vb: VarBuilder,
        c: &BertConfig,
        num_labels: usize,
        problem: ProblemType,
        mode: &TrainingMode,
    ) -> Result<Self> {
        let bert = BertModel::new(vb.pp("bert"), c, true, mode)?;
        let (dropout, classifier) = classifier_head(vb, c, num_labels, mode)?;
        Ok(Self {
            bert,
            dropout,
            classifier,
            problem,
        })
    }

    /// Logits `[B, num_labels]`.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let BertOutput { pooled, .. } = self.bert.forward(ids, type_ids, mask)?;
        let pooled = pooled.expect("built with a pooler");
        self.classifier.forward(&self.dropout.forward(&pooled)?)
    }

    /// The loss for this head's problem type. `labels`: class ids `[B]` (single label),
    /// multi-hot `[B, L]` (multi-label) or targets `[B]` (regression).
    pub fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        opts: &CrossEntropyOptions,
    ) -> Result<Tensor> {
        match self.problem {
            ProblemType::SingleLabel => cross_entropy(logits, labels, opts),
            ProblemType::MultiLabel => binary_cross_entropy_with_logits(logits, labels),
            ProblemType::Regression => mse_loss(&logits.squeeze(D::Minus1)?, labels),
        }
    }
}

/// `BertForTokenClassification`: sequence output -> dropout -> linear, per token.
#[derive(Debug, Clone)]
pub struct BertForTokenClassification {
    pub bert: BertModel,
    dropout: Dropout,
    classifier: Linear,
}

impl BertForTokenClassification {
    pub fn new(
        vb: VarBuilder,
        c: &BertConfig,
        num_labels: usize,
        mode: &TrainingMode,
    ) -> Result<Self> {
        // Hugging Face builds this head without the pooler.
        let bert = BertModel::new(vb.pp("bert"), c, false, mode)?;
        let (dropout, classifier) = classifier_head(vb, c, num_labels, mode)?;
        Ok(Self {
            bert,
            dropout,
            classifier,
        })
    }

    /// Logits `[B, T, num_labels]`.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let out = self.bert.forward(ids, type_ids, mask)?;
        self.classifier
            .forward(&self.dropout.forward(&out.sequence)?)
    }

    /// Token-level cross-entropy, labels `[B, T]` with -100 on ignored pieces.
    pub fn loss(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        opts: &CrossEntropyOptions,
    ) -> Result<Tensor> {
        let (b, t, l) = logits.dims3()?;
        let labels = labels.to_dtype(DType::I64)?.reshape(b * t)?;
        let opts = CrossEntropyOptions {
            ignore_index: Some(-100),
            ..opts.clone()
        };
        cross_entropy(&logits.reshape((b * t, l))?, &labels, &opts)
    }
}

/// The masked-LM prediction head: dense -> act -> LayerNorm -> decoder tied to the word
/// embeddings, plus a per-token bias (`cls.predictions`).
#[derive(Debug, Clone)]
pub struct MlmHead {
    dense: Linear,
    act: Activation,
    norm: LayerNorm,
    decoder: Linear,
}

impl MlmHead {
    fn new(vb: VarBuilder, c: &BertConfig, word_embeddings: &Tensor) -> Result<Self> {
        let t = vb.pp("transform");
        let bias = vb.get_with_hints(c.vocab_size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            dense: Linear::new(
                t.pp("dense"),
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
            )?,
            act: c.hidden_act,
            norm: LayerNorm::new(t.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            decoder: Linear::from_weight(word_embeddings.clone(), Some(bias)),
        })
    }

    /// Vocabulary logits for hidden states `[..., H]`.
    pub fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let h = self
            .norm
            .forward(&self.act.forward(&self.dense.forward(h)?)?)?;
        self.decoder.forward(&h)
    }
}

/// The rows `[B*T]` labels select for the masked-LM loss (`!= -100`) as flat u32 positions,
/// with their target ids: the inputs of [`BertForPreTraining::masked_loss`].
pub fn masked_rows(labels: &[i64]) -> (Vec<u32>, Vec<i64>) {
    labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != -100)
        .map(|(i, &l)| (i as u32, l))
        .unzip()
}

/// `BertForPreTraining`: masked LM over every position plus next-sentence prediction on the
/// pooled `[CLS]`. With `nsp = false` it is `BertForMaskedLM` (no pooler, no NSP head).
#[derive(Debug, Clone)]
pub struct BertForPreTraining {
    pub bert: BertModel,
    pub mlm: MlmHead,
    nsp: Option<Linear>,
}

/// Outputs of [`BertForPreTraining::forward`].
pub struct PreTrainingOutput {
    /// `[B, T, vocab]`.
    pub prediction_logits: Tensor,
    /// `[B, 2]` when the model has an NSP head.
    pub seq_relationship_logits: Option<Tensor>,
}

impl BertForPreTraining {
    pub fn new(vb: VarBuilder, c: &BertConfig, nsp: bool, mode: &TrainingMode) -> Result<Self> {
        let bert = BertModel::new(vb.pp("bert"), c, nsp, mode)?;
        let cls = vb.pp("cls");
        let mlm = MlmHead::new(cls.pp("predictions"), c, bert.embeddings.word.weight())?;
        let nsp = if nsp {
            Some(Linear::new(
                cls.pp("seq_relationship"),
                c.hidden_size,
                2,
                c.initializer_range,
            )?)
        } else {
            None
        };
        Ok(Self { bert, mlm, nsp })
    }

    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
    ) -> Result<PreTrainingOutput> {
        let out = self.bert.forward(ids, type_ids, mask)?;
        let prediction_logits = self.mlm.forward(&out.sequence)?;
        let seq_relationship_logits = match (&self.nsp, &out.pooled) {
            (Some(nsp), Some(pooled)) => Some(nsp.forward(pooled)?),
            _ => None,
        };
        Ok(PreTrainingOutput {
            prediction_logits,
            seq_relationship_logits,
        })
    }

    /// The training loss of [`Self::loss`] without the vocabulary logits of unmasked
    /// positions: the encoder runs over every token, but the MLM head only over the flat
    /// `positions` (`b * T + t`, u32) whose labels are `targets` (i64). The value and the
    /// gradients are those of the full loss (the skipped rows carry label -100); the
    /// decoder's `[B*T, vocab]` product, the largest in a small BERT, shrinks to the 15% of
    /// rows that count.
    pub fn masked_loss(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
        positions: &Tensor,
        targets: &Tensor,
        next_sentence_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        let out = self.bert.forward(ids, type_ids, mask)?;
        let (b, t, h) = out.sequence.dims3()?;
        let picked = out
            .sequence
            .reshape((b * t, h))?
            .index_select(positions, 0)?;
        let logits = self.mlm.forward(&picked)?;
        let mlm = cross_entropy(&logits, targets, &CrossEntropyOptions::default())?;
        match (&self.nsp, &out.pooled, next_sentence_labels) {
            (Some(nsp), Some(pooled), Some(labels)) => {
                mlm + cross_entropy(&nsp.forward(pooled)?, labels, &Default::default())?
            }
            _ => Ok(mlm),
        }
    }

    /// MLM cross-entropy over labels != -100, plus NSP cross-entropy when given.
    pub fn loss(
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
