//! BERT (Devlin et al.): token + position + segment embeddings, a post-LN encoder stack and a
//! tanh pooler over `[CLS]`. Parameter names are Hugging Face's, under the `bert.` prefix.
//! This module holds everything hone knows about BERT: its config, its parameter names,
//! the encoder, and (in [`heads`]) the heads Hugging Face puts on it.

mod heads;

use std::sync::Arc;

use anyhow::Result as AnyResult;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use heads::{
    BertForPreTraining, BertForSequenceClassification, BertForTokenClassification, MlmHead,
};

use super::config::{Architecture, ModelType};
use super::heads::registry::Build;
use super::heads::{Encoder, EncoderOutput, Head, Net};
use super::layers::{
    onnx_padding_mask, onnx_position_ids, padding_mask, position_ids, Activation, Dropout,
    Embedding, FeedForward, LayerNorm, Linear, ModelMode, MultiHeadAttention, QkvLayout,
    ResidualOrder, TransformerBlock,
};
use super::taps;
use crate::onnx::{self, Axis, TokenInput};

/// BERT-family encoder hyper-parameters (`model_type = "bert"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_gelu")]
    pub hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob` (Hugging Face).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
    /// Attention heads removed from each layer (Transformers' `pruned_heads`: layer number
    /// -> the heads' original numbers); that layer's query, key, value and output
    /// projections are smaller by those heads.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pruned_heads: std::collections::BTreeMap<String, Vec<usize>>,
}

impl BertConfig {
    /// Attention heads left in layer `i`.
    pub fn heads_in_layer(&self, i: usize) -> usize {
        let pruned = self.pruned_heads.get(&i.to_string()).map_or(0, Vec::len);
        self.num_attention_heads.saturating_sub(pruned)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

fn default_gelu() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// The dropout before a classification head: `classifier_dropout`, else the hidden
    /// dropout (Hugging Face's rule, written once).
    pub fn classifier_dropout_prob(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }
}

impl Architecture for BertConfig {
    fn model_type(&self) -> ModelType {
        ModelType::Bert
    }
    fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    fn num_layers(&self) -> usize {
        self.num_hidden_layers
    }
    fn set_num_layers(&mut self, n: usize) -> AnyResult<()> {
        self.num_hidden_layers = n;
        Ok(())
    }
    fn prunable_layer(&self, i: usize) -> Option<super::config::PrunableLayer> {
        let p = self.layer_prefix(i);
        Some(super::config::PrunableLayer {
            query: format!("{p}attention.self.query"),
            key: format!("{p}attention.self.key"),
            value: format!("{p}attention.self.value"),
            attention_output: format!("{p}attention.output.dense"),
            intermediate: format!("{p}intermediate.dense"),
            ffn_output: format!("{p}output.dense"),
            head_dim: self.head_dim(),
        })
    }
    fn record_pruning(
        &mut self,
        i: usize,
        heads: &[usize],
        intermediate_size: usize,
    ) -> AnyResult<()> {
        if !heads.is_empty() {
            let pruned = self.pruned_heads.entry(i.to_string()).or_default();
            pruned.extend_from_slice(heads);
            pruned.sort_unstable();
            pruned.dedup();
            if pruned.len() >= self.num_attention_heads {
                anyhow::bail!("layer {i} would have no attention head left")
            }
        }
        self.intermediate_size = intermediate_size;
        Ok(())
    }
    fn remaining_heads(&self, i: usize) -> Vec<usize> {
        let pruned = self.pruned_heads.get(&i.to_string());
        (0..self.num_attention_heads)
            .filter(|h| !pruned.is_some_and(|p| p.contains(h)))
            .collect()
    }
    fn num_attention_heads(&self) -> usize {
        self.num_attention_heads
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }
    fn initializer_range(&self) -> f64 {
        self.initializer_range
    }
    fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }
    fn set_pad_token_id(&mut self, id: u32) {
        self.pad_token_id = Some(id);
    }
    fn default_head(&self) -> Head {
        Head::Base
    }
    fn base_prefix(&self) -> &'static str {
        "bert."
    }
    fn embedding_prefixes(&self) -> Vec<String> {
        vec!["bert.embeddings.".into()]
    }
    fn layer_prefix(&self, i: usize) -> String {
        format!("bert.{}.", layer_name(i))
    }
    fn position_table(&self) -> Option<String> {
        Some("bert.embeddings.position_embeddings.weight".into())
    }
    fn set_classifier_dropout(&mut self, p: f64) -> AnyResult<()> {
        self.classifier_dropout = Some(p);
        Ok(())
    }
    fn default_lora_targets(&self) -> Vec<String> {
        vec!["query".into(), "value".into()]
    }
    fn stores_transposed(&self, _module: &str) -> bool {
        false
    }
}

/// Word, position and token-type embeddings, summed, normalised and dropped out.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    pub word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    dropout: Dropout,
}

impl BertEmbeddings {
    fn new(vb: VarBuilder, c: &BertConfig, mode: &ModelMode) -> Result<Self> {
        let std = c.initializer_range;
        Ok(Self {
            word: Embedding::new(vb.pp("word_embeddings"), c.vocab_size, c.hidden_size, std)?,
            position: Embedding::new(
                vb.pp("position_embeddings"),
                c.max_position_embeddings,
                c.hidden_size,
                std,
            )?,
            token_type: Embedding::new(
                vb.pp("token_type_embeddings"),
                c.type_vocab_size,
                c.hidden_size,
                std,
            )?,
            norm: LayerNorm::new(vb.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            dropout: Dropout::new(c.hidden_dropout_prob, mode),
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let positions = position_ids(b, t, 0, input_ids.device())?;
        let x = self.word.forward(input_ids)?
            + self.token_type.forward(token_type_ids)?
            + self.position.forward(&positions)?;
        self.dropout.forward(&self.norm.forward(&x?)?)
    }

    fn onnx(
        &self,
        g: &mut onnx::Graph,
        input_ids: &onnx::Value,
        token_type_ids: &onnx::Value,
    ) -> Result<onnx::Value> {
        let positions = onnx_position_ids(g, input_ids);
        let (word, token_type) = (
            self.word.onnx(g, input_ids)?,
            self.token_type.onnx(g, token_type_ids)?,
        );
        let position = self.position.onnx(g, &positions)?;
        let x = g.add(&word, &token_type);
        let x = g.add(&x, &position);
        self.norm.onnx(g, &x)
    }
}

/// Where layer `i` of the encoder lives, under the `bert` prefix.
fn layer_name(i: usize) -> String {
    format!("encoder.layer.{i}")
}

/// BERT layer `i` under [`layer_name`].
fn bert_layer(
    vb: VarBuilder,
    c: &BertConfig,
    i: usize,
    mode: &ModelMode,
) -> Result<TransformerBlock> {
    let (h, std) = (c.hidden_size, c.initializer_range);
    // Pruned heads narrow the attention: [H] -> [heads x head_dim] -> [H].
    let heads = c.heads_in_layer(i);
    let inner = heads * c.head_dim();
    let attn = vb.pp("attention");
    let sa = attn.pp("self");
    let qkv = QkvLayout::Separate {
        q: Linear::new(sa.pp("query"), h, inner, std, mode)?,
        k: Linear::new(sa.pp("key"), h, inner, std, mode)?,
        v: Linear::new(sa.pp("value"), h, inner, std, mode)?,
    };
    let self_attn = MultiHeadAttention::new(
        qkv,
        Linear::new(attn.pp("output").pp("dense"), inner, h, std, mode)?,
        heads,
        Dropout::new(c.attention_probs_dropout_prob, mode),
        mode,
    );
    let ffn = FeedForward::new(
        Linear::new(
            vb.pp("intermediate").pp("dense"),
            h,
            c.intermediate_size,
            std,
            mode,
        )?,
        Linear::new(
            vb.pp("output").pp("dense"),
            c.intermediate_size,
            h,
            std,
            mode,
        )?,
        c.hidden_act,
        None,
    );
    Ok(TransformerBlock {
        self_attn,
        self_attn_norm: LayerNorm::new(attn.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        cross_attn: None,
        ffn,
        ffn_norm: LayerNorm::new(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        dropout: Dropout::new(c.hidden_dropout_prob, mode),
        order: ResidualOrder::PostLn,
    })
}

/// The BERT encoder with an optional pooler; `vb` points at the `bert` prefix.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<TransformerBlock>,
    pooler: Option<Linear>,
    pub config: BertConfig,
}

impl BertModel {
    pub fn new(
        vb: VarBuilder,
        c: &BertConfig,
        with_pooler: bool,
        mode: &ModelMode,
    ) -> Result<Self> {
        let embeddings = BertEmbeddings::new(vb.pp("embeddings"), c, mode)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| bert_layer(vb.pp(layer_name(i)), c, i, mode))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if with_pooler {
            Some(Linear::new(
                vb.pp("pooler").pp("dense"),
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
                mode,
            )?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            pooler,
            config: c.clone(),
        })
    }

    /// `input_ids`, `token_type_ids` and `attention_mask` are `[B, T]` (u32; mask 1/0).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<EncoderOutput> {
        let mask = padding_mask(attention_mask)?;
        let mut x = self.embeddings.forward(input_ids, token_type_ids)?;
        taps::attention_mask(attention_mask);
        taps::hidden_state(&x);
        for layer in &self.layers {
            x = layer.forward(&x, Some(&mask), None, None)?;
            taps::hidden_state(&x);
        }
        let pooled = match &self.pooler {
            Some(p) => Some(p.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?),
            None => None,
        };
        Ok(EncoderOutput {
            sequence: x,
            pooled,
        })
    }

    /// The ONNX twin of [`BertModel::forward`] on the graph's three token inputs: the
    /// final hidden states `[B, T, H]` and the pooled `[CLS]` `[B, H]` when the model has a
    /// pooler.
    pub fn onnx(&self, g: &mut onnx::Graph) -> Result<(onnx::Value, Option<onnx::Value>)> {
        let input_ids = g.token_input(TokenInput::InputIds);
        let attention_mask = g.token_input(TokenInput::AttentionMask);
        let token_type_ids = g.token_input(TokenInput::TokenTypeIds);
        let mask = onnx_padding_mask(g, &attention_mask)?;
        let mut x = self.embeddings.onnx(g, &input_ids, &token_type_ids)?;
        for layer in &self.layers {
            x = layer.onnx(g, &x, &mask)?;
        }
        let pooled = match &self.pooler {
            Some(p) => {
                let first = g.int(0);
                let cls = g.gather(&x, &first, 1);
                let h = p.onnx(g, &cls)?;
                Some(g.tanh(&h))
            }
            None => None,
        };
        Ok((x, pooled))
    }
}

impl Encoder for BertModel {
    fn encode(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<EncoderOutput> {
        self.forward(input_ids, token_type_ids, attention_mask)
    }

    /// `last_hidden_state` `[B, T, H]`, Optimum's feature-extraction output.
    fn onnx(&self, g: &mut onnx::Graph) -> Result<()> {
        let (sequence, _) = BertModel::onnx(self, g)?;
        g.output(
            "last_hidden_state",
            &sequence,
            &[
                Axis::Batch,
                Axis::Sequence,
                Axis::Fixed(self.config.hidden_size),
            ],
        );
        Ok(())
    }
}

// The head registry's builders for BERT (see `model::heads::registry`).

/// `BertModel`, with its pooler when the checkpoint has one.
pub(crate) fn build_base(b: &Build) -> Result<Net> {
    let bert = b.vb.pp("bert");
    let with_pooler = bert.contains_tensor("pooler.dense.weight");
    let model = BertModel::new(bert, b.arch.bert()?, with_pooler, b.mode)?;
    Ok(Net::Base(Arc::new(model)))
}

pub(crate) fn build_sequence_classifier(b: &Build) -> Result<Net> {
    let (num_labels, problem) = (b.head.num_outputs(), b.head.problem());
    let model = BertForSequenceClassification::new(
        b.vb.clone(),
        b.arch.bert()?,
        num_labels,
        problem,
        b.mode,
    )?;
    Ok(Net::SequenceClassifier(Arc::new(model)))
}

pub(crate) fn build_token_classifier(b: &Build) -> Result<Net> {
    let model = BertForTokenClassification::new(
        b.vb.clone(),
        b.arch.bert()?,
        b.head.num_outputs(),
        b.mode,
    )?;
    Ok(Net::TokenClassifier(Arc::new(model)))
}

pub(crate) fn build_pretraining(b: &Build) -> Result<Net> {
    let model = BertForPreTraining::new(b.vb.clone(), b.arch.bert()?, true, b.mode)?;
    Ok(Net::MaskedLm(Arc::new(model)))
}

pub(crate) fn build_masked_lm(b: &Build) -> Result<Net> {
    let model = BertForPreTraining::new(b.vb.clone(), b.arch.bert()?, false, b.mode)?;
    Ok(Net::MaskedLm(Arc::new(model)))
}
