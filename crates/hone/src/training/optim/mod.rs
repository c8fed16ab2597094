//! Optimizers (AdamW, SGD with momentum) with PyTorch's update rules, state that can be saved
//! and restored bit for bit, and the gradient utilities around them (global norm, clipping,
//! accumulation over micro-batches, finding a non-finite gradient).
//!
//! We do not use candle-nn's optimizers: its AdamW decays every parameter (Hugging Face
//! exempts biases and LayerNorm weights), its moments cannot be saved for an exact resume,
//! and its SGD has no momentum.
//!
//! Updates never build autograd graphs. On the CPU with f32 parameters each parameter's
//! update is one fused, rayon-parallel pass that writes the parameter and its moments in
//! place; elsewhere it is a composition of candle ops whose result goes in with [`Var::set`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Storage, Tensor, TensorId, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

// ----------------------------------------------------------------------------------------
// Which parameters are trained, and which are decayed

/// Which parameters are exempt from weight decay. The default is Hugging Face's rule:
/// names ending in `bias`, or containing `LayerNorm`, `layer_norm` or `ln_` (GPT-2's
/// `ln_1`, `ln_2`, `ln_f`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoDecayRule {
    /// A name ending in one of these is not decayed.
    pub suffixes: Vec<String>,
    /// A name containing one of these is not decayed.
    pub contains: Vec<String>,
}

impl Default for NoDecayRule {
    fn default() -> Self {
        Self {
            suffixes: vec!["bias".into()],
            contains: vec!["LayerNorm".into(), "layer_norm".into(), "ln_".into()],
        }
    }
}

impl NoDecayRule {
    /// A rule that decays every parameter (candle's and plain PyTorch's behaviour).
    pub fn none() -> Self {
        Self {
            suffixes: vec![],
            contains: vec![],
        }
    }

    /// Whether `name` is exempt from weight decay.
    pub fn exempts(&self, name: &str) -> bool {
        self.suffixes.iter().any(|s| name.ends_with(s.as_str()))
            || self.contains.iter().any(|s| name.contains(s.as_str()))
    }
}

/// One parameter as an optimizer sees it.
#[derive(Debug, Clone)]
pub struct TrainParam {
    /// The Hugging Face name; optimizer state is saved under it.
    pub name: String,
    pub var: Var,
    /// Whether weight decay applies (see [`NoDecayRule`]).
    pub decay: bool,
}

/// Something that names a trainable variable: a [`TrainParam`] or a `(name, Var)` pair as
/// [`crate::model::ParamStore::params`] returns them.
pub trait AsParam {
    fn param_name(&self) -> &str;
    fn param_var(&self) -> &Var;
}

impl AsParam for TrainParam {
    fn param_name(&self) -> &str {
        &self.name
    }
    fn param_var(&self) -> &Var {
        &self.var
    }
}

impl AsParam for (String, Var) {
    fn param_name(&self) -> &str {
        &self.0
    }
    fn param_var(&self) -> &Var {
        &self.1
    }
}

/// Split a model's parameters into what an optimizer trains: parameters whose name starts
/// with one of `frozen` (a full name, or a prefix such as `bert.embeddings.`) are left out
/// entirely, the rest are marked decayed or not by `no_decay`. A `frozen` entry that matches
/// no parameter is an error, so that a typo does not silently train everything.
pub fn select_params(
    params: Vec<(String, Var)>,
    no_decay: &NoDecayRule,
    frozen: &[String],
) -> Result<Vec<TrainParam>> {
    let is_frozen = |name: &str| frozen.iter().any(|f| name.starts_with(f.as_str()));
    if let Some(unmatched) = frozen
        .iter()
        .find(|f| !params.iter().any(|(n, _)| n.starts_with(f.as_str())))
    {
        bail!("cannot freeze `{unmatched}`: no parameter of the model has that name or prefix")
    }
    Ok(params
        .into_iter()
        .filter(|(n, _)| !is_frozen(n))
        .map(|(name, var)| TrainParam {
            decay: !no_decay.exempts(&name),
            name,
            var,
        })
        .collect())
}

