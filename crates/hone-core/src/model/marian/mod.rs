//! Marian (`model_type = "marian"`): the original encoder-decoder Transformer of Vaswani et
//! al. A shared token embedding scaled by sqrt(d_model), sinusoidal positions (computed,
//! never stored), post-LN encoder and decoder stacks (the decoder with causal
//! self-attention and cross-attention over the encoder), and an output projection tied to
//! the embedding plus `final_logits_bias`. Parameter names are Hugging Face's
//! (`model.encoder.layers.{i}.self_attn.q_proj`, ...), so `MarianMTModel` directories load
//! both ways. This module holds everything hone knows about Marian; its head is in
//! [`heads`].

mod heads;

use std::sync::Arc;

use anyhow::Result as AnyResult;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

pub use heads::MarianMtModel;

use super::config::{Architecture, ModelType};
use super::heads::registry::Build;
use super::heads::{Head, Net};
use super::layers::{
    causal_mask, padding_mask, Activation, Dropout, Embedding, FeedForward, KvCache, LayerNorm,
    Linear, ModelMode, MultiHeadAttention, QkvLayout, ResidualOrder, SinusoidalPositionalEncoding,
    TransformerBlock,
};

/// Marian's hyper-parameters, with Hugging Face's names and `MarianConfig`'s defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MarianConfig {
    pub vocab_size: usize,
    /// The decoder's vocabulary when it differs from the encoder's.
    #[serde(default)]
    pub decoder_vocab_size: Option<usize>,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_attention_heads: usize,
    pub decoder_attention_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_gelu")]
    pub activation_function: Activation,
    /// Multiply token embeddings by sqrt(d_model) (every opus-mt checkpoint does).
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default = "yes")]
    pub share_encoder_decoder_embeddings: bool,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Dropout on embeddings and on every sub-layer's output.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Dropout on the attention probabilities.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Dropout between the two FFN projections.
    #[serde(default)]
    pub activation_dropout: f64,
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    pub pad_token_id: u32,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    #[serde(default)]
    pub forced_eos_token_id: Option<u32>,
    /// hone's pre-LN variant (`x + f(LN(x))`, a final LayerNorm per stack), more stable when
    /// deep. Transformers' Marian has no such option: such a directory loads in hone only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalize_before: bool,
}

fn default_max_positions() -> usize {
    1024
}
fn default_gelu() -> Activation {
    Activation::Gelu
}
fn yes() -> bool {
    true
}
fn default_dropout() -> f64 {
    0.1
}
fn default_init_std() -> f64 {
    0.02
}

impl MarianConfig {
    /// A model of the given sizes with Marian's usual settings (swish, scaled embeddings,
    /// shared and tied vocabulary) and special ids `pad`, `eos` (decoding starts at pad).
    pub fn new(sizes: MarianSizes, vocab_size: usize, pad: u32, eos: u32) -> Self {
        Self {
            vocab_size,
            decoder_vocab_size: None,
            d_model: sizes.d_model,
            encoder_layers: sizes.layers,
            decoder_layers: sizes.layers,
            encoder_attention_heads: sizes.heads,
            decoder_attention_heads: sizes.heads,
            encoder_ffn_dim: sizes.ffn_dim,
            decoder_ffn_dim: sizes.ffn_dim,
            max_position_embeddings: sizes.max_positions,
            activation_function: Activation::Swish,
            scale_embedding: true,
            share_encoder_decoder_embeddings: true,
            tie_word_embeddings: true,
            dropout: sizes.dropout,
            attention_dropout: sizes.dropout,
            activation_dropout: sizes.dropout,
            init_std: 0.02,
            pad_token_id: pad,
            eos_token_id: eos,
            decoder_start_token_id: pad,
            forced_eos_token_id: Some(eos),
            normalize_before: false,
        }
    }

    fn embed_scale(&self) -> f64 {
        match self.scale_embedding {
            true => (self.d_model as f64).sqrt(),
            false => 1.0,
        }
    }
}

/// The sizes of a fresh [`MarianConfig`].
#[derive(Debug, Clone, Copy)]
pub struct MarianSizes {
    pub d_model: usize,
    /// Encoder and decoder layers each.
    pub layers: usize,
    pub heads: usize,
    pub ffn_dim: usize,
    pub max_positions: usize,
    pub dropout: f64,
}

