//! GPT-2 (Radford et al.): learned positions, a pre-LN decoder-only stack with causal
//! self-attention and a final LayerNorm. Parameter names are Hugging Face's
//! (`transformer.h.{i}.attn.c_attn`, ...). This module holds everything hone knows about
//! GPT-2: its config, its parameter names, the base model, and (in [`heads`]) its heads.

mod heads;

use std::sync::Arc;

use anyhow::Result as AnyResult;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use heads::{Gpt2ForSequenceClassification, Gpt2LmHeadModel};

use super::config::{Architecture, ModelType};
use super::heads::registry::Build;
use super::heads::{Head, Net};
use super::layers::{
    causal_mask, onnx_causal_mask, onnx_padding_mask, onnx_position_ids, padding_mask,
    position_ids, Activation, Dropout, Embedding, FeedForward, KvCache, LayerNorm, Linear,
    ModelMode, MultiHeadAttention, QkvLayout, ResidualOrder, TransformerBlock,
};
use crate::onnx::{self, TokenInput};

/// GPT-2 decoder hyper-parameters (`model_type = "gpt2"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_positions: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_gelu_new")]
    pub activation_function: Activation,
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
    /// The sequence classifier pools at the last token that is not this one.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

fn default_gelu_new() -> Activation {
    Activation::GeluTanh
}
fn default_dropout() -> f64 {
    0.1
}
fn default_eps() -> f64 {
    1e-5
}
fn default_init_range() -> f64 {
    0.02
}

impl Gpt2Config {
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

impl Architecture for Gpt2Config {
    fn model_type(&self) -> ModelType {
        ModelType::Gpt2
    }
    fn hidden_size(&self) -> usize {
        self.n_embd
    }
    fn num_layers(&self) -> usize {
        self.n_layer
    }
    fn set_num_layers(&mut self, n: usize) -> AnyResult<()> {
        self.n_layer = n;
        Ok(())
    }
    fn num_attention_heads(&self) -> usize {
        self.n_head
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.n_positions
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
    fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }
    fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }
    /// `GPT2Model` checkpoints carry the weights of the tied LM head already.
    fn default_head(&self) -> Head {
        Head::CausalLm
    }
    fn base_prefix(&self) -> &'static str {
        "transformer."
    }
    fn embedding_prefixes(&self) -> Vec<String> {
        vec!["transformer.wte.".into(), "transformer.wpe.".into()]
    }
    fn layer_prefix(&self, i: usize) -> String {
        format!("transformer.{}.", layer_name(i))
    }
    fn position_table(&self) -> Option<String> {
        Some("transformer.wpe.weight".into())
    }
    fn default_lora_targets(&self) -> Vec<String> {
        vec!["c_attn".into()]
    }
    /// Every linear layer inside the stack is a `Conv1D`; the heads (`score`) are not.
    fn stores_transposed(&self, module: &str) -> bool {
        module.starts_with(self.base_prefix())
    }
    fn set_classifier_dropout(&mut self, _p: f64) -> AnyResult<()> {
        anyhow::bail!(
            "classifier_dropout: GPT-2's sequence classifier has no dropout before its `score` layer (as in Hugging Face)"
        )
    }
}

/// Where block `i` lives, under the `transformer` prefix.
fn layer_name(i: usize) -> String {
    format!("h.{i}")
}

fn gpt2_block(vb: VarBuilder, c: &Gpt2Config, mode: &ModelMode) -> Result<TransformerBlock> {
    let (d, std) = (c.n_embd, c.initializer_range);
    // GPT-2 scales the init of residual projections by 1/sqrt(2 * n_layer).
    let proj_std = std / (2.0 * c.n_layer as f64).sqrt();
    let self_attn = MultiHeadAttention::new(
        QkvLayout::Fused(Linear::conv1d(vb.pp("attn.c_attn"), d, 3 * d, std, mode)?),
        Linear::conv1d(vb.pp("attn.c_proj"), d, d, proj_std, mode)?,
        c.n_head,
        Dropout::new(c.attn_pdrop, mode),
        mode,
    );
    let ffn = FeedForward::new(
        Linear::conv1d(vb.pp("mlp.c_fc"), d, c.inner_dim(), std, mode)?,
        Linear::conv1d(vb.pp("mlp.c_proj"), c.inner_dim(), d, proj_std, mode)?,
        c.activation_function,
        None,
    );
    Ok(TransformerBlock {
        self_attn,
        self_attn_norm: LayerNorm::new(vb.pp("ln_1"), d, c.layer_norm_epsilon)?,
        cross_attn: None,
        ffn,
        ffn_norm: LayerNorm::new(vb.pp("ln_2"), d, c.layer_norm_epsilon)?,
        dropout: Dropout::new(c.resid_pdrop, mode),
        order: ResidualOrder::PreLn,
    })
}

