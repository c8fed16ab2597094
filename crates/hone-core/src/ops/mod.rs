//! Differentiable tensor ops that candle lacks or leaves without a backward pass.
//!
//! candle 0.11's fused `softmax_last_dim`, `layer_norm` and friends silently cut the gradient,
//! so every op here comes with its own backward. On the CPU each op is a fused, rayon-parallel
//! kernel ([`cpu`]); on other devices it falls back to a composition of candle primitives,
//! whose gradients candle derives by itself. The CPU kernels are the reference the tests
//! compare the composite versions against.

mod autocast;
mod cpu;
mod loss;

pub use autocast::{autocast, AutocastGuard};
pub use loss::{binary_cross_entropy_with_logits, cross_entropy, mse_loss, CrossEntropyOptions};

use candle_core::{DType, Result, Tensor, D};

/// `softmax(x)` over the last dimension, with a backward pass.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(cpu::Softmax)
    } else {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }
}

/// `softmax(x * scale + mask)` over the last dimension in one pass; `mask` is additive
/// (0 where attending, a large negative number where not) and broadcasts against `x`.
pub fn scaled_masked_softmax(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let x = (x * scale)?;
    let x = match mask {
        Some(m) => x.broadcast_add(m)?,
        None => x,
    };
    softmax_last_dim(&x)
}

/// `softmax(q k^T * scale + mask) v` over `q [B, H, Tq, D]`, `k`/`v` `[B, H, Tk, D]`
/// (any strides, so heads split by a transpose need no copy), with gradients for `q`, `k`
/// and `v`. `mask` is additive and broadcasts to `[B, H, Tq, Tk]`; `dropout`, when given,
/// multiplies the probabilities (a keep mask already scaled by 1/(1-p), same broadcast).
/// Neither receives a gradient. Returns `[B, H, Tq, D]`; on the CPU it is a transposed view
/// of a contiguous `[B, Tq, H, D]` tensor, so merging the heads back costs nothing.
///
/// On the CPU this is one fused kernel, parallel over batch x heads, that never materialises
/// the `[B, H, Tq, Tk]` scores; the backward pass recomputes them.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
    dropout: Option<&Tensor>,
) -> Result<Tensor> {
    if let Some(dtype) = autocast::autocast_dtype_for(q) {
        // Both products in `dtype`, the softmax in f32.
        let low = |t: &Tensor| t.contiguous()?.to_dtype(dtype);
        let scores = low(q)?.matmul(&low(k)?.t()?)?.to_dtype(DType::F32)?;
        let probs = scaled_masked_softmax(&scores, scale, mask)?;
        let probs = match dropout {
            Some(d) => probs.broadcast_mul(&d.to_dtype(DType::F32)?)?,
            None => probs,
        };
        return probs
            .to_dtype(dtype)?
            .matmul(&low(v)?)?
            .to_dtype(DType::F32);
    }
    let (b, h, tq, _) = q.dims4()?;
    let tk = k.dim(2)?;
    if fuse_attention(&[q, k, v], mask, dropout) {
        let op = attention_op(scale, mask, dropout, (b, h, tq, tk), cpu::QkvInput::Heads)?;
        q.apply_op3(k, v, op)?.transpose(1, 2)
    } else {
        let scores = q.contiguous()?.matmul(&k.contiguous()?.t()?)?;
        let probs = scaled_masked_softmax(&scores, scale, mask)?;
        let probs = match dropout {
            Some(d) => probs.broadcast_mul(&d.to_dtype(probs.dtype())?)?,
            None => probs,
        };
        probs.matmul(&v.contiguous()?)
    }
}

/// [`attention`] over `q [B, Tq, H * D]` and `k`/`v` `[B, Tk, H * D]` (the projections'
/// output, heads not yet split), returning `[B, Tq, H * D]` (heads merged back). On the CPU
/// the kernel reads the heads in place and writes the gradients in this layout, so neither
/// the split nor the merge costs a copy or a node in the backward graph.
pub fn attention_merged(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    mask: Option<&Tensor>,
    dropout: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, tq, hd) = q.dims3()?;
    let tk = k.dim(1)?;
    if fuse_attention(&[q, k, v], mask, dropout) {
        let input = cpu::QkvInput::Merged { heads };
        let op = attention_op(scale, mask, dropout, (b, heads, tq, tk), input)?;
        q.apply_op3(k, v, op)
    } else {
        let split = |t: &Tensor| -> Result<Tensor> {
            let (b, t_, _) = t.dims3()?;
            t.reshape((b, t_, heads, hd / heads))?.transpose(1, 2)
        };
        attention(&split(q)?, &split(k)?, &split(v)?, scale, mask, dropout)?
            .transpose(1, 2)?
            .reshape((b, tq, hd))
    }
}

/// Self-attention over one packed `qkv [B, T, 3 * H * D]` (q, k and v side by side, as
/// GPT-2's `c_attn` produces them), returning `[B, T, H * D]`; see [`attention_merged`].
pub fn attention_packed(
    qkv: &Tensor,
    heads: usize,
    scale: f64,
    mask: Option<&Tensor>,
    dropout: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, t, w) = qkv.dims3()?;
    if fuse_attention(&[qkv], mask, dropout) {
        let input = cpu::QkvInput::Packed { heads };
        qkv.apply_op1(attention_op(scale, mask, dropout, (b, heads, t, t), input)?)
    } else {
        let d = w / 3;
        let (q, k, v) = (
            qkv.narrow(2, 0, d)?,
            qkv.narrow(2, d, d)?,
            qkv.narrow(2, 2 * d, d)?,
        );
        attention_merged(&q, &k, &v, heads, scale, mask, dropout)
    }
}

