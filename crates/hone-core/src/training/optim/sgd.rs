//! SGD with momentum, PyTorch's update rule.

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

/// SGD hyper-parameters, as `torch.optim.SGD`'s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SgdConfig {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    /// L2 penalty added to the gradient (`g += wd * p`), for parameters whose
    /// [`TrainParam::decay`] is set.
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Default)]
struct SgdSlot {
    step: u64,
    momentum_buffer: Option<Tensor>,
}

/// `torch.optim.SGD`: `g += wd*p`; with momentum `buf = g` on the first update and
/// `buf = momentum*buf + (1-dampening)*g` after, then `g = g + momentum*buf` (Nesterov) or
/// `g = buf`; finally `p -= lr*g`.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<TrainParam>,
    config: SgdConfig,
    slots: Vec<SgdSlot>,
    steps: u64,
}

impl Sgd {
    pub fn new(params: Vec<TrainParam>, config: SgdConfig) -> Result<Self> {
        ensure!(config.momentum >= 0.0, "SGD momentum must not be negative");
        ensure!(
            config.weight_decay >= 0.0,
            "SGD weight decay must not be negative"
        );
        ensure!(
            !config.nesterov || (config.momentum > 0.0 && config.dampening == 0.0),
            "Nesterov momentum requires a positive momentum and zero dampening"
        );
        let slots = vec![SgdSlot::default(); params.len()];
        Ok(Self {
            params,
            config,
            slots,
            steps: 0,
        })
    }

    pub fn config(&self) -> &SgdConfig {
        &self.config
    }
}

#[derive(Clone, Copy)]
struct SgdScalars {
    wd: f32,
    momentum: f32,
    one_minus_dampening: f32,
    nesterov: bool,
    first: bool,
    neg_lr: f32,
}

fn sgd_kernel(p: &mut [f32], buf: Option<&mut [f32]>, g: &[f32], s: SgdScalars) {
    let decayed = |p: f32, g: f32| if s.wd != 0.0 { g + s.wd * p } else { g };
    match buf {
        None => p
            .par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(p, g)| {
                for (p, &g) in p.iter_mut().zip(g) {
                    *p += s.neg_lr * decayed(*p, g);
                }
            }),
        Some(buf) => p
            .par_chunks_mut(CHUNK)
            .zip(buf.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((p, b), g)| {
                for i in 0..p.len() {
                    let gi = decayed(p[i], g[i]);
                    let bi = if s.first {
                        gi
                    } else {
                        b[i] * s.momentum + s.one_minus_dampening * gi
                    };
                    let d = if s.nesterov { gi + s.momentum * bi } else { bi };
                    p[i] += s.neg_lr * d;
                    b[i] = bi;
                }
            }),
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let c = self.config;
        for (p, slot) in self.params.iter().zip(self.slots.iter_mut()) {
            let Some(g) = grad_of(p, grads)? else {
                continue;
            };
            let wd = if p.decay { c.weight_decay } else { 0.0 };
            let param = p.var.as_tensor();
            let first = slot.momentum_buffer.is_none();
            if c.momentum != 0.0 && first {
                slot.momentum_buffer = Some(param.zeros_like()?);
            }
            slot.step += 1;
            let s = SgdScalars {
                wd: wd as f32,
                momentum: c.momentum as f32,
                one_minus_dampening: (1.0 - c.dampening) as f32,
                nesterov: c.nesterov,
                first,
                neg_lr: -lr as f32,
            };
            let buf = slot.momentum_buffer.as_ref();
            let fused = all_cpu_f32(&[param, &g]) && buf.is_none_or(|b| all_cpu_f32(&[b]));
            if fused {
                with_f32_mut(param, |pd| {
                    with_f32(&g, |gd| match buf {
                        Some(b) => with_f32_mut(b, |bd| {
                            sgd_kernel(pd, Some(bd), gd, s);
                            Ok(())
                        }),
                        None => {
                            sgd_kernel(pd, None, gd, s);
                            Ok(())
                        }
                    })
                })
                .with_context(|| format!("SGD update of `{}`", p.name))?;
            } else {
                let pd = param.detach();
                let g = if wd != 0.0 { (&g + (&pd * wd)?)? } else { g };
                let d = match buf {
                    None => g,
                    Some(b) => {
                        let b_new = if first {
                            g.copy()?
                        } else {
                            ((b * c.momentum)? + (&g * (1.0 - c.dampening))?)?
                        };
                        let d = if c.nesterov {
                            (&g + (&b_new * c.momentum)?)?
                        } else {
                            b_new.clone()
                        };
                        slot.momentum_buffer = Some(b_new);
                        d
                    }
                };
                let p_new = (pd - (d * lr)?)?;
                p.var
                    .set(&p_new)
                    .with_context(|| format!("SGD update of `{}`", p.name))?;
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
            if let Some(b) = &slot.momentum_buffer {
                tensors.insert(format!("{}.momentum_buffer", p.name), snapshot(b)?);
            }
        }
        Ok(OptimizerState {
            kind: OptimizerKind::Sgd,
            step_count: self.steps,
            param_steps,
            tensors,
            hyper: serde_json::to_value(self.config)?,
        })
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        let steps = check_state(&state, OptimizerKind::Sgd, &self.params)?;
        let mut slots = Vec::with_capacity(self.params.len());
        for (p, step) in self.params.iter().zip(steps) {
            let momentum_buffer = if step > 0 && self.config.momentum != 0.0 {
                Some(state.take(p, "momentum_buffer")?)
            } else {
                None
            };
            slots.push(SgdSlot {
                step,
                momentum_buffer,
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
