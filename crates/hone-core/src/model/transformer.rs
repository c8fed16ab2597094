//! The original encoder-decoder Transformer (Vaswani et al., 2017): shared token embedding
//! scaled by sqrt(d_model), sinusoidal positions, post-LN encoder and decoder stacks (the
//! decoder with masked self-attention and cross-attention), and an output projection tied
//! to the embedding. Parameter names follow Hugging Face's Marian/BART layout.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{
    causal_mask, padding_mask, Activation, Dropout, Embedding, FeedForward, KvCache, LayerNorm,
    Linear, ModelMode, MultiHeadAttention, QkvLayout, ResidualOrder, SinusoidalPositionalEncoding,
    TransformerBlock,
};

/// Hyper-parameters of [`EncoderDecoder`]; the defaults are the paper's base model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncoderDecoderConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub attention_heads: usize,
    pub ffn_dim: usize,
    pub dropout: f64,
    pub max_position_embeddings: usize,
    pub activation_function: Activation,
    /// `false` for the paper's post-LN, `true` for pre-LN (more stable when deep).
    pub normalize_before: bool,
    pub init_std: f64,
}

impl Default for EncoderDecoderConfig {
    fn default() -> Self {
        Self {
            vocab_size: 37000,
            d_model: 512,
            encoder_layers: 6,
            decoder_layers: 6,
            attention_heads: 8,
            ffn_dim: 2048,
            dropout: 0.1,
            max_position_embeddings: 512,
            activation_function: Activation::Relu,
            normalize_before: false,
            init_std: 0.02,
        }
    }
}

fn attention(
    vb: VarBuilder,
    c: &EncoderDecoderConfig,
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
        c.attention_heads,
        Dropout::new(c.dropout, mode),
        mode,
    ))
}

fn layer(
    vb: VarBuilder,
    c: &EncoderDecoderConfig,
    cross: bool,
    mode: &ModelMode,
) -> Result<TransformerBlock> {
    let d = c.d_model;
    let ln = |name: &str| LayerNorm::new(vb.pp(name), d, 1e-5);
    let cross_attn = if cross {
        Some((
            attention(vb.pp("encoder_attn"), c, mode)?,
            ln("encoder_attn_layer_norm")?,
        ))
    } else {
        None
    };
    let ffn = FeedForward::new(
        Linear::new(vb.pp("fc1"), d, c.ffn_dim, c.init_std, mode)?,
        Linear::new(vb.pp("fc2"), c.ffn_dim, d, c.init_std, mode)?,
        c.activation_function,
        Some(Dropout::new(c.dropout, mode)),
    );
    Ok(TransformerBlock {
        self_attn: attention(vb.pp("self_attn"), c, mode)?,
        self_attn_norm: ln("self_attn_layer_norm")?,
        cross_attn,
        ffn,
        ffn_norm: ln("final_layer_norm")?,
        dropout: Dropout::new(c.dropout, mode),
        order: if c.normalize_before {
            ResidualOrder::PreLn
        } else {
            ResidualOrder::PostLn
        },
    })
}

/// Encoder-decoder Transformer for sequence-to-sequence tasks (translation).
#[derive(Debug, Clone)]
pub struct EncoderDecoder {
    embed: Embedding,
    positions: SinusoidalPositionalEncoding,
    embed_dropout: Dropout,
    encoder: Vec<TransformerBlock>,
    decoder: Vec<TransformerBlock>,
    /// Final norms, present in the pre-LN variant only.
    final_norms: Option<(LayerNorm, LayerNorm)>,
    /// The output projection, tied to `embed`.
    lm_head: Linear,
    pub config: EncoderDecoderConfig,
}

impl EncoderDecoder {
    pub fn new(vb: VarBuilder, c: &EncoderDecoderConfig, mode: &ModelMode) -> Result<Self> {
        let embed = Embedding::new(vb.pp("shared"), c.vocab_size, c.d_model, c.init_std)?;
        let encoder = (0..c.encoder_layers)
            .map(|i| layer(vb.pp(format!("encoder.layers.{i}")), c, false, mode))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..c.decoder_layers)
            .map(|i| layer(vb.pp(format!("decoder.layers.{i}")), c, true, mode))
            .collect::<Result<Vec<_>>>()?;
        let final_norms = if c.normalize_before {
            Some((
                LayerNorm::new(vb.pp("encoder.layer_norm"), c.d_model, 1e-5)?,
                LayerNorm::new(vb.pp("decoder.layer_norm"), c.d_model, 1e-5)?,
            ))
        } else {
            None
        };
        Ok(Self {
            positions: SinusoidalPositionalEncoding::new(
                c.max_position_embeddings,
                c.d_model,
                vb.device(),
            )?,
            lm_head: Linear::from_weight(embed.weight().clone(), None, mode),
            embed,
            embed_dropout: Dropout::new(c.dropout, mode),
            encoder,
            decoder,
            final_norms,
            config: c.clone(),
        })
    }

    fn embed(&self, ids: &Tensor, offset: usize) -> Result<Tensor> {
        let x = (self.embed.forward(ids)? * (self.config.d_model as f64).sqrt())?;
        self.embed_dropout
            .forward(&self.positions.forward(&x, offset)?)
    }

    /// Encoder memory `[B, S, D]` for `src` `[B, S]` with padding mask `src_mask` `[B, S]`.
    pub fn encode(&self, src: &Tensor, src_mask: &Tensor) -> Result<Tensor> {
        let mask = padding_mask(src_mask)?;
        let mut x = self.embed(src, 0)?;
        for layer in &self.encoder {
            x = layer.forward(&x, Some(&mask), None, None)?;
        }
        match &self.final_norms {
            Some((enc, _)) => enc.forward(&x),
            None => Ok(x),
        }
    }

    /// Decoder logits `[B, T, vocab]` for `tgt` `[B, T]` given the encoder memory. With a
    /// cache, `tgt` holds only the new positions.
    pub fn decode(
        &self,
        tgt: &Tensor,
        memory: &Tensor,
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
                Some((memory, Some(&memory_mask))),
                layer_cache,
            )?;
        }
        if let Some((_, dec)) = &self.final_norms {
            x = dec.forward(&x)?;
        }
        self.lm_head.forward(&x)
    }

    /// A fresh decoder cache.
    pub fn new_cache(&self) -> Vec<KvCache> {
        vec![KvCache::default(); self.decoder.len()]
    }

    pub fn forward(&self, src: &Tensor, src_mask: &Tensor, tgt: &Tensor) -> Result<Tensor> {
        let memory = self.encode(src, src_mask)?;
        self.decode(tgt, &memory, src_mask, None)
    }
}
