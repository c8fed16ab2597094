//! LayerNorm.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::*;

/// LayerNorm over the last dimension with affine weight and bias.
pub(crate) struct LayerNorm {
    pub eps: f32,
}

/// Mean and 1/std of one row, two-pass for accuracy (eight partial sums, so it vectorises).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum8(x) / n;
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (acc.iter().sum::<f32>() + tail) / n;
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
        let chunk_rows = (ELEMWISE_CHUNK / n).max(1);
        y.par_chunks_mut(n * chunk_rows)
            .zip(x.par_chunks(n * chunk_rows))
            .for_each(|(y, x)| {
                simd_dispatch!(for (y, x) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                    let (mean, rstd) = row_stats(x, eps);
                    for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                        *y = (x - mean) * rstd * w + b;
                    }
                })
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

/// `y = LN(x + h)` row by row in one pass over the inputs (inference: no gradient).
pub(crate) fn residual_layer_norm(
    x: &[f32],
    h: &[f32],
    w: &[f32],
    b: &[f32],
    eps: f32,
) -> Vec<f32> {
    let n = w.len();
    assert!(n > 0 && b.len() == n && x.len() == h.len() && x.len().is_multiple_of(n));
    let mut y: Vec<f32> = vec![0f32; x.len()];
    let chunk_rows = (ELEMWISE_CHUNK / n).max(1);
    y.par_chunks_mut(n * chunk_rows)
        .zip(
            x.par_chunks(n * chunk_rows)
                .zip(h.par_chunks(n * chunk_rows)),
        )
        .for_each(|(y, (x, h))| {
            simd_dispatch!(for ((y, x), h) in y
                .chunks_exact_mut(n)
                .zip(x.chunks_exact(n))
                .zip(h.chunks_exact(n))
            {
                for ((y, &x), &h) in y.iter_mut().zip(x).zip(h) {
                    *y = x + h;
                }
                let (mean, rstd) = row_stats(y, eps);
                for ((y, &w), &b) in y.iter_mut().zip(w).zip(b) {
                    *y = (*y - mean) * rstd * w + b;
                }
            })
        });
    y
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
            simd_dispatch!(
                for ((dx, x), dy) in dx.chunks_mut(n).zip(x.chunks(n)).zip(dy.chunks(n)) {
                    let (mean, rstd) = row_stats(x, eps);
                    for i in 0..n {
                        xhat[i] = (x[i] - mean) * rstd;
                        dw[i] += dy[i] * xhat[i];
                        db[i] += dy[i];
                    }
                    // g = dy * w, reduced with eight partial sums.
                    let (mut sg, mut sgx) = ([0f32; 8], [0f32; 8]);
                    let full = n / 8 * 8;
                    for c in (0..full).step_by(8) {
                        for j in 0..8 {
                            let g = dy[c + j] * w[c + j];
                            sg[j] += g;
                            sgx[j] += g * xhat[c + j];
                        }
                    }
                    let (mut sum_g, mut sum_gx) = (sg.iter().sum::<f32>(), sgx.iter().sum::<f32>());
                    for i in full..n {
                        let g = dy[i] * w[i];
                        sum_g += g;
                        sum_gx += g * xhat[i];
                    }
                    let (mg, mgx) = (sum_g / n as f32, sum_gx / n as f32);
                    for i in 0..n {
                        dx[i] = rstd * (dy[i] * w[i] - mg - xhat[i] * mgx);
                    }
                }
            );
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
