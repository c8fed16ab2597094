//! AdamW with decoupled weight decay, PyTorch's update rule.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

/// AdamW hyper-parameters (the learning rate comes with each step, from the schedule).
/// Defaults are PyTorch's: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled decay, applied to parameters whose [`TrainParam::decay`] is set.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct AdamSlot {
    step: u64,
    exp_avg: Option<Tensor>,
    exp_avg_sq: Option<Tensor>,
}

/// `torch.optim.AdamW` (single-tensor path, not amsgrad): for a parameter's `t`-th update,
/// `p *= 1 - lr*wd` first, then `m = lerp(m, g, 1-b1)`, `v = b2*v + (1-b2)*g*g`,
/// `p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`, in f32 as PyTorch computes it.
#[derive(Debug)]
pub struct AdamW {
    params: Vec<TrainParam>,
    config: AdamWConfig,
    slots: Vec<AdamSlot>,
    steps: u64,
}

impl AdamW {
    pub fn new(params: Vec<TrainParam>, config: AdamWConfig) -> Result<Self> {
        ensure!(
            (0.0..1.0).contains(&config.beta1) && (0.0..1.0).contains(&config.beta2),
            "AdamW betas must lie in [0, 1), got ({}, {})",
            config.beta1,
            config.beta2
        );
        ensure!(config.eps >= 0.0, "AdamW eps must not be negative");
        ensure!(
            config.weight_decay >= 0.0,
            "AdamW weight decay must not be negative"
        );
        let slots = vec![AdamSlot::default(); params.len()];
        Ok(Self {
            params,
            config,
            slots,
            steps: 0,
        })
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Change the hyper-parameters (the state is kept).
    pub fn set_config(&mut self, config: AdamWConfig) {
        self.config = config;
    }
}

/// Scalars of one AdamW update of one parameter, as f32 the way PyTorch's CPU kernels see
/// its Python floats.
#[derive(Clone, Copy)]
struct AdamScalars {
    decay: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    bc2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
}

impl AdamScalars {
    fn new(c: &AdamWConfig, lr: f64, wd: f64, t: u64) -> Self {
        let bc1 = 1.0 - c.beta1.powf(t as f64);
        let bc2 = 1.0 - c.beta2.powf(t as f64);
        Self {
            decay: (1.0 - lr * wd) as f32,
            one_minus_b1: (1.0 - c.beta1) as f32,
            b2: c.beta2 as f32,
            one_minus_b2: (1.0 - c.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: c.eps as f32,
            neg_step_size: (-(lr / bc1)) as f32,
        }
    }
}

fn adamw_kernel(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: AdamScalars) {
    let decay = s.decay != 1.0;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for i in 0..p.len() {
                let gi = g[i];
                let mut pi = p[i];
                if decay {
                    pi *= s.decay;
                }
                // torch.lerp for a weight below 0.5: start + weight * (end - start).
                let mi = m[i] + s.one_minus_b1 * (gi - m[i]);
                let vi = v[i] * s.b2 + s.one_minus_b2 * gi * gi;
                let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
                p[i] = pi + s.neg_step_size * mi / denom;
                m[i] = mi;
                v[i] = vi;
            }
        });
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (p, slot) in self.params.iter().zip(self.slots.iter_mut()) {
            let Some(g) = grad_of(p, grads)? else {
                continue;
            };
            let wd = if p.decay {
                self.config.weight_decay
            } else {
                0.0
            };
            let param = p.var.as_tensor();
            if slot.exp_avg.is_none() {
                slot.exp_avg = Some(param.zeros_like()?);
                slot.exp_avg_sq = Some(param.zeros_like()?);
            }
            let (m, v) = (
                slot.exp_avg.as_ref().unwrap(),
                slot.exp_avg_sq.as_ref().unwrap(),
            );
            slot.step += 1;
            let s = AdamScalars::new(&self.config, lr, wd, slot.step);
            if all_cpu_f32(&[param, m, v, &g]) {
                with_f32_mut(param, |pd| {
                    with_f32_mut(m, |md| {
                        with_f32_mut(v, |vd| {
                            with_f32(&g, |gd| {
                                adamw_kernel(pd, md, vd, gd, s);
                                Ok(())
                            })
                        })
                    })
                })
                .with_context(|| format!("AdamW update of `{}`", p.name))?;
            } else {
                let c = &self.config;
                let t = slot.step as f64;
                let (bc1, bc2) = (1.0 - c.beta1.powf(t), 1.0 - c.beta2.powf(t));
                let pd = param.detach();
                let pd = if wd != 0.0 {
                    pd.affine(1.0 - lr * wd, 0.0)?
                } else {
                    pd
                };
                let m_new = (m + ((&g - m)? * (1.0 - c.beta1))?)?;
                let v_new = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                let denom = ((v_new.sqrt()? / bc2.sqrt())? + c.eps)?;
                let p_new = (pd - ((&m_new / denom)? * (lr / bc1))?)?;
                p.var
                    .set(&p_new)
                    .with_context(|| format!("AdamW update of `{}`", p.name))?;
                slot.exp_avg = Some(m_new);
                slot.exp_avg_sq = Some(v_new);
            }
        }
        self.steps += 1;
        Ok(())
    }

    fn step_count(&self) -> u64 {
        self.steps
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = BTreeMap::new();
        let mut param_steps = BTreeMap::new();
        for (p, slot) in self.params.iter().zip(&self.slots) {
            param_steps.insert(p.name.clone(), slot.step);
            if let (Some(m), Some(v)) = (&slot.exp_avg, &slot.exp_avg_sq) {
                tensors.insert(format!("{}.exp_avg", p.name), snapshot(m)?);
                tensors.insert(format!("{}.exp_avg_sq", p.name), snapshot(v)?);
            }
        }
        Ok(OptimizerState {
            kind: OptimizerKind::Adamw,
            step_count: self.steps,
            param_steps,
            tensors,
            hyper: serde_json::to_value(self.config)?,
        })
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        let steps = check_state(&state, OptimizerKind::Adamw, &self.params)?;
        let mut slots = Vec::with_capacity(self.params.len());
        for (p, step) in self.params.iter().zip(steps) {
            slots.push(if step == 0 {
                AdamSlot::default()
            } else {
                AdamSlot {
                    step,
                    exp_avg: Some(state.take(p, "exp_avg")?),
                    exp_avg_sq: Some(state.take(p, "exp_avg_sq")?),
                }
            });
        }
        self.slots = slots;
        self.steps = state.step_count;
        Ok(())
    }

    fn params(&self) -> &[TrainParam] {
        &self.params
    }
}
