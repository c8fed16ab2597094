//! Gradient utilities: global norm, clipping, non-finite checks and accumulation over
//! micro-batches; and in-place access to CPU f32 storage for the fused updates.

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor, TensorId};
use rayon::prelude::*;

use super::*;

/// The L2 norm of one tensor, accumulated in f64.
fn l2_sq(t: &Tensor) -> Result<f64> {
    if all_cpu_f32(&[t]) {
        Ok(with_f32(t, |d| {
            // Per-chunk sums combined in order: the result does not depend on how rayon
            // happened to split the work.
            let parts: Vec<f64> = d
                .par_chunks(CHUNK)
                .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                .collect();
            Ok(parts.iter().sum::<f64>())
        })?)
    } else {
        Ok(t.to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?)
    }
}

/// `sqrt(sum of squared gradient norms)` over `params` that have a gradient, as
/// `torch.nn.utils.clip_grad_norm_` computes its total norm (accumulated in f64 here).
/// Non-finite when some gradient is.
pub fn global_grad_norm<P: AsParam>(params: &[P], grads: &GradStore) -> Result<f64> {
    let mut total = 0.0;
    for p in params {
        if let Some(g) = grads.get(p.param_var().as_tensor()) {
            total += l2_sq(g).with_context(|| format!("gradient norm of `{}`", p.param_name()))?;
        }
    }
    Ok(total.sqrt())
}

/// Scale the gradients of `params` so their global norm is at most `max_norm`, with
/// PyTorch's coefficient `max_norm / (total + 1e-6)`, applied only when below 1.
/// Returns the norm before clipping. A non-finite norm leaves the gradients as they are (the
/// caller decides whether to skip the step; see [`first_non_finite_grad`]).
pub fn clip_grad_norm<P: AsParam>(
    params: &[P],
    grads: &mut GradStore,
    max_norm: f64,
) -> Result<f64> {
    ensure!(
        max_norm > 0.0,
        "max_grad_norm must be positive, got {max_norm}"
    );
    let total = global_grad_norm(params, grads)?;
    let coef = max_norm / (total + 1e-6);
    if total.is_finite() && coef < 1.0 {
        for p in params {
            let t = p.param_var().as_tensor();
            if let Some(g) = grads.get(t) {
                let scaled = if all_cpu_f32(&[g]) && g.is_contiguous() {
                    // What `g * coef` computes (candle's affine: `v * mul + 0`), in parallel.
                    let (m, a) = (coef as f32, 0f32);
                    let v =
                        with_f32(g, |d| {
                            let mut out = vec![0f32; d.len()];
                            out.par_chunks_mut(CHUNK).zip(d.par_chunks(CHUNK)).for_each(
                                |(o, d)| o.iter_mut().zip(d).for_each(|(o, &v)| *o = v * m + a),
                            );
                            Ok(out)
                        })?;
                    Tensor::from_vec(v, g.shape(), g.device())?
                } else {
                    (g.detach() * coef)?
                };
                grads.insert(t, scaled);
            }
        }
    }
    Ok(total)
}

/// The name of the first parameter (in `params` order) whose gradient holds a NaN or an
/// infinity, if any.
pub fn first_non_finite_grad<P: AsParam>(
    params: &[P],
    grads: &GradStore,
) -> Result<Option<String>> {
    for p in params {
        if let Some(g) = grads.get(p.param_var().as_tensor()) {
            let finite = if all_cpu_f32(&[g]) {
                with_f32(g, |d| Ok(d.par_iter().all(|x| x.is_finite())))?
            } else {
                l2_sq(g)?.is_finite()
            };
            if !finite {
                return Ok(Some(p.param_name().to_string()));
            }
        }
    }
    Ok(None)
}

/// Fail, naming the parameter, when some gradient is not finite.
pub fn check_finite_grads<P: AsParam>(params: &[P], grads: &GradStore) -> Result<()> {
    match first_non_finite_grad(params, grads)? {
        Some(name) => bail!("the gradient of `{name}` is not finite (NaN or infinity)"),
        None => Ok(()),
    }
}

