//! Softmax.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::*;

/// Row-wise softmax over the last dimension.
pub(crate) struct Softmax;

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
            .for_each(|(d, s)| simd_dispatch!(softmax_row(s, d)));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(dy, &SoftmaxBackward)?))
    }
}

#[inline(always)]
fn softmax_row(s: &[f32], d: &mut [f32]) {
    let max = max16(s);
    if max == f32::NEG_INFINITY {
        // A fully masked row: attend nowhere rather than produce NaN.
        d.fill(0.0);
        return;
    }
    for (d, &s) in d.iter_mut().zip(s) {
        *d = exp(s - max);
    }
    let inv = 1.0 / sum8(d);
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
                simd_dispatch!({
                    let dot = dot8(y, g);
                    for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                        *dx = y * (g - dot);
                    }
                })
            });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}
