use std::sync::{Arc, OnceLock};

use candle_core::{DType, Device, Result, Tensor};

use super::{Dropout, Linear, ModelMode};
use crate::model::taps;
use crate::onnx;
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

/// [`MASK_VALUE`] as a graph constant; in half precision, the lowest finite f16 instead.
fn onnx_mask_value(g: &mut onnx::Graph) -> Result<onnx::Value> {
    let value = match g.float_type() {
        onnx::ElemType::F16 => half::f16::MIN.to_f32(),
        _ => MASK_VALUE,
    };
    g.constant(&[value], &[])
}

/// The ONNX twin of [`padding_mask`]: int64 `attention_mask [B, T]` -> additive
/// `[B, 1, 1, T]` in the graph's float type.
pub fn onnx_padding_mask(g: &mut onnx::Graph, attention_mask: &onnx::Value) -> Result<onnx::Value> {
    let keep = g.cast_float(attention_mask);
    let (one, big) = (g.constant(&[1.0], &[])?, onnx_mask_value(g)?);
    let drop = g.sub(&one, &keep);
    let mask = g.mul(&drop, &big);
    Ok(g.unsqueeze(&mask, &[1, 2]))
}

/// The ONNX twin of [`causal_mask`] without a cache: additive `[T, T]` for `positions`
/// `[T]` (int64), the mask value where a key comes after its query.
pub fn onnx_causal_mask(g: &mut onnx::Graph, positions: &onnx::Value) -> Result<onnx::Value> {
    let queries = g.unsqueeze(positions, &[1]);
    let keys = g.unsqueeze(positions, &[0]);
    let future = g.greater(&keys, &queries);
    let (big, zero) = (onnx_mask_value(g)?, g.constant(&[0.0], &[])?);
    Ok(g.where_(&future, &big, &zero))
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
    /// Separate query/key/value stacked into one product for inference (one pass over
    /// the input instead of three), made on first use; None where they cannot be.
    stacked_qkv: Arc<OnceLock<Option<Linear>>>,
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
            stacked_qkv: Arc::default(),
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
                match self.stacked(q, k, v, memory, &cache) {
                    // [B, T, 3 d]: q, k and v side by side, as GPT-2's c_attn gives them.
                    Some(qkv) => Qkv::Packed(qkv.forward(x)?),
                    None => {
                        let kv = memory.unwrap_or(x);
                        Qkv::Separate {
                            q: q.forward(x)?,
                            k: k.forward(kv)?,
                            v: v.forward(kv)?,
                        }
                    }
                }
            }
            (QkvLayout::Fused(qkv), None) => Qkv::Packed(qkv.forward(x)?),
            (QkvLayout::Fused(_), Some(_)) => {
                candle_core::bail!("a fused QKV projection cannot attend over a memory")
            }
        };
        taps::attention(|| ops::attention_probs(&qkv, self.n_heads, mask))?;
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

    /// Query, key and value as one product: self-attention without a cache (an encoder)
    /// of a model that runs inference only, where no part carries an adapter or int8
    /// weights. (A cache keeps views of the packed tensor, which beam search cannot
    /// reorder.)
    fn stacked(
        &self,
        q: &Linear,
        k: &Linear,
        v: &Linear,
        memory: Option<&Tensor>,
        cache: &Option<&mut KvCache>,
    ) -> Option<&Linear> {
        if memory.is_some() || cache.is_some() || !self.mode.is_inference_only() {
            return None;
        }
        let stacked = self
            .stacked_qkv
            .get_or_init(|| Linear::stacked(&[q, k, v]).ok().flatten());
        stacked.as_ref()
    }

    /// The ONNX twin of [`MultiHeadAttention::forward`] for self-attention at inference:
    /// `x [B, T, H]`, `mask` additive, broadcasting to `[B, heads, T, T]`.
    pub fn onnx(
        &self,
        g: &mut onnx::Graph,
        x: &onnx::Value,
        mask: &onnx::Value,
    ) -> Result<onnx::Value> {
        let heads = self.n_heads as i64;
        // [B, T, H] -> [B, heads, T, D]
        let split = |g: &mut onnx::Graph, t: &onnx::Value| {
            let t = g.reshape(t, &[0, 0, heads, -1]);
            g.transpose(&t, &[0, 2, 1, 3])
        };
        let (q, k, v) = match &self.qkv {
            QkvLayout::Separate { q, k, v } => {
                let (q, k, v) = (q.onnx(g, x)?, k.onnx(g, x)?, v.onnx(g, x)?);
                (split(g, &q), split(g, &k), split(g, &v))
            }
            QkvLayout::Fused(qkv) => {
                // [B, T, 3H] -> [3, B, heads, T, D], then q, k, v by index.
                let packed = qkv.onnx(g, x)?;
                let packed = g.reshape(&packed, &[0, 0, 3, heads, -1]);
                let packed = g.transpose(&packed, &[2, 0, 3, 1, 4]);
                let mut pick = |i| {
                    let i = g.int(i);
                    g.gather(&packed, &i, 0)
                };
                (pick(0), pick(1), pick(2))
            }
        };
        // The output projection's input is the heads side by side (fewer when pruned).
        let head_dim = self.out.in_features()? / self.n_heads;
        let scale = g.constant(&[1.0 / (head_dim as f32).sqrt()], &[])?;
        let k_t = g.transpose(&k, &[0, 1, 3, 2]);
        let scores = g.matmul(&q, &k_t);
        let scores = g.mul(&scores, &scale);
        let scores = g.add(&scores, mask);
        let p = g.softmax(&scores, -1);
        let y = g.matmul(&p, &v);
        // [B, heads, T, D] -> [B, T, H]
        let y = g.transpose(&y, &[0, 2, 1, 3]);
        let y = g.reshape(&y, &[0, 0, -1]);
        self.out.onnx(g, &y)
    }
}
