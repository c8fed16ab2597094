//! The heads Hugging Face puts on the BERT encoder, with its semantics and tensor names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{BertConfig, BertModel};
use crate::model::heads::{
    EncoderOutput, MaskedLm, PreTrainingOutput, ProblemType, SequenceClassifier, TokenClassifier,
};
use crate::model::layers::{Activation, Dropout, LayerNorm, Linear, ModelMode};
use crate::onnx::{self, Axis};
use crate::ops::{cross_entropy, CrossEntropyOptions};

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
    mode: &ModelMode,
) -> Result<(Dropout, Linear)> {
    let p = c.classifier_dropout_prob();
    let classifier = Linear::new(
        vb.pp("classifier"),
        c.hidden_size,
        num_labels,
        c.initializer_range,
        mode,
    )?;
    Ok((Dropout::new(p, mode), classifier))
}

impl BertForSequenceClassification {
    pub fn new(
        vb: VarBuilder,
        c: &BertConfig,
        num_labels: usize,
        problem: ProblemType,
        mode: &ModelMode,
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
}

impl SequenceClassifier for BertForSequenceClassification {
    /// Logits `[B, num_labels]` from the pooled `[CLS]`.
    fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let EncoderOutput { pooled, .. } = self.bert.forward(ids, type_ids, mask)?;
        let pooled = pooled.expect("built with a pooler");
        self.classifier.forward(&self.dropout.forward(&pooled)?)
    }

    fn problem(&self) -> ProblemType {
        self.problem
    }

    /// `logits` `[B, num_labels]`.
    fn onnx(&self, g: &mut onnx::Graph) -> Result<()> {
        let (_, pooled) = self.bert.onnx(g)?;
        let pooled = pooled.expect("built with a pooler");
        let logits = self.classifier.onnx(g, &pooled)?;
        let labels = self.classifier.weight().dim(0)?;
        g.output("logits", &logits, &[Axis::Batch, Axis::Fixed(labels)]);
        Ok(())
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
        mode: &ModelMode,
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
}

impl TokenClassifier for BertForTokenClassification {
    /// Logits `[B, T, num_labels]`.
    fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let out = self.bert.forward(ids, type_ids, mask)?;
        self.classifier
            .forward(&self.dropout.forward(&out.sequence)?)
    }

    /// `logits` `[B, T, num_labels]`.
    fn onnx(&self, g: &mut onnx::Graph) -> Result<()> {
        let (sequence, _) = self.bert.onnx(g)?;
        let logits = self.classifier.onnx(g, &sequence)?;
        let labels = self.classifier.weight().dim(0)?;
        g.output(
            "logits",
            &logits,
            &[Axis::Batch, Axis::Sequence, Axis::Fixed(labels)],
        );
        Ok(())
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
    fn new(
        vb: VarBuilder,
        c: &BertConfig,
        word_embeddings: &Tensor,
        mode: &ModelMode,
    ) -> Result<Self> {
        let t = vb.pp("transform");
        let bias = vb.get_with_hints(c.vocab_size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self {
            dense: Linear::new(
                t.pp("dense"),
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
                mode,
            )?,
            act: c.hidden_act,
            norm: LayerNorm::new(t.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            decoder: Linear::from_weight(word_embeddings.clone(), Some(bias), mode),
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

/// `BertForPreTraining`: masked LM over every position plus next-sentence prediction on the
/// pooled `[CLS]`. With `nsp = false` it is `BertForMaskedLM` (no pooler, no NSP head).
#[derive(Debug, Clone)]
pub struct BertForPreTraining {
    pub bert: BertModel,
    pub mlm: MlmHead,
    nsp: Option<Linear>,
}

impl BertForPreTraining {
    pub fn new(vb: VarBuilder, c: &BertConfig, nsp: bool, mode: &ModelMode) -> Result<Self> {
        let bert = BertModel::new(vb.pp("bert"), c, nsp, mode)?;
        let cls = vb.pp("cls");
        let mlm = MlmHead::new(
            cls.pp("predictions"),
            c,
            bert.embeddings.word.weight(),
            mode,
        )?;
        let nsp = if nsp {
            Some(Linear::new(
                cls.pp("seq_relationship"),
                c.hidden_size,
                2,
                c.initializer_range,
                mode,
            )?)
        } else {
            None
        };
        Ok(Self { bert, mlm, nsp })
    }
}

impl MaskedLm for BertForPreTraining {
    fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<PreTrainingOutput> {
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

    /// The training loss of [`MaskedLm::loss`] without the vocabulary logits of unmasked
    /// positions: the encoder runs over every token, but the MLM head only over the flat
    /// `positions` (`b * T + t`, u32) whose labels are `targets` (i64). The value and the
    /// gradients are those of the full loss (the skipped rows carry label -100); the
    /// decoder's `[B*T, vocab]` product, the largest in a small BERT, shrinks to the 15% of
    /// rows that count.
    fn masked_loss(
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
}
