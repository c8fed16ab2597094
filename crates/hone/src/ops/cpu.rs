//! Fused f32 CPU kernels for [`super`]'s ops, forward and backward, parallel over rows.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage,
    Tensor,
};
use rayon::prelude::*;

/// Borrow a CPU f32 storage as a contiguous slice.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32 storage, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: input must be contiguous"),
    }
}

/// Run `f` on a tensor's contiguous f32 data without copying it.
pub(super) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(f32_slice(s, layout, "fused op")?),
        _ => bail!("fused CPU op called on a non-CPU tensor"),
    }
}

fn last_dim(shape: &Shape) -> usize {
    shape.dims().last().copied().unwrap_or(1).max(1)
}

fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &Device::Cpu)
}

// ----------------------------------------------------------------------------------------
// Softmax

/// Row-wise softmax over the last dimension.
pub(super) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "hone-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, self.name())?;
        let n = last_dim(l.shape());
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(n)
            .zip(src.par_chunks(n))
            .for_each(|(d, s)| softmax_row(s, d));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(dy, &SoftmaxBackward)?))
    }
}

pub(super) fn softmax_row(s: &[f32], d: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // A fully masked row: attend nowhere rather than produce NaN.
        d.fill(0.0);
        return;
    }
    let mut sum = 0f32;
    for (d, &s) in d.iter_mut().zip(s) {
        *d = (s - max).exp();
        sum += *d;
    }
    let inv = 1.0 / sum;
    d.iter_mut().for_each(|d| *d *= inv);
}

/// dx = y * (dy - sum(dy * y)) row by row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "hone-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(ys, yl, self.name())?;
        let g = f32_slice(gs, gl, self.name())?;
        let n = last_dim(yl.shape());
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .for_each(|(dx, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

// ----------------------------------------------------------------------------------------
// LayerNorm

/// LayerNorm over the last dimension with affine weight and bias.
pub(super) struct LayerNorm {
    pub eps: f32,
}

/// Mean and 1/std of one row, two-pass for accuracy.
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "hone-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let w = f32_slice(ws, wl, "layer-norm weight")?;
        let b = f32_slice(bs, bl, "layer-norm bias")?;
        let n = last_dim(xl.shape());
        if w.len() != n || b.len() != n {
            bail!(
                "layer-norm: weight {} / bias {} do not match hidden size {n}",
                w.len(),
                b.len()
            )
        }
        let mut y = vec![0f32; x.len()];
        let eps = self.eps;
        y.par_chunks_mut(n).zip(x.par_chunks(n)).for_each(|(y, x)| {
            let (mean, rstd) = row_stats(x, eps);
            for i in 0..n {
                y[i] = (x[i] - mean) * rstd * w[i] + b[i];
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(candle_core::D::Minus1)?;
        let eps = self.eps;
        let (dx, dw, db) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(dy, |dy| Ok(layer_norm_backward(x, w, dy, n, eps)))
            })
        })?;
        let wshape = w.shape().clone();
        Ok((
            Some(cpu_tensor(dx, x.shape())?),
            Some(cpu_tensor(dw, &wshape)?),
            Some(cpu_tensor(db, &wshape)?),
        ))
    }
}

/// Gradients of LayerNorm: with xhat = (x - mean) * rstd and g = dy * w,
/// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dw = sum(dy * xhat), db = sum(dy).
fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    n: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / n;
    let mut dx = vec![0f32; x.len()];
    // Rows are processed in chunks; each chunk keeps its own dw/db partial sums.
    let chunk_rows = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(n * chunk_rows)
        .zip(
            x.par_chunks(n * chunk_rows)
                .zip(dy.par_chunks(n * chunk_rows)),
        )
        .map(|(dx, (x, dy))| {
            let mut dw = vec![0f32; n];
            let mut db = vec![0f32; n];
            let mut xhat = vec![0f32; n];
            for ((dx, x), dy) in dx.chunks_mut(n).zip(x.chunks(n)).zip(dy.chunks(n)) {
                let (mean, rstd) = row_stats(x, eps);
                let mut sum_g = 0f32;
                let mut sum_gx = 0f32;
                for i in 0..n {
                    xhat[i] = (x[i] - mean) * rstd;
                    let g = dy[i] * w[i];
                    sum_g += g;
                    sum_gx += g * xhat[i];
                    dw[i] += dy[i] * xhat[i];
                    db[i] += dy[i];
                }
                let (mg, mgx) = (sum_g / n as f32, sum_gx / n as f32);
                for i in 0..n {
                    dx[i] = rstd * (dy[i] * w[i] - mg - xhat[i] * mgx);
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![0f32; n];
    let mut db = vec![0f32; n];
    for (pw, pb) in partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}

// ----------------------------------------------------------------------------------------
// GELU

/// GELU, exact (erf) or with the tanh approximation.
pub(super) struct Gelu {
    pub tanh: bool,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

fn gelu_value(x: f32, tanh: bool) -> f32 {
    if tanh {
        let t = (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh();
        0.5 * x * (1.0 + t)
    } else {
        0.5 * x * (1.0 + erf(x * INV_SQRT_2))
    }
}

fn gelu_derivative(x: f32, tanh: bool) -> f32 {
    if tanh {
        let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
        let t = inner.tanh();
        let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
    } else {
        let cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2));
        cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
    }
}

/// erf(x), computed in f64 by candle's implementation for full f32 accuracy.
fn erf(x: f32) -> f32 {
    candle_core::cpu::erf::erf_f64(x as f64) as f32
}

const ELEMWISE_CHUNK: usize = 4096;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "hone-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let tanh = self.tanh;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMWISE_CHUNK)
            .zip(x.par_chunks(ELEMWISE_CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = gelu_value(x, tanh);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let tanh = self.tanh;
        let dx = with_f32(x, |x| {
            with_f32(dy, |dy| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ELEMWISE_CHUNK)
                    .zip(
                        x.par_chunks(ELEMWISE_CHUNK)
                            .zip(dy.par_chunks(ELEMWISE_CHUNK)),
                    )
                    .for_each(|(dx, (x, dy))| {
                        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                            *dx = dy * gelu_derivative(x, tanh);
                        }
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}