// ----------------------------------------------------------------------------------------
// The optimizer interface and its saved state

/// An optimizer over a fixed list of [`TrainParam`]s.
pub trait Optimizer {
    /// Apply one update with learning rate `lr`. Parameters without a gradient in `grads`
    /// are left alone (their moments and per-parameter step count too), as PyTorch does for
    /// parameters whose `.grad` is `None`.
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()>;
    /// How many times [`Optimizer::step`] has run (restored by [`Optimizer::load_state`]).
    fn step_count(&self) -> u64;
    /// A deep copy of the state, safe to keep while training goes on.
    fn state(&self) -> Result<OptimizerState>;
    /// Restore a state taken from an optimizer of the same kind over the same parameters.
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
    /// The parameters this optimizer updates.
    fn params(&self) -> &[TrainParam];

    /// Save the state into checkpoint directory `dir` (see [`OptimizerState::save`]).
    fn save(&self, dir: &Path) -> Result<()> {
        self.state()?.save(dir)
    }

    /// Restore the state saved in checkpoint directory `dir`, onto the parameters' device.
    fn load(&mut self, dir: &Path) -> Result<()> {
        let device = self
            .params()
            .first()
            .map(|p| p.var.device().clone())
            .unwrap_or(Device::Cpu);
        let state = OptimizerState::load(dir, &device)?;
        self.load_state(state)
            .with_context(|| format!("cannot restore the optimizer from {}", dir.display()))
    }
}

/// Everything an optimizer needs to resume exactly: the step count, each parameter's own
/// update count and every moment tensor, keyed `"{parameter}.{slot}"` (slots named as in
/// PyTorch: `exp_avg`, `exp_avg_sq`, `momentum_buffer`).
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// `adamw` or `sgd`.
    pub kind: String,
    pub step_count: u64,
    /// Updates each parameter has received (PyTorch keeps one count per parameter).
    pub param_steps: BTreeMap<String, u64>,
    pub tensors: BTreeMap<String, Tensor>,
    /// The hyper-parameters, for the record; loading does not compare them, so a resumed run
    /// may change them.
    pub hyper: serde_json::Value,
}

/// The JSON half of a saved [`OptimizerState`].
#[derive(Debug, Serialize, Deserialize)]
struct StateMeta {
    kind: String,
    step_count: u64,
    param_steps: BTreeMap<String, u64>,
    hyper: serde_json::Value,
}

/// File names of a saved optimizer state inside a checkpoint directory.
pub const STATE_TENSORS_FILE: &str = "optimizer.safetensors";
pub const STATE_META_FILE: &str = "optimizer.json";

impl OptimizerState {
    /// Write `optimizer.safetensors` and `optimizer.json` into `dir`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tensors: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        crate::io::write_atomically(&dir.join(STATE_TENSORS_FILE), |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(anyhow::Error::from)
        })?;
        let meta = StateMeta {
            kind: self.kind.clone(),
            step_count: self.step_count,
            param_steps: self.param_steps.clone(),
            hyper: self.hyper.clone(),
        };
        crate::io::write_json(&dir.join(STATE_META_FILE), &meta)
    }

    /// Read a state written by [`OptimizerState::save`], putting its tensors on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let meta: StateMeta = crate::io::read_json(&dir.join(STATE_META_FILE))?;
        let path = dir.join(STATE_TENSORS_FILE);
        let tensors = candle_core::safetensors::load(&path, device)
            .with_context(|| format!("cannot read optimizer state {}", path.display()))?;
        Ok(Self {
            kind: meta.kind,
            step_count: meta.step_count,
            param_steps: meta.param_steps,
            tensors: tensors.into_iter().collect(),
            hyper: meta.hyper,
        })
    }

    /// The tensor saved for `param`'s `slot`, checked against the parameter's shape.
    fn take(&mut self, param: &TrainParam, slot: &str) -> Result<Tensor> {
        let key = format!("{}.{slot}", param.name);
        let t = self.tensors.remove(&key).with_context(|| {
            format!(
                "optimizer state tensor `{key}` is missing (parameter `{}` has shape {:?})",
                param.name,
                param.var.dims()
            )
        })?;
        ensure!(
            t.dims() == param.var.dims(),
            "optimizer state tensor `{key}` has shape {:?}, parameter `{}` has shape {:?}",
            t.dims(),
            param.name,
            param.var.dims()
        );
        // A private copy on the parameter's device: the update writes it in place.
        Ok(t.to_device(param.var.device())?
            .to_dtype(param.var.dtype())?
            .copy()?)
    }
}

