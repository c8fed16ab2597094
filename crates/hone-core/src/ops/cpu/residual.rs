//! Residual add after dropout: y = x + h * keep.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::*;

/// `x + h * keep` element-wise; `keep` (no gradient) is the dropout keep-mask.
pub(crate) struct ResidualAdd {
    pub keep: Option<Tensor>,
}

impl CustomOp2 for ResidualAdd {
    fn name(&self) -> &'static str {
        "hone-residual-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        hs: &CpuStorage,
        hl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let h = f32_slice(hs, hl, self.name())?;
        if x.len() != h.len() {
            bail!(
                "hone-residual-add: {:?} and {:?} differ",
                xl.shape(),
                hl.shape()
            )
        }
        let mut y = vec![0f32; x.len()];
        let mut run = |keep: Option<&[f32]>| {
            y.par_chunks_mut(ELEMWISE_CHUNK)
                .enumerate()
                .for_each(|(c, y)| {
                    let r = c * ELEMWISE_CHUNK..c * ELEMWISE_CHUNK + y.len();
                    let (x, h) = (&x[r.clone()], &h[r.clone()]);
                    simd_dispatch!(match keep {
                        Some(k) => {
                            for (((y, &x), &h), &k) in y.iter_mut().zip(x).zip(h).zip(&k[r]) {
                                *y = x + h * k;
                            }
                        }
                        None => {
                            for ((y, &x), &h) in y.iter_mut().zip(x).zip(h) {
                                *y = x + h;
                            }
                        }
                    })
                });
        };
        match &self.keep {
            Some(k) => with_f32(k, |k| {
                if k.len() != x.len() {
                    bail!(
                        "hone-residual-add: mask has {} elements, not {}",
                        k.len(),
                        x.len()
                    )
                }
                run(Some(k));
                Ok(())
            })?,
            None => run(None),
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        h: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dh = match &self.keep {
            None => dy.clone(),
            Some(k) => {
                let dh = with_f32(dy, |dy| {
                    with_f32(k, |k| {
                        let mut dh = vec![0f32; dy.len()];
                        dh.par_chunks_mut(ELEMWISE_CHUNK)
                            .zip(
                                dy.par_chunks(ELEMWISE_CHUNK)
                                    .zip(k.par_chunks(ELEMWISE_CHUNK)),
                            )
                            .for_each(|(dh, (dy, k))| {
                                simd_dispatch!(for ((dh, &g), &k) in dh.iter_mut().zip(dy).zip(k) {
                                    *dh = g * k;
                                })
                            });
                        Ok(dh)
                    })
                })?;
                cpu_tensor(dh, h.shape())?
            }
        };
        Ok((Some(dy.clone()), Some(dh)))
    }
}
