//! Linear: y = x W^T + b in one GEMM that starts from the bias.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::*;

/// `x [N, in]` times the weight (`[out, in]`, or `[in, out]` when `transposed`) plus an
/// optional bias, with the bias written first and the product accumulated onto it.
pub(crate) struct Linear {
    pub transposed: bool,
}

fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    // Small products are faster on one thread than split across the pool.
    if threads > 1 && m * n * k >= 32 * 32 * 32 * 4 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

impl Linear {
    fn forward(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            bail!("hone-linear: expected f32 inputs")
        };
        // Leading dimensions fold into rows; beyond 2-d the input must be contiguous.
        let dims = xl.shape().dims();
        let (n, k, xrs, xcs) = match (dims, xl.stride()) {
            ([n, k], [rs, cs]) => (*n, *k, *rs, *cs),
            ([.., k], _) if dims.len() > 2 && xl.is_contiguous() => {
                (xl.shape().elem_count() / (*k).max(1), *k, *k, 1)
            }
            _ => bail!(
                "hone-linear: input must be 2-d or contiguous, got {:?}",
                xl.shape()
            ),
        };
        let (w0, w1) = wl.shape().dims2()?;
        let (out, wk) = if self.transposed { (w1, w0) } else { (w0, w1) };
        if wk != k {
            bail!("hone-linear: input has {k} features, the weight expects {wk}")
        }
        let [wrs, wcs] = wl.stride() else {
            bail!("hone-linear: weight must be 2-d")
        };
        // rhs is the k x out matrix W^T (or W when stored transposed).
        let (rrs, rcs) = if self.transposed {
            (*wrs, *wcs)
        } else {
            (*wcs, *wrs)
        };
        let mut y = match bias {
            Some(b) => {
                if b.len() != out {
                    bail!("hone-linear: bias has {} entries, expected {out}", b.len())
                }
                let mut y = Vec::with_capacity(n * out);
                for _ in 0..n {
                    y.extend_from_slice(b);
                }
                y
            }
            None => vec![0f32; n * out],
        };
        if n > 0 && out > 0 {
            // SAFETY: the strides and sizes describe memory inside `x`, `w` and `y`.
            unsafe {
                par_gemm(
                    (n, out, k),
                    (y.as_mut_ptr(), out, bias.is_some()),
                    (x[xl.start_offset()..].as_ptr(), xrs, xcs),
                    (w[wl.start_offset()..].as_ptr(), rrs, rcs),
                )
            }
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 2") = out;
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }

    /// `dx = dy R^T` and the weight's gradient (`dy^T x`, or `x^T dy` when stored
    /// transposed), each one GEMM over strided operands: no transposed copies. Each only
    /// when its input takes part in the gradient: a frozen weight is a constant, and its
    /// product is skipped.
    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let k = x.dim(candle_core::D::Minus1)?;
        let n = x.elem_count() / k.max(1);
        let (w0, w1) = w.dims2()?;
        let out = if self.transposed { w1 } else { w0 };
        let (need_dx, need_dw) = (x.track_op(), w.track_op());
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(dy, |dy| {
                    let mut dx = vec![0f32; if need_dx { n * k } else { 0 }];
                    let mut dw = vec![0f32; if need_dw { out * k } else { 0 }];
                    if n == 0 || out == 0 || k == 0 {
                        return Ok((dx, dw));
                    }
                    // R^T is [out, k]: W itself, or W^T when stored [k, out].
                    let (rt_rs, rt_cs) = if self.transposed { (1, out) } else { (k, 1) };
                    // SAFETY: all operands are contiguous buffers of the sizes given.
                    unsafe {
                        if need_dx {
                            par_gemm(
                                (n, k, out),
                                (dx.as_mut_ptr(), k, false),
                                (dy.as_ptr(), out, 1),
                                (w.as_ptr(), rt_rs, rt_cs),
                            );
                        }
                        if need_dw && self.transposed {
                            // dW [k, out] = x^T dy
                            par_gemm(
                                (k, out, n),
                                (dw.as_mut_ptr(), out, false),
                                (x.as_ptr(), 1, k),
                                (dy.as_ptr(), out, 1),
                            );
                        } else if need_dw {
                            // dW [out, k] = dy^T x
                            par_gemm(
                                (out, k, n),
                                (dw.as_mut_ptr(), k, false),
                                (dy.as_ptr(), 1, out),
                                (x.as_ptr(), k, 1),
                            );
                        }
                    }
                    Ok((dx, dw))
                })
            })
        })?;
        let dx = need_dx.then(|| cpu_tensor(dx, x.shape())).transpose()?;
        let dw = need_dw.then(|| cpu_tensor(dw, w.shape())).transpose()?;
        Ok((dx, dw))
    }
}

/// `dst[m, n] (+)= lhs[m, k] * rhs[k, n]` with the pool's threads; strides as (row, column).
/// gemm splits the output, never the sum over `k`, so the result does not depend on the
/// number of threads or their scheduling.
unsafe fn par_gemm(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, accumulate): (*mut f32, usize, bool),
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        gemm_parallelism(m, n, k),
    )
}

/// Column sums of a row-major `[rows, cols]` matrix (the bias gradient), parallel over
/// blocks of columns; each column is summed in row order, so the result is deterministic.
fn column_sums(x: &[f32], cols: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let mut out = vec![0f32; cols];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(bi, acc)| {
        let (c0, w) = (bi * BLOCK, acc.len());
        simd_dispatch!(for row in x.chunks_exact(cols) {
            for (a, &v) in acc.iter_mut().zip(&row[c0..c0 + w]) {
                *a += v;
            }
        })
    });
    out
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "hone-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xl, ws, wl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.grads(x, w, dy)
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "hone-linear-bias"
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
        let b = f32_slice(bs, bl, "hone-linear bias")?;
        self.forward(xs, xl, ws, wl, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        let out = w.dim(if self.transposed { 1 } else { 0 })?;
        let db = match b.track_op() {
            true => Some(cpu_tensor(
                with_f32(dy, |dy| Ok(column_sums(dy, out)))?,
                &Shape::from(out),
            )?),
            false => None,
        };
        Ok((dx, dw, db))
    }
}