/// Sums the gradients of several micro-batches per parameter, for gradient accumulation.
/// Following Hugging Face's Trainer, each micro-batch's contribution is scaled as it is added
/// (by `1 / accumulation_steps` for a mean over micro-batches), so [`GradAccumulator::take`]
/// hands back the finished gradients.
#[derive(Debug, Default)]
pub struct GradAccumulator {
    /// Per parameter, the sum so far and whether it is our own tensor (later micro-batches
    /// add into it in place). The first gradient is kept as backward gave it, and copied
    /// only when a second one comes: with one micro-batch per update (the usual case)
    /// nothing is copied.
    sums: HashMap<TensorId, (Tensor, bool)>,
    micro_batches: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `scale * grad` of every parameter in `params` that has a gradient.
    pub fn add<P: AsParam>(&mut self, params: &[P], grads: &GradStore, scale: f64) -> Result<()> {
        for p in params {
            let t = p.param_var().as_tensor();
            let Some(g) = grads.get(t) else { continue };
            let g = g.detach();
            match self.sums.get_mut(&t.id()) {
                None => {
                    let entry = match scale == 1.0 {
                        true => (g, false),
                        false => ((g * scale)?.contiguous()?, true),
                    };
                    self.sums.insert(t.id(), entry);
                }
                Some((acc, owned)) => {
                    if !*owned {
                        // A tensor of our own (never backward's), as the adds write into it.
                        *acc = acc.copy()?.contiguous()?;
                        *owned = true;
                    }
                    ensure!(
                        acc.dims() == g.dims(),
                        "gradient of `{}` has shape {:?}, earlier micro-batches gave {:?}",
                        p.param_name(),
                        g.dims(),
                        acc.dims()
                    );
                    let g = g.contiguous()?;
                    if all_cpu_f32(&[acc, &g]) {
                        let s = scale as f32;
                        with_f32_mut(acc, |a| {
                            with_f32(&g, |g| {
                                a.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(
                                    |(a, g)| a.iter_mut().zip(g).for_each(|(a, &g)| *a += s * g),
                                );
                                Ok(())
                            })
                        })?;
                    } else {
                        *acc = (&*acc + (g * scale)?)?;
                    }
                }
            }
        }
        self.micro_batches += 1;
        Ok(())
    }

    /// How many micro-batches have been added since the last [`GradAccumulator::take`].
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// The accumulated gradients, leaving the accumulator empty for the next update.
    pub fn take(&mut self) -> GradStore {
        let mut store = GradStore::default();
        for (id, (g, _)) in self.sums.drain() {
            store.insert_id(id, g);
        }
        self.micro_batches = 0;
        store
    }

    /// The mean of the added gradients (the sum divided by the number of micro-batches),
    /// for callers that added them unscaled; leaves the accumulator empty.
    pub fn take_mean(&mut self) -> Result<GradStore> {
        let n = self.micro_batches.max(1) as f64;
        let mut store = GradStore::default();
        for (id, (g, _)) in self.sums.drain() {
            store.insert_id(id, (g / n)?);
        }
        self.micro_batches = 0;
        Ok(store)
    }
}

// ----------------------------------------------------------------------------------------
// In-place access to CPU f32 storage

/// Elements per rayon task: large enough that scheduling costs nothing next to the work.
pub(super) const CHUNK: usize = 1 << 14;

/// Run `f` on a contiguous CPU f32 tensor's data without copying it.
pub(super) fn with_f32<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => match layout.contiguous_offsets() {
            Some((a, b)) => f(&v[a..b]),
            None => candle_core::bail!("optimizer: tensor is not contiguous"),
        },
        _ => candle_core::bail!("optimizer: expected a CPU f32 tensor"),
    }
}

/// Run `f` on a contiguous CPU f32 tensor's data, writable in place. candle only hands out
/// mutable storage to in-place custom ops, so `f` rides in one.
pub(super) fn with_f32_mut(
    t: &Tensor,
    f: impl FnOnce(&mut [f32]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    let op = InPlace(RefCell::new(Some(Box::new(f))));
    t.inplace_op1(&op)
}

type MutFn<'f> = Box<dyn FnOnce(&mut [f32]) -> candle_core::Result<()> + 'f>;

struct InPlace<'f>(RefCell<Option<MutFn<'f>>>);

impl InplaceOp1 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "hone-optimizer-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(v) = storage else {
            candle_core::bail!("optimizer: expected f32 storage, got {:?}", storage.dtype())
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("optimizer: tensor is not contiguous")
        };
        let f = self
            .0
            .borrow_mut()
            .take()
            .expect("in-place update runs once");
        f(&mut v[a..b])
    }
}
