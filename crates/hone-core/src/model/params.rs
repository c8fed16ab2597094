//! Where a model's parameters come from and where they are kept.
//!
//! Models are built through a candle [`VarBuilder`] whose backend is a [`ParamStore`]: each
//! requested tensor is taken from a checkpoint (shape-checked, names matched with or without
//! the base-model prefix) or, when the checkpoint lacks it and the name is allowed to be
//! new (a task head), initialised from a seeded RNG so that runs are reproducible.
//! Every parameter is kept, in creation order, as a trainable [`Var`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Parameter names rewritten when reading older checkpoints (TF-era BERT names).
fn legacy_name(name: &str) -> Option<String> {
    if let Some(p) = name.strip_suffix(".weight") {
        if p.ends_with("LayerNorm") {
            return Some(format!("{p}.gamma"));
        }
    }
    if let Some(p) = name.strip_suffix(".bias") {
        if p.ends_with("LayerNorm") {
            return Some(format!("{p}.beta"));
        }
    }
    None
}

/// The parameters of one model, in creation order.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

/// Which parameters train (the others are frozen).
type Trainable = Arc<dyn Fn(&str) -> bool + Send + Sync>;

struct Inner {
    checkpoint: HashMap<String, Tensor>,
    checkpoint_name: String,
    /// The base model's prefix (`bert.`), which a checkpoint of the bare base model omits.
    base_prefix: String,
    /// Names (by prefix) that may be freshly initialised when the checkpoint lacks them.
    new_ok: Vec<String>,
    params: Vec<(String, Var)>,
    index: HashMap<String, usize>,
    /// None: every parameter trains. A frozen parameter reaches the layers detached, as a
    /// constant, so no gradient is computed for it.
    trainable: Option<Trainable>,
    /// Tensors saved with the model that never train (Transformers' buffers, such as
    /// Marian's `final_logits_bias`): handed out detached, left out of the trainable ones.
    buffers: Vec<String>,
    /// Adapter matrices (`lora_A`, `lora_B`) may be fresh: a new adapter is being trained.
    new_adapters: bool,
    used: BTreeSet<String>,
    newly_initialized: Vec<String>,
    rng: ChaCha8Rng,
}

impl ParamStore {
    /// A store that initialises everything from `seed` (training from scratch).
    pub fn fresh(seed: u64) -> Self {
        Self::with_checkpoint(HashMap::new(), "<none>", seed, "", vec![String::new()])
    }

    /// A store backed by checkpoint tensors, whose names may lack the architecture's
    /// `base_prefix`; names starting with one of `new_ok` may be absent from the checkpoint
    /// and are then initialised from `seed`.
    pub fn with_checkpoint(
        checkpoint: HashMap<String, Tensor>,
        checkpoint_name: &str,
        seed: u64,
        base_prefix: &str,
        new_ok: Vec<String>,
    ) -> Self {
        let inner = Inner {
            checkpoint,
            checkpoint_name: checkpoint_name.to_string(),
            base_prefix: base_prefix.to_string(),
            new_ok,
            params: vec![],
            index: HashMap::new(),
            trainable: None,
            buffers: vec![],
            new_adapters: false,
            used: BTreeSet::new(),
            newly_initialized: vec![],
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Train only the parameters `trainable` accepts (call it before the model is built).
    pub fn set_trainable(&self, trainable: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.lock().trainable = Some(Arc::new(trainable));
    }

    /// Mark `names` as buffers: saved and loaded, never trained (call it before the model
    /// is built).
    pub fn set_buffers(&self, names: &[&str]) {
        self.lock().buffers = names.iter().map(|n| n.to_string()).collect();
    }

    /// Let adapter matrices the checkpoint lacks be initialised (training a new adapter).
    pub fn allow_new_adapters(&self) {
        self.lock().new_adapters = true;
    }

    /// Whether `name` trains.
    pub fn is_trainable(&self, name: &str) -> bool {
        self.lock().trains(name)
    }

    /// The parameters that train, in creation order.
    pub fn trainable_params(&self) -> Vec<(String, Var)> {
        let inner = self.lock();
        inner
            .params
            .iter()
            .filter(|(n, _)| inner.trains(n))
            .cloned()
            .collect()
    }

    /// A [`VarBuilder`] over this store.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// All parameters as (Hugging Face name, variable), in creation order.
    pub fn params(&self) -> Vec<(String, Var)> {
        self.lock().params.clone()
    }

    /// A parameter by name.
    pub fn get(&self, name: &str) -> Option<Var> {
        let inner = self.lock();
        inner.index.get(name).map(|&i| inner.params[i].1.clone())
    }

    /// Parameters the checkpoint did not have (a new task head, say).
    pub fn newly_initialized(&self) -> Vec<String> {
        self.lock().newly_initialized.clone()
    }

    /// Checkpoint tensors no parameter asked for.
    pub fn unused_checkpoint_tensors(&self) -> Vec<String> {
        let inner = self.lock();
        let mut unused: Vec<String> = inner
            .checkpoint
            .keys()
            .filter(|k| !inner.used.contains(*k))
            .cloned()
            .collect();
        unused.sort();
        unused
    }

    /// Free the checkpoint tensors once the model is built.
    pub fn finish_loading(&self) {
        let unused = self.unused_checkpoint_tensors();
        if !unused.is_empty() {
            tracing::debug!(
                "checkpoint tensors not used by the model: {}",
                unused.join(", ")
            );
        }
        let newly = self.newly_initialized();
        // From scratch everything is new; say so only when some weights came from a file.
        if !newly.is_empty() && !self.lock().checkpoint.is_empty() {
            let (adapters, others): (Vec<String>, Vec<String>) = newly
                .into_iter()
                .partition(|n| crate::model::adapter::is_adapter_param(n));
            let mut parts = others;
            if !adapters.is_empty() {
                parts.push(format!("{} LoRA matrices", adapters.len()));
            }
            tracing::info!(
                "newly initialised (not in the checkpoint): {}",
                parts.join(", ")
            );
        }
        self.lock().checkpoint.clear();
    }

    /// Save all parameters to a safetensors file under their Hugging Face names.
    pub fn save_safetensors(&self, path: &Path) -> anyhow::Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        crate::io::safetensors_file::write(path, &tensors, HashMap::new())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("parameter store poisoned")
    }
}

impl Inner {
    fn trains(&self, name: &str) -> bool {
        !self.buffers.iter().any(|b| b == name) && self.trainable.as_ref().is_none_or(|t| t(name))
    }

