//! GPT-2 (Radford et al.): learned positions, a pre-LN decoder-only stack with causal
//! self-attention, a final LayerNorm and an LM head tied to the token embedding.
//! Parameter names are Hugging Face's (`transformer.h.{i}.attn.c_attn`, ...).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::Gpt2Config;
use super::layers::{
    causal_mask, padding_mask, position_ids, Dropout, Embedding, FeedForward, KvCache, LayerNorm,
    Linear, MultiHeadAttention, QkvLayout, ResidualOrder, TrainingMode, TransformerBlock,
};
use crate::ops::{cross_entropy, CrossEntropyOptions};

fn gpt2_block(vb: VarBuilder, c: &Gpt2Config, mode: &TrainingMode) -> Result<TransformerBlock> {
    let (d, std) = (c.n_embd, c.initializer_range);
    // GPT-2 scales the init of residual projections by 1/sqrt(2 * n_layer).
    let proj_std = std / (2.0 * c.n_layer as f64).sqrt();
    let self_attn = MultiHeadAttention::new(
        QkvLayout::Fused(Linear::conv1d(vb.pp("attn.c_attn"), d, 3 * d, std)?),
        Linear::conv1d(vb.pp("attn.c_proj"), d, d, proj_std)?,
        c.n_head,
        Dropout::new(c.attn_pdrop, mode),
    );
    let ffn = FeedForward::new(
        Linear::conv1d(vb.pp("mlp.c_fc"), d, c.inner_dim(), std)?,
        Linear::conv1d(vb.pp("mlp.c_proj"), c.inner_dim(), d, proj_std)?,
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

/// GPT-2 with its language-modelling head; `vb` is the model root (names start with
/// `transformer.`).
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    wte: Embedding,
    wpe: Embedding,
    drop: Dropout,
    blocks: Vec<TransformerBlock>,
    ln_f: LayerNorm,
    pub config: Gpt2Config,
}

impl Gpt2LmHeadModel {
    pub fn new(vb: VarBuilder, c: &Gpt2Config, mode: &TrainingMode) -> Result<Self> {
        let t = vb.pp("transformer");
        let std = c.initializer_range;
        Ok(Self {
            wte: Embedding::new(t.pp("wte"), c.vocab_size, c.n_embd, std)?,
            wpe: Embedding::new(t.pp("wpe"), c.n_positions, c.n_embd, std)?,
            drop: Dropout::new(c.embd_pdrop, mode),
            blocks: (0..c.n_layer)
                .map(|i| gpt2_block(t.pp(format!("h.{i}")), c, mode))
                .collect::<Result<Vec<_>>>()?,
            ln_f: LayerNorm::new(t.pp("ln_f"), c.n_embd, c.layer_norm_epsilon)?,
            config: c.clone(),
        })
    }

    /// The device the weights live on (inputs must be built there).
    pub fn device(&self) -> &candle_core::Device {
        self.wte.weight().device()
    }

    /// A fresh cache, one entry per layer, for incremental decoding.
    pub fn new_cache(&self) -> Vec<KvCache> {
        vec![KvCache::default(); self.blocks.len()]
    }

    /// Final hidden states `[B, T, D]` for `input_ids` `[B, T]`. With a cache, the ids are
    /// the new positions only and the cache grows by T.
    pub fn hidden_states(
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

    /// Logits `[B, T, vocab]` through the LM head tied to `wte`.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor> {
        let h = self.hidden_states(input_ids, attention_mask, cache)?;
        Linear::from_weight(self.wte.weight().clone(), None).forward(&h)
    }

    /// Causal-LM loss with `labels` `[B, T]` (i64, -100 ignored), shifted inside as in
    /// Hugging Face: position t predicts label t+1.
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
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