impl Architecture for MarianConfig {
    fn model_type(&self) -> ModelType {
        ModelType::Marian
    }
    fn hidden_size(&self) -> usize {
        self.d_model
    }
    /// The encoder's layers (what `freeze_layers` counts).
    fn num_layers(&self) -> usize {
        self.encoder_layers
    }
    fn set_num_layers(&mut self, _n: usize) -> AnyResult<()> {
        anyhow::bail!(
            "an encoder-decoder has two stacks of layers: a layer subset is not defined for it yet"
        )
    }
    fn num_attention_heads(&self) -> usize {
        self.encoder_attention_heads
    }
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn max_positions(&self) -> usize {
        self.max_position_embeddings
    }
    fn initializer_range(&self) -> f64 {
        self.init_std
    }
    fn pad_token_id(&self) -> Option<u32> {
        Some(self.pad_token_id)
    }
    fn set_pad_token_id(&mut self, id: u32) {
        self.pad_token_id = id;
    }
    fn eos_token_id(&self) -> Option<u32> {
        Some(self.eos_token_id)
    }
    fn default_head(&self) -> Head {
        Head::Seq2SeqLm
    }
    fn base_prefix(&self) -> &'static str {
        "model."
    }
    fn embedding_prefixes(&self) -> Vec<String> {
        vec!["model.shared.".into()]
    }
    fn layer_prefix(&self, i: usize) -> String {
        format!("model.encoder.layers.{i}.")
    }
    /// The positions are computed sinusoids, not a parameter.
    fn position_table(&self) -> Option<String> {
        None
    }
    fn set_classifier_dropout(&mut self, _p: f64) -> AnyResult<()> {
        anyhow::bail!("classifier_dropout: a Marian translation model has no classifier")
    }
    /// PEFT's mapping for marian.
    fn default_lora_targets(&self) -> Vec<String> {
        vec!["q_proj".into(), "v_proj".into()]
    }
    fn stores_transposed(&self, _module: &str) -> bool {
        false
    }
}

fn attention(
    vb: VarBuilder,
    c: &MarianConfig,
    heads: usize,
    mode: &ModelMode,
) -> Result<MultiHeadAttention> {
    let (d, std) = (c.d_model, c.init_std);
    let qkv = QkvLayout::Separate {
        q: Linear::new(vb.pp("q_proj"), d, d, std, mode)?,
        k: Linear::new(vb.pp("k_proj"), d, d, std, mode)?,
        v: Linear::new(vb.pp("v_proj"), d, d, std, mode)?,
    };
    Ok(MultiHeadAttention::new(
        qkv,
        Linear::new(vb.pp("out_proj"), d, d, std, mode)?,
        heads,
        Dropout::new(c.attention_dropout, mode),
        mode,
    ))
}

/// An encoder layer, or with `cross` a decoder layer.
fn layer(
    vb: VarBuilder,
    c: &MarianConfig,
    cross: bool,
    mode: &ModelMode,
) -> Result<TransformerBlock> {
    let d = c.d_model;
    let (heads, ffn_dim) = match cross {
        false => (c.encoder_attention_heads, c.encoder_ffn_dim),
        true => (c.decoder_attention_heads, c.decoder_ffn_dim),
    };
    let ln = |name: &str| LayerNorm::new(vb.pp(name), d, 1e-5);
    let cross_attn = match cross {
        true => Some((
            attention(vb.pp("encoder_attn"), c, heads, mode)?,
            ln("encoder_attn_layer_norm")?,
        )),
        false => None,
    };
    let ffn = FeedForward::new(
        Linear::new(vb.pp("fc1"), d, ffn_dim, c.init_std, mode)?,
        Linear::new(vb.pp("fc2"), ffn_dim, d, c.init_std, mode)?,
        c.activation_function,
        Some(Dropout::new(c.activation_dropout, mode)),
    );
    Ok(TransformerBlock {
        self_attn: attention(vb.pp("self_attn"), c, heads, mode)?,
        self_attn_norm: ln("self_attn_layer_norm")?,
        cross_attn,
        ffn,
        ffn_norm: ln("final_layer_norm")?,
        dropout: Dropout::new(c.dropout, mode),
        order: match c.normalize_before {
            true => ResidualOrder::PreLn,
            false => ResidualOrder::PostLn,
        },
    })
}