/// Whether the fused CPU attention kernel takes these inputs: f32 on the CPU, and no
/// autocast (whose products run in lower precision through candle's matmul instead).
fn fuse_attention(inputs: &[&Tensor], mask: Option<&Tensor>, dropout: Option<&Tensor>) -> bool {
    autocast::autocast_dtype_for(inputs[0]).is_none()
        && inputs.iter().all(|t| use_fused(t))
        && [mask, dropout]
            .iter()
            .flatten()
            .all(|t| t.device().is_cpu())
}

/// The fused attention kernel for probabilities of shape `probs` `[B, H, Tq, Tk]`.
fn attention_op(
    scale: f64,
    mask: Option<&Tensor>,
    dropout: Option<&Tensor>,
    probs: (usize, usize, usize, usize),
    input: cpu::QkvInput,
) -> Result<cpu::Attention> {
    Ok(cpu::Attention {
        scale: scale as f32,
        mask: broadcast_probs(mask, probs)?,
        dropout: broadcast_probs(dropout, probs)?,
        input,
    })
}

/// An attention mask or dropout mask as f32 broadcast to the probabilities' shape.
fn broadcast_probs(
    t: Option<&Tensor>,
    shape: (usize, usize, usize, usize),
) -> Result<Option<Tensor>> {
    t.map(|t| t.to_dtype(DType::F32)?.broadcast_as(shape))
        .transpose()
}

/// `x + h * keep` (a residual connection after dropout; `keep` is the scaled keep-mask of
/// `h`'s shape, or None for no dropout), with gradients for `x` and `h`. On the CPU one
/// fused pass, and the backward pass forms only `dy` and `dy * keep`.
pub fn residual_add(x: &Tensor, h: &Tensor, keep: Option<&Tensor>) -> Result<Tensor> {
    let fused = use_fused(x)
        && use_fused(h)
        && x.dims() == h.dims()
        && keep.is_none_or(|k| use_fused(k) && k.dims() == h.dims());
    if fused {
        let op = cpu::ResidualAdd {
            keep: keep.map(|k| k.contiguous()).transpose()?,
        };
        x.contiguous()?.apply_op2(&h.contiguous()?, op)
    } else {
        match keep {
            Some(k) => x + h.mul(&k.to_dtype(h.dtype())?)?,
            None => x + h,
        }
    }
}

/// `x W^T + b` for `x [..., in]` and a weight `[out, in]` (or `W + b` with a weight
/// stored `[in, out]` when `weight_transposed`), with gradients for all inputs; returns
/// `[..., out]`. On the CPU the bias is written first and the product accumulated onto it
/// in one GEMM (leading dimensions fold into its rows), and the backward pass is two GEMMs
/// on strided operands plus a column sum.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    weight_transposed: bool,
) -> Result<Tensor> {
    if let Some(dtype) = autocast::autocast_dtype_for(x) {
        let low = |t: &Tensor| t.to_dtype(dtype);
        let w = if weight_transposed {
            low(weight)?
        } else {
            low(weight)?.t()?
        };
        let y = low(x)?.broadcast_matmul(&w)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&low(b)?)?,
            None => y,
        };
        return y.to_dtype(DType::F32);
    }
    let fused = use_fused(x)
        && use_fused(weight)
        && bias.is_none_or(use_fused)
        && x.rank() >= 2
        && weight.rank() == 2;
    if fused {
        let op = cpu::Linear {
            transposed: weight_transposed,
        };
        // Beyond 2-d the kernel folds leading dimensions, which needs a contiguous input.
        let x = &if x.rank() > 2 {
            x.contiguous()?
        } else {
            x.clone()
        };
        match bias {
            Some(b) => x.apply_op3(weight, &b.contiguous()?, op),
            None => x.apply_op2(weight, op),
        }
    } else {
        let w = if weight_transposed {
            weight.clone()
        } else {
            weight.t()?
        };
        let y = x.broadcast_matmul(&w)?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// LayerNorm over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// with gradients for all three inputs.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?
            .apply_op3(weight, bias, cpu::LayerNorm { eps: eps as f32 })
    } else {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?;
        let mean = x32.mean_keepdim(D::Minus1)?;
        let centered = x32.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered
            .broadcast_div(&(var + eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        normed.broadcast_mul(weight)?.broadcast_add(bias)
    }
}

/// GELU with the exact erf form, `x * Phi(x)` (BERT's `gelu`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(cpu::Gelu { tanh: false })
    } else {
        x.gelu_erf()
    }
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if use_fused(x) {
        x.contiguous()?.apply_op1(cpu::Gelu { tanh: true })
    } else {
        x.gelu()
    }
}

/// ReLU (candle's own op already has a backward pass).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}

/// `log(softmax(x))` over the last dimension, built from differentiable primitives.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// The fused kernels run on contiguous f32 CPU tensors; anything else composes primitives.
fn use_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

#[cfg(test)]
mod tests;
