//! GELU.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::*;

/// GELU, exact (erf) or with the tanh approximation.
pub(crate) struct Gelu {
    pub tanh: bool,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
pub(crate) fn gelu_value(x: f32, use_tanh: bool) -> f32 {
    if use_tanh {
        let t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
        0.5 * x * (1.0 + t)
    } else {
        0.5 * x * (1.0 + erf(x * INV_SQRT_2))
    }
}

#[inline(always)]
fn gelu_derivative(x: f32, use_tanh: bool) -> f32 {
    if use_tanh {
        let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
        let t = tanh(inner);
        let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
    } else {
        let cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2));
        cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x)
    }
}

/// tanh through [`exp`], branch-free.
#[inline(always)]
fn tanh(z: f32) -> f32 {
    let e = exp(2.0 * z.clamp(-20.0, 20.0));
    1.0 - 2.0 / (e + 1.0)
}

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
                simd_dispatch!(if tanh {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = gelu_value(x, true);
                    }
                } else {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = gelu_value(x, false);
                    }
                })
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
                        simd_dispatch!(if tanh {
                            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                                *dx = dy * gelu_derivative(x, true);
                            }
                        } else {
                            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                                *dx = dy * gelu_derivative(x, false);
                            }
                        })
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}