    /// The checkpoint key holding `name`, trying the bare-base-model and legacy spellings.
    fn find(&self, name: &str) -> Option<String> {
        let mut candidates = vec![name.to_string()];
        if let Some(rest) = name
            .strip_prefix(self.base_prefix.as_str())
            .filter(|_| !self.base_prefix.is_empty())
        {
            candidates.push(rest.to_string());
        }
        let legacy: Vec<String> = candidates.iter().filter_map(|c| legacy_name(c)).collect();
        candidates.extend(legacy);
        candidates
            .into_iter()
            .find(|c| self.checkpoint.contains_key(c))
    }

    fn init_tensor(
        &mut self,
        shape: &Shape,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let n = shape.elem_count();
        let values: Vec<f32> = match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => {
                // Box-Muller on the seeded stream, so initialisation is reproducible.
                (0..n)
                    .map(|_| {
                        let u1: f64 = self.rng.gen::<f64>().max(f64::MIN_POSITIVE);
                        let u2: f64 = self.rng.gen();
                        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                        (mean + stdev * z) as f32
                    })
                    .collect()
            }
            Init::Uniform { lo, up } => (0..n).map(|_| self.rng.gen_range(lo..up) as f32).collect(),
            other => bail!("unsupported initialiser {other:?}"),
        };
        Tensor::from_vec(values, shape.clone(), dev)?.to_dtype(dtype)
    }
}

impl candle_nn::var_builder::SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        let mut inner = self.lock();
        let frozen = !inner.trains(name);
        // A frozen parameter is a constant to the graph; it shares the variable's storage.
        let handed = |var: &Var| match frozen {
            true => var.as_tensor().detach(),
            false => var.as_tensor().clone(),
        };
        if let Some(&i) = inner.index.get(name) {
            // Asked twice (a tied weight): the same variable.
            return Ok(handed(&inner.params[i].1));
        }
        let tensor = match inner.find(name) {
            Some(key) => {
                let t = inner.checkpoint[&key].clone();
                if t.shape() != &shape {
                    bail!(
                        "tensor `{key}` in {} has shape {:?}, the model expects {:?}",
                        inner.checkpoint_name,
                        t.dims(),
                        shape.dims()
                    )
                }
                inner.used.insert(key);
                t.to_dtype(dtype)?.to_device(dev)?
            }
            None => {
                let new_ok = inner.new_ok.iter().any(|p| name.starts_with(p.as_str()))
                    || (inner.new_adapters && crate::model::adapter::is_adapter_param(name));
                if !new_ok {
                    bail!(
                        "tensor `{name}` (shape {:?}) is missing from {}",
                        shape.dims(),
                        inner.checkpoint_name
                    )
                }
                inner.newly_initialized.push(name.to_string());
                inner.init_tensor(&shape, init, dtype, dev)?
            }
        };
        let var = Var::from_tensor(&tensor)?;
        let idx = inner.params.len();
        inner.params.push((name.to_string(), var.clone()));
        inner.index.insert(name.to_string(), idx);
        Ok(handed(&var))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let inner = self.lock();
        match inner.find(name) {
            Some(key) => inner.checkpoint[&key].to_dtype(dtype)?.to_device(dev),
            None => bail!("tensor `{name}` is missing from {}", inner.checkpoint_name),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().find(name).is_some()
    }
}