/// The encoder-decoder without its LM head (`MarianModel`); `vb` points at the `model`
/// prefix.
#[derive(Debug, Clone)]
pub struct MarianModel {
    /// Source and target tokens share one table (`model.shared`).
    shared: Embedding,
    positions: SinusoidalPositionalEncoding,
    dropout: Dropout,
    encoder: Vec<TransformerBlock>,
    decoder: Vec<TransformerBlock>,
    /// Each stack's final LayerNorm, in the pre-LN variant only.
    final_norms: Option<(LayerNorm, LayerNorm)>,
    pub config: MarianConfig,
}

impl MarianModel {
    pub fn new(vb: VarBuilder, c: &MarianConfig, mode: &ModelMode) -> Result<Self> {
        if !c.share_encoder_decoder_embeddings
            || c.decoder_vocab_size.is_some_and(|v| v != c.vocab_size)
        {
            candle_core::bail!(
                "hone's Marian needs one vocabulary for source and target (share_encoder_decoder_embeddings = true)"
            )
        }
        let shared = Embedding::new(vb.pp("shared"), c.vocab_size, c.d_model, c.init_std)?
            .with_padding_idx(Some(c.pad_token_id));
        let final_norms = match c.normalize_before {
            true => Some((
                LayerNorm::new(vb.pp("encoder.layer_norm"), c.d_model, 1e-5)?,
                LayerNorm::new(vb.pp("decoder.layer_norm"), c.d_model, 1e-5)?,
            )),
            false => None,
        };
        Ok(Self {
            positions: SinusoidalPositionalEncoding::new(
                c.max_position_embeddings,
                c.d_model,
                vb.device(),
            )?,
            shared,
            dropout: Dropout::new(c.dropout, mode),
            encoder: (0..c.encoder_layers)
                .map(|i| layer(vb.pp(format!("encoder.layers.{i}")), c, false, mode))
                .collect::<Result<Vec<_>>>()?,
            decoder: (0..c.decoder_layers)
                .map(|i| layer(vb.pp(format!("decoder.layers.{i}")), c, true, mode))
                .collect::<Result<Vec<_>>>()?,
            final_norms,
            config: c.clone(),
        })
    }

    /// The shared token table `[vocab, D]` (the tied LM head reuses it).
    pub fn shared(&self) -> &Tensor {
        self.shared.weight()
    }

    /// `dropout(embed(ids) * sqrt(d) + PE[offset..])`: `[B, T, D]`.
    fn embed(&self, ids: &Tensor, offset: usize) -> Result<Tensor> {
        let x = (self.shared.forward(ids)? * self.config.embed_scale())?;
        self.dropout.forward(&self.positions.forward(&x, offset)?)
    }

    /// Encoder states `[B, S, D]` for `src` `[B, S]` with padding mask `src_mask` `[B, S]`.
    pub fn encode(&self, src: &Tensor, src_mask: &Tensor) -> Result<Tensor> {
        let mask = padding_mask(src_mask)?;
        let mut x = self.embed(src, 0)?;
        for layer in &self.encoder {
            x = layer.forward(&x, Some(&mask), None, None)?;
        }
        match &self.final_norms {
            Some((norm, _)) => norm.forward(&x),
            None => Ok(x),
        }
    }

    /// Decoder states `[B, T, D]` for `tgt` `[B, T]` given the encoder states. With a
    /// cache, `tgt` holds only the new positions.
    pub fn decode(
        &self,
        tgt: &Tensor,
        states: &Tensor,
        src_mask: &Tensor,
        mut cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor> {
        let t = tgt.dim(1)?;
        let offset = cache.as_ref().map_or(0, |c| c[0].len());
        let self_mask = causal_mask(t, offset + t, offset, tgt.device())?;
        let memory_mask = padding_mask(src_mask)?;
        let mut x = self.embed(tgt, offset)?;
        for (i, layer) in self.decoder.iter().enumerate() {
            let layer_cache = cache.as_mut().map(|c| &mut c[i]);
            x = layer.forward(
                &x,
                Some(&self_mask),
                Some((states, Some(&memory_mask))),
                layer_cache,
            )?;
        }
        match &self.final_norms {
            Some((_, norm)) => norm.forward(&x),
            None => Ok(x),
        }
    }

    /// A fresh decoder cache.
    pub fn new_cache(&self) -> Vec<KvCache> {
        vec![KvCache::default(); self.decoder.len()]
    }
}

// The head registry's builder for Marian (see `model::heads::registry`).

pub(crate) fn build_seq2seq_lm(b: &Build) -> Result<Net> {
    let model = MarianMtModel::new(b.vb.clone(), b.arch.marian()?, b.mode)?;
    Ok(Net::Seq2SeqLm(Arc::new(model)))
}
