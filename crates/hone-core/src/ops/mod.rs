//! Differentiable tensor ops that candle lacks or leaves without a backward pass.
//!
//! candle 0.11's fused `softmax_last_dim`, `layer_norm` and friends silently cut the gradient,
//! so every op here comes with its own backward. On the CPU each op is a fused, rayon-parallel
//! kernel ([`cpu`]); on other devices it falls back to a composition of candle primitives,
//! whose gradients candle derives by itself. The CPU kernels are the reference the tests
//! compare the composite versions against.
//!
//! Mixed precision is explicit: the ops with matrix products ([`linear`], [`attention`])
//! take an `autocast` dtype, as `torch.autocast` would set it: bf16 or fp16 operands for the
//! products, f32 results, everything else (LayerNorm and softmax statistics, losses,
//! parameters, gradients) f32. The layers pass their model's setting
//! ([`crate::model::layers::ModelMode::autocast`]).

mod attention;
mod cpu;
mod loss;

pub use attention::{attention, attention_probs, KeepMask, KvCache, Qkv};
pub use cpu::int8::Int8Matrix;
pub use cpu::packed::{Epilogue, PackedMatrix};
pub use loss::{
    binary_cross_entropy_with_logits, cross_entropy, distillation_loss, masked_mse, mse_loss,
    CrossEntropyOptions,
};

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

/// `softmax(x * scale + mask)` over the last dimension (the composite attention's
/// probabilities); `mask` is additive (0 where attending, a large negative number where
/// not) and broadcasts against `x`.
pub fn scaled_masked_softmax(x: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let x = (x * scale)?;
    let x = match mask {
        Some(m) => x.broadcast_add(m)?,
        None => x,
    };
    softmax_last_dim(&x)
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

/// `y = epilogue(x W^T + b)` for `x [..., in]` and a weight packed once
/// ([`PackedMatrix::pack`]); returns `[..., out]`. CPU f32 only; no gradient (inference:
/// the packed copy does not follow the weight).
pub fn linear_packed(
    x: &Tensor,
    w: &PackedMatrix,
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) -> Result<Tensor> {
    inference_product(x, w.k, w.n, bias, "linear_packed", |x, m, bias, y| {
        cpu::packed::matmul_packed(x, m, w, bias, epilogue, y)
    })
}

/// `y = epilogue(x W^T + b)` with `W` in int8 (per output channel) and `x [..., in]` quantized per
/// row as it comes, i32 accumulation (`cpu::int8`). CPU only; no gradient (inference).
pub fn linear_int8(
    x: &Tensor,
    w: &Int8Matrix,
    bias: Option<&Tensor>,
    epilogue: Epilogue,
) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    inference_product(&x, w.k, w.n, bias, "linear_int8", |x, m, bias, y| {
        cpu::int8::matmul_int8(x, m, w, bias, epilogue, y)
    })
}

/// Runs `product(x [m, k], m, bias, y [m, n])` on a CPU f32 input `[..., k]`, which must
/// write all of `y`; returns `y` as `[..., n]`.
fn inference_product(
    x: &Tensor,
    k: usize,
    n: usize,
    bias: Option<&Tensor>,
    what: &str,
    product: impl FnOnce(&[f32], usize, Option<&[f32]>, &mut [f32]),
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    if dims.last() != Some(&k) || x.dtype() != DType::F32 || !x.device().is_cpu() {
        candle_core::bail!(
            "{what}: input {dims:?} {:?} on {:?}; the weight takes f32 [.., {k}] on the CPU",
            x.dtype(),
            x.device(),
        )
    }
    let m = x.elem_count() / k.max(1);
    let bias = bias
        .map(|b| b.to_dtype(DType::F32)?.to_vec1::<f32>())
        .transpose()?;
    let mut y = Vec::with_capacity(m * n);
    cpu::with_f32(x, |x| {
        // SAFETY: f32 has no invalid bit patterns, and `product` writes every element of
        // `y` before anything reads it: the zero fill this saves is a pass over the output.
        #[allow(clippy::uninit_vec)]
        unsafe {
            y.set_len(m * n)
        };
        product(x, m, bias.as_deref(), &mut y);
        Ok(())
    })?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("rank >= 1") = n;
    Tensor::from_vec(y, out_dims, x.device())
}

/// `x W^T + b` for `x [..., in]` and a weight `[out, in]` (or `W + b` with a weight
/// stored `[in, out]` when `weight_transposed`), with gradients for all inputs; returns
/// `[..., out]`. On the CPU the bias is written first and the product accumulated onto it
/// in one GEMM (leading dimensions fold into its rows), and the backward pass is two GEMMs
/// on strided operands plus a column sum. With `autocast`, f32 operands go through the
/// product in that dtype and the result comes back f32.
pub fn linear(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    weight_transposed: bool,
    autocast: Option<DType>,
) -> Result<Tensor> {
    if let Some(dtype) = autocast_for(x, autocast) {
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

/// `LN(x + h)` (a post-LN residual connection without dropout) for inference: on the
/// CPU one pass per row, with no gradient; elsewhere the two ops.
pub fn residual_layer_norm_inference(
    x: &Tensor,
    h: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if !(use_fused(x) && use_fused(h) && use_fused(weight) && use_fused(bias))
        || x.dims() != h.dims()
    {
        return layer_norm(&residual_add(x, h, None)?, weight, bias, eps);
    }
    let y = cpu::with_f32(x, |xs| {
        cpu::with_f32(h, |hs| {
            cpu::with_f32(weight, |w| {
                cpu::with_f32(bias, |b| {
                    Ok(cpu::residual_layer_norm(xs, hs, w, b, eps as f32))
                })
            })
        })
    })?;
    Tensor::from_vec(y, x.shape(), x.device())
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

/// SiLU / swish, `x * sigmoid(x)` (candle's op has a backward pass).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// `log(softmax(x))` over the last dimension, built from differentiable primitives.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// The dtype a product over `x` runs in: `autocast` for f32 operands; autocast leaves other
/// dtypes alone, as PyTorch's does.
fn autocast_for(x: &Tensor, autocast: Option<DType>) -> Option<DType> {
    autocast.filter(|_| x.dtype() == DType::F32)
}

/// The fused kernels run on contiguous f32 CPU tensors; anything else composes primitives.
fn use_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

#[cfg(test)]
mod tests;