/// The GPT-2 stack without a head (`GPT2Model`); `vb` points at the `transformer` prefix.
#[derive(Debug, Clone)]
pub struct Gpt2Model {
    wte: Embedding,
    wpe: Embedding,
    drop: Dropout,
    blocks: Vec<TransformerBlock>,
    ln_f: LayerNorm,
    pub config: Gpt2Config,
}

impl Gpt2Model {
    pub fn new(vb: VarBuilder, c: &Gpt2Config, mode: &ModelMode) -> Result<Self> {
        let std = c.initializer_range;
        Ok(Self {
            wte: Embedding::new(vb.pp("wte"), c.vocab_size, c.n_embd, std)?,
            wpe: Embedding::new(vb.pp("wpe"), c.n_positions, c.n_embd, std)?,
            drop: Dropout::new(c.embd_pdrop, mode),
            blocks: (0..c.n_layer)
                .map(|i| gpt2_block(vb.pp(layer_name(i)), c, mode))
                .collect::<Result<Vec<_>>>()?,
            ln_f: LayerNorm::new(vb.pp("ln_f"), c.n_embd, c.layer_norm_epsilon)?,
            config: c.clone(),
        })
    }

    /// The token embedding `[vocab, D]` (the LM head is tied to it).
    pub fn wte(&self) -> &Tensor {
        self.wte.weight()
    }

    /// A fresh cache, one entry per layer, for incremental decoding.
    pub fn new_cache(&self) -> Vec<KvCache> {
        vec![KvCache::default(); self.blocks.len()]
    }

    /// Final hidden states `[B, T, D]` for `input_ids` `[B, T]`. With a cache, the ids are
    /// the new positions only and the cache grows by T.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        mut cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let offset = cache.as_ref().map_or(0, |c| c[0].len());
        if offset + t > self.config.n_positions {
            candle_core::bail!(
                "sequence of {} tokens exceeds the model's {} positions",
                offset + t,
                self.config.n_positions
            )
        }
        let positions = position_ids(b, t, offset, input_ids.device())?;
        let x = (self.wte.forward(input_ids)? + self.wpe.forward(&positions)?)?;
        let mut x = self.drop.forward(&x)?;
        let mut mask = causal_mask(t, offset + t, offset, input_ids.device())?;
        if let Some(m) = attention_mask {
            mask = mask.broadcast_add(&padding_mask(m)?)?;
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c[i]);
            x = block.forward(&x, Some(&mask), None, layer_cache)?;
        }
        self.ln_f.forward(&x)
    }

    /// The ONNX twin of [`Gpt2Model::forward`] without a cache, on the graph's
    /// `input_ids` and `attention_mask`: final hidden states `[B, T, D]`.
    pub fn onnx(&self, g: &mut onnx::Graph) -> Result<onnx::Value> {
        let input_ids = g.token_input(TokenInput::InputIds);
        let attention_mask = g.token_input(TokenInput::AttentionMask);
        let positions = onnx_position_ids(g, &input_ids);
        let (tokens, positions_emb) =
            (self.wte.onnx(g, &input_ids)?, self.wpe.onnx(g, &positions)?);
        let mut x = g.add(&tokens, &positions_emb);
        // [T, T] + [B, 1, 1, T] -> [B, 1, T, T]
        let causal = onnx_causal_mask(g, &positions)?;
        let padding = onnx_padding_mask(g, &attention_mask)?;
        let mask = g.add(&causal, &padding);
        for block in &self.blocks {
            x = block.onnx(g, &x, &mask)?;
        }
        self.ln_f.onnx(g, &x)
    }
}

// The head registry's builders for GPT-2 (see `model::heads::registry`).

pub(crate) fn build_causal_lm(b: &Build) -> Result<Net> {
    let model = Gpt2LmHeadModel::new(b.vb.clone(), b.arch.gpt2()?, b.mode)?;
    Ok(Net::CausalLm(Arc::new(model)))
}

pub(crate) fn build_sequence_classifier(b: &Build) -> Result<Net> {
    let (num_labels, problem) = (b.head.num_outputs(), b.head.problem());
    let model = Gpt2ForSequenceClassification::new(
        b.vb.clone(),
        b.arch.gpt2()?,
        num_labels,
        problem,
        b.mode,
    )?;
    Ok(Net::SequenceClassifier(Arc::new(model)))
}
