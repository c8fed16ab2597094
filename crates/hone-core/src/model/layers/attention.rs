use candle_core::{DType, Device, Result, Tensor};

use super::{Dropout, Linear, ModelMode};
use crate::ops::{self, KvCache, Qkv};

/// Added to the scores of positions that must not be attended to. Large enough that its
/// softmax weight is exactly zero in f32 and bf16, small enough that sums of two stay finite.
pub const MASK_VALUE: f32 = -1e9;

/// Additive mask `[B, 1, 1, Tk]` from a `[B, Tk]` attention mask of 1 (token) / 0 (padding).
pub fn padding_mask(attention_mask: &Tensor) -> Result<Tensor> {
    let keep = attention_mask.to_dtype(DType::F32)?;
    let (b, t) = keep.dims2()?;
    ((1.0 - keep)? * MASK_VALUE as f64)?.reshape((b, 1, 1, t))
}

/// Additive mask `[1, 1, Tq, Tk]` that lets query `i` (at absolute position `offset + i`)
/// see keys `0..=offset + i` only.
pub fn causal_mask(tq: usize, tk: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| if j > offset + i { MASK_VALUE } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (1, 1, tq, tk), device)
}

/// How the query/key/value projections are stored.
#[derive(Debug, Clone)]
pub enum QkvLayout {
    /// Three matrices (BERT, the original Transformer).
    Separate { q: Linear, k: Linear, v: Linear },
    /// One `d -> 3d` matrix (GPT-2's `c_attn`); self-attention only.
    Fused(Linear),
}

/// Multi-head attention: project, attend (heads split and merged inside the op), project
/// back. Self-attention when `memory` is None, cross-attention over `memory` otherwise.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    qkv: QkvLayout,
    out: Linear,
    n_heads: usize,
    attn_dropout: Dropout,
    /// The products run in the model's autocast dtype.
    mode: ModelMode,
}

impl MultiHeadAttention {
    pub fn new(
        qkv: QkvLayout,
        out: Linear,
        n_heads: usize,
        attn_dropout: Dropout,
        mode: &ModelMode,
    ) -> Self {
        Self {
            qkv,
            out,
            n_heads,
            attn_dropout,
            mode: mode.clone(),
        }
    }

    /// `out(softmax(Q K^T / sqrt(d) + mask) V)` for `x [B, T, d_model]`, with K and V from
    /// `memory` if given and appended to `cache` if given.
    pub fn forward(
        &self,
        x: &Tensor,
        memory: Option<&Tensor>,
        mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let qkv = match (&self.qkv, memory) {
            (QkvLayout::Separate { q, k, v }, memory) => {
                let kv = memory.unwrap_or(x);
                Qkv::Separate {
                    q: q.forward(x)?,
                    k: k.forward(kv)?,
                    v: v.forward(kv)?,
                }
            }
            (QkvLayout::Fused(qkv), None) => Qkv::Packed(qkv.forward(x)?),
            (QkvLayout::Fused(_), Some(_)) => {
                candle_core::bail!("a fused QKV projection cannot attend over a memory")
            }
        };
        let dropout = Some(&self.attn_dropout as &dyn ops::KeepMask);
        let y = ops::attention(
            qkv,
            self.n_heads,
            mask,
            dropout,
            cache,
            self.mode.autocast(),
        )?;
        self.out.forward(&y)
    }
}