/// Common checks of [`Optimizer::load_state`]: the kind, and that every saved parameter is
/// one we train. Returns each of our parameters' step count (0 when not saved).
fn check_state(state: &OptimizerState, kind: &str, params: &[TrainParam]) -> Result<Vec<u64>> {
    ensure!(
        state.kind == kind,
        "the saved optimizer state is for `{}`, this optimizer is `{kind}`",
        state.kind
    );
    let ours: BTreeSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
    if let Some(extra) = state
        .param_steps
        .keys()
        .find(|n| !ours.contains(n.as_str()))
    {
        bail!("the saved optimizer state has parameter `{extra}`, which this optimizer does not train (frozen or renamed?)")
    }
    Ok(params
        .iter()
        .map(|p| state.param_steps.get(&p.name).copied().unwrap_or(0))
        .collect())
}

/// A private copy of a moment tensor for [`Optimizer::state`]: the live one is written in place.
fn snapshot(t: &Tensor) -> Result<Tensor> {
    Ok(t.copy()?)
}

/// The gradient of `p` in `grads`, shape-checked, detached and contiguous.
fn grad_of(p: &TrainParam, grads: &GradStore) -> Result<Option<Tensor>> {
    let Some(g) = grads.get(p.var.as_tensor()) else {
        return Ok(None);
    };
    ensure!(
        g.dims() == p.var.dims(),
        "gradient of `{}` has shape {:?}, the parameter has shape {:?}",
        p.name,
        g.dims(),
        p.var.dims()
    );
    Ok(Some(g.detach().contiguous()?))
}

/// Whether the fused CPU path can update these tensors.
fn all_cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
}

// ----------------------------------------------------------------------------------------
// AdamW

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
            kind: "adamw".into(),
            step_count: self.steps,
            param_steps,
            tensors,
            hyper: serde_json::to_value(self.config)?,
        })
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        let steps = check_state(&state, "adamw", &self.params)?;
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

// ----------------------------------------------------------------------------------------
// SGD

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
            kind: "sgd".into(),
            step_count: self.steps,
            param_steps,
            tensors,
            hyper: serde_json::to_value(self.config)?,
        })
    }

    fn load_state(&mut self, mut state: OptimizerState) -> Result<()> {
        let steps = check_state(&state, "sgd", &self.params)?;
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

// ----------------------------------------------------------------------------------------
// Gradient utilities

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
    sums: HashMap<TensorId, Tensor>,
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
            match self.sums.get(&t.id()) {
                // A fresh tensor of our own (never the caller's), as later adds write into it.
                None => {
                    let own = if scale == 1.0 {
                        g.copy()?
                    } else {
                        (g * scale)?
                    };
                    self.sums.insert(t.id(), own.contiguous()?);
                }
                Some(acc) => {
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
                        let sum = (acc + (g * scale)?)?;
                        self.sums.insert(t.id(), sum);
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
        for (id, g) in self.sums.drain() {
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
        for (id, g) in self.sums.drain() {
            store.insert_id(id, (g / n)?);
        }
        self.micro_batches = 0;
        Ok(store)
    }
}

// ----------------------------------------------------------------------------------------
// In-place access to CPU f32 storage

/// Elements per rayon task: large enough that scheduling costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// Run `f` on a contiguous CPU f32 tensor's data without copying it.
fn with_f32<R>(
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
fn with_f32_mut(
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

#[cfg(test)]
mod tests;
