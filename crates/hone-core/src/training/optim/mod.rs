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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

mod adamw;
mod grads;
mod sgd;

pub use adamw::*;
pub use grads::*;
pub use sgd::*;

// ----------------------------------------------------------------------------------------
// Which parameters are trained, and which are decayed

/// Which optimizer to use (the recipe's `optim`, Hugging Face's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    #[serde(alias = "adamw_torch", alias = "adamw_hf")]
    Adamw,
    Sgd,
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Sgd => "sgd",
        })
    }
}

/// Which parameters weight decay applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecayRule {
    /// Matrices decay (rank >= 2: linear weights, embeddings); vectors do not (biases,
    /// LayerNorm gains). nanoGPT's rule: it needs no parameter names, and on BERT and GPT-2
    /// it picks exactly what Hugging Face's name rule (no `bias`, no `LayerNorm`) picks.
    #[default]
    Matrices,
    /// Every parameter decays (plain PyTorch's and candle's AdamW).
    All,
}

impl DecayRule {
    /// Whether weight decay applies to `var`.
    pub fn decays(&self, var: &Var) -> bool {
        match self {
            DecayRule::Matrices => var.rank() >= 2,
            DecayRule::All => true,
        }
    }
}

/// One parameter as an optimizer sees it.
#[derive(Debug, Clone)]
pub struct TrainParam {
    /// The Hugging Face name; optimizer state is saved under it.
    pub name: String,
    pub var: Var,
    /// Whether weight decay applies (see [`DecayRule`]).
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
/// entirely, the rest are marked decayed or not by `decay`. A `frozen` entry that matches
/// no parameter is an error, so that a typo does not silently train everything.
pub fn select_params(
    params: Vec<(String, Var)>,
    decay: DecayRule,
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
            decay: decay.decays(&var),
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
    pub kind: OptimizerKind,
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
    kind: OptimizerKind,
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
        crate::io::safetensors_file::write(
            &dir.join(STATE_TENSORS_FILE),
            &tensors,
            HashMap::new(),
        )?;
        let meta = StateMeta {
            kind: self.kind,
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
        crate::io::safetensors_file::verify(&path)?;
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
fn check_state(
    state: &OptimizerState,
    kind: OptimizerKind,
    params: &[TrainParam],
) -> Result<Vec<u64>> {
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

#[cfg(test)]
mod tests;
