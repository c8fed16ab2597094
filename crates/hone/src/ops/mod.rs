//! Differentiable tensor ops that candle lacks or leaves without a backward pass.
//!
//! candle 0.11's fused `softmax_last_dim`, `layer_norm` and friends silently cut the gradient,
//! so every op here comes with its own backward. On the CPU each op is a fused, rayon-parallel
//! kernel ([`cpu`]); on other devices it falls back to a composition of candle primitives,
//! whose gradients candle derives by itself. The CPU kernels are the reference the tests
//! compare the composite versions against.

mod cpu;
mod loss;

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
    let (b, h, tq, _) = q.dims4()?;
    let tk = k.dim(2)?;
    let fused = use_fused(q)
        && [k, v].iter().all(|t| use_fused(t))
        && [mask, dropout]
            .iter()
            .flatten()
            .all(|t| t.device().is_cpu());
    if fused {
        let bcast = |t: Option<&Tensor>| {
            t.map(|t| t.to_dtype(DType::F32)?.broadcast_as((b, h, tq, tk)))
                .transpose()
        };
        let op = cpu::Attention {
            scale: scale as f32,
            mask: bcast(mask)?,
            dropout: bcast(dropout)?,
        };
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

/// `x W^T + b` for a 2-d `x [N, in]` and a weight `[out, in]` (or `W + b` with a weight
/// stored `[in, out]` when `weight_transposed`), with gradients for all inputs. On the CPU
/// the bias is written first and the product accumulated onto it in one GEMM.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    weight_transposed: bool,
) -> Result<Tensor> {
    let fused = use_fused(x)
        && use_fused(weight)
        && bias.is_none_or(use_fused)
        && x.rank() == 2
        && weight.rank() == 2;
    if fused {
        let op = cpu::Linear {
            transposed: weight_transposed,
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
