use candle_core::{DType, Device, Result, Tensor};

use super::{Dropout, Linear};

/// Added to the scores of positions that must not be attended to. Large enough that its
/// softmax weight is exactly zero in f32 and bf16, small enough that sums of two stay finite.
pub const MASK_VALUE: f32 = -1e9;

/// `softmax(Q K^T / sqrt(d_k) + mask) V` with optional dropout on the attention weights.
/// `q`: `[B, H, Tq, D]`, `k`/`v`: `[B, H, Tk, D]`, `mask` additive, broadcastable to
/// `[B, H, Tq, Tk]`.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    dropout: Option<&Dropout>,
) -> Result<Tensor> {
    let (b, h, tq, d) = q.dims4()?;
    let tk = k.dim(2)?;
    let scale = 1.0 / (d as f64).sqrt();
    // The dropout keep-mask, drawn exactly as `dropout.forward(probs)` would draw it (same
    // shape, same random stream); the identity in evaluation hands back its input.
    let keep = attention_keep_mask(dropout, (b, h, tq, tk), q)?;
    crate::ops::attention(q, k, v, scale, mask, keep.as_ref())
}

/// The attention dropout keep-mask `[B, H, Tq, Tk]` in `like`'s dtype, drawn exactly as
/// `dropout.forward(probs)` would draw it (same shape, same random stream); None in
/// evaluation.
fn attention_keep_mask(
    dropout: Option<&Dropout>,
    shape: (usize, usize, usize, usize),
    like: &Tensor,
) -> Result<Option<Tensor>> {
    let (b, h, tq, tk) = shape;
    match dropout {
        Some(dr) => dr
            .keep_mask(&[b, h, tq, tk], like.device())?
            .map(|m| m.to_dtype(like.dtype()))
            .transpose(),
        None => Ok(None),
    }
}

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

/// Keys and values of the positions decoded so far, so each new token costs one position.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }
}

/// Multi-head attention: project, split into heads, attend, merge, project back.
/// Self-attention when `memory` is None, cross-attention over `memory` otherwise.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    qkv: QkvLayout,
    out: Linear,
    n_heads: usize,
    attn_dropout: Dropout,
}

impl MultiHeadAttention {
    pub fn new(qkv: QkvLayout, out: Linear, n_heads: usize, attn_dropout: Dropout) -> Self {
        Self {
            qkv,
            out,
            n_heads,
            attn_dropout,
        }
    }

    /// `[B, T, H*D]` -> `[B, H, T, D]`, a strided view: the attention kernel reads it as is.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.n_heads, d / self.n_heads))?
            .transpose(1, 2)
    }

    /// `[B, H, T, D]` -> `[B, T, H*D]`.
    fn merge_heads(x: &Tensor) -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        x.transpose(1, 2)?.reshape((b, t, h * d))
    }

    pub fn forward(
        &self,
        x: &Tensor,
        memory: Option<&Tensor>,
        mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        if cache.is_none() {
            return self.forward_uncached(x, memory, mask);
        }
        let (q, k, v) = match (&self.qkv, memory) {
            (QkvLayout::Separate { q, k, v }, memory) => {
                let kv_src = memory.unwrap_or(x);
                (q.forward(x)?, k.forward(kv_src)?, v.forward(kv_src)?)
            }
            (QkvLayout::Fused(qkv), None) => {
                let y = qkv.forward(x)?;
                let d = y.dim(2)? / 3;
                (
                    y.narrow(2, 0, d)?,
                    y.narrow(2, d, d)?,
                    y.narrow(2, 2 * d, d)?,
                )
            }
            (QkvLayout::Fused(_), Some(_)) => {
                candle_core::bail!("a fused QKV projection cannot attend over a memory")
            }
        };
        let (q, mut k, mut v) = (
            self.split_heads(&q)?,
            self.split_heads(&k)?,
            self.split_heads(&v)?,
        );
        if let Some(cache) = cache {
            (k, v) = cache.append(k, v)?;
        }
        let y = scaled_dot_product_attention(&q, &k, &v, mask, Some(&self.attn_dropout))?;
        self.out.forward(&Self::merge_heads(&y)?)
    }

    /// Without a cache the heads never need splitting: the attention op reads them in place
    /// from the projections' `[B, T, H * D]` output and returns them merged. Same result,
    /// same dropout draws as the split path.
    fn forward_uncached(
        &self,
        x: &Tensor,
        memory: Option<&Tensor>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, tq, _) = x.dims3()?;
        let h = self.n_heads;
        let y = match (&self.qkv, memory) {
            (QkvLayout::Separate { q, k, v }, memory) => {
                let kv_src = memory.unwrap_or(x);
                let (q, k, v) = (q.forward(x)?, k.forward(kv_src)?, v.forward(kv_src)?);
                let (tk, hd) = (k.dim(1)?, q.dim(2)?);
                let scale = 1.0 / ((hd / h) as f64).sqrt();
                let keep = attention_keep_mask(Some(&self.attn_dropout), (b, h, tq, tk), &q)?;
                crate::ops::attention_merged(&q, &k, &v, h, scale, mask, keep.as_ref())?
            }
            (QkvLayout::Fused(qkv), None) => {
                let y = qkv.forward(x)?;
                let hd = y.dim(2)? / 3;
                let scale = 1.0 / ((hd / h) as f64).sqrt();
                let keep = attention_keep_mask(Some(&self.attn_dropout), (b, h, tq, tq), &y)?;
                crate::ops::attention_packed(&y, h, scale, mask, keep.as_ref())?
            }
            (QkvLayout::Fused(_), Some(_)) => {
                candle_core::bail!("a fused QKV projection cannot attend over a memory")
            }
        };
        self.out.forward(&y)
    }
}
