//! A model: a network with its head, its parameters and configuration, opened from a
//! Hugging Face model directory (`config.json`, `model.safetensors` or `pytorch_model.bin`),
//! from a PEFT adapter directory with its base, or built fresh; and saved back in the same
//! layouts (or merged).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::adapter::{
    is_adapter_param, peft_name, AdapterFiles, Adapters, LoraConfig, ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
};
use super::adapter_set::AdapterSet;
use super::config::{ArchConfig, ModelConfig};
use super::heads::registry::{self, Build};
use super::heads::{net_as, Head, Net, NetKind};
use super::quantization::{self, Int8Weights};
use super::{ModelMode, ParamStore};

/// The files of a model directory, checked to exist: a Hugging Face model, or a PEFT
/// adapter directory together with the base model it was trained on.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory named (the adapter's, for an adapter).
    pub path: PathBuf,
    pub config: ModelConfig,
    /// Where the base weights are: `path` itself, or an adapter's base model.
    pub weights_dir: PathBuf,
    pub adapter: Option<AdapterFiles>,
}

impl ModelDir {
    /// Open a model directory, or an adapter directory with the base its config names.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_base(path, None)
    }

    /// Open a directory; for an adapter, `base` (when given) is the base model's
    /// directory instead of the one `adapter_config.json` names.
    pub fn open_with_base(path: &Path, base: Option<&Path>) -> Result<Self> {
        if !path.is_dir() {
            bail!("model directory {} does not exist", path.display())
        }
        let Some(adapter) = AdapterFiles::find(path)? else {
            if base.is_some() {
                bail!(
                    "--base is for adapter directories; {} has no {ADAPTER_CONFIG}",
                    path.display()
                )
            }
            let config_path = path.join("config.json");
            if !config_path.is_file() {
                bail!("{} has no config.json", path.display())
            }
            return Ok(Self {
                path: path.to_path_buf(),
                config: ModelConfig::load(&config_path)?,
                weights_dir: path.to_path_buf(),
                adapter: None,
            });
        };
        let base_dir = adapter.base_dir(base)?;
        let base_config = base_dir.join("config.json");
        if !base_config.is_file() {
            bail!("the base model {} has no config.json", base_dir.display())
        }
        // hone saves the model's own config (head, labels) beside the adapter; a PEFT
        // directory from elsewhere has only the base's, and its head follows the task type.
        let own = path.join("config.json");
        let config = match own.is_file() {
            true => ModelConfig::load(&own)?,
            false => adapter.head_config(ModelConfig::load(&base_config)?)?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            config,
            weights_dir: base_dir,
            adapter: Some(adapter),
        })
    }

    /// The weights file: `model.safetensors`, else `pytorch_model.bin`.
    pub fn weights_path(&self) -> Result<PathBuf> {
        ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| self.weights_dir.join(f))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{} has neither model.safetensors nor pytorch_model.bin",
                    self.weights_dir.display()
                )
            })
    }

    /// Where the tokenizer is: the directory itself, else an adapter's base.
    pub fn tokenizer_dir(&self) -> &Path {
        let own = ["tokenizer.json", "vocab.txt"]
            .iter()
            .any(|f| self.path.join(f).is_file());
        if own {
            &self.path
        } else {
            &self.weights_dir
        }
    }

    /// The tokenizer that goes with the model (the directory's own, else the base's),
    /// checked to produce no id past the model's vocabulary: such an id would index
    /// beyond the embedding table at run time.
    pub fn tokenizer(&self) -> Result<crate::tokenization::TextTokenizer> {
        let tokenizer = crate::tokenization::TextTokenizer::from_dir(self.tokenizer_dir())?;
        let (ids, vocab) = (tokenizer.vocab_size(), self.config.arch.vocab_size());
        if ids > vocab {
            bail!(
                "the tokenizer in {} has {ids} ids but the model's vocabulary (vocab_size in \
                 {}) has {vocab}: ids {vocab} and above have no embedding",
                self.tokenizer_dir().display(),
                self.path.join("config.json").display()
            )
        }
        Ok(tokenizer)
    }

    /// Read every checkpoint tensor of the base model, with the int8 weights of a
    /// quantized one (their f32 values among the tensors too).
    pub fn read_weights(&self, device: &Device) -> Result<Checkpoint> {
        let path = self.weights_path()?;
        let (tensors, int8) = if path.extension().is_some_and(|e| e == "bin") {
            let tensors = candle_core::pickle::read_all(&path)
                .with_context(|| format!("cannot read PyTorch weights {}", path.display()))?
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            (tensors, None)
        } else {
            quantization::read_safetensors(&path, device)?
        };
        Ok(Checkpoint {
            tensors,
            int8: int8.map(Arc::new),
            path,
        })
    }
}

/// What a model directory's weights file holds.
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    /// The int8 weights of a quantized model.
    pub int8: Option<Arc<Int8Weights>>,
    pub path: PathBuf,
}

/// A network of kind `N` (a head trait such as `dyn SequenceClassifier`, or [`Net`] for
/// whatever head a directory holds) with its configuration, parameters, dropout switch
/// and device.
pub struct Model<N: ?Sized> {
    pub net: Arc<N>,
    pub config: ModelConfig,
    pub head: Head,
    pub params: ParamStore,
    pub mode: ModelMode,
    pub device: Device,
    /// The LoRA adapter the model carries: only it (and the head) trains, and it is what
    /// a save writes.
    pub adapter: Option<LoraConfig>,
}

impl<N: ?Sized> Clone for Model<N> {
    fn clone(&self) -> Self {
        Self {
            net: self.net.clone(),
            config: self.config.clone(),
            head: self.head.clone(),
            params: self.params.clone(),
            mode: self.mode.clone(),
            device: self.device.clone(),
            adapter: self.adapter.clone(),
        }
    }
}

impl Model<Net> {
    /// Load a model directory (or an adapter with its base) with the head its config
    /// names.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::open(&ModelDir::open(dir)?, device)
    }

    /// [`Model::load`] on a directory already opened.
    pub fn open(model_dir: &ModelDir, device: &Device) -> Result<Self> {
        let head = Head::from_config(&model_dir.config);
        Self::load_for(model_dir, head, device, 0)
    }

    /// `model_dir`'s model with the weight of every linear layer quantized to int8 as it
    /// is built (`hone quantize`); [`Model::save_int8`] writes it.
    pub fn load_quantizing(model_dir: &ModelDir, device: &Device) -> Result<Self> {
        if model_dir.adapter.is_some() {
            bail!(
                "{} is an adapter: merge it first (hone merge), then quantize the merged model",
                model_dir.path.display()
            )
        }
        let head = Head::from_config(&model_dir.config);
        Self::load_dir(model_dir, head, None, true, device, 0)
    }

    /// Writes a quantized model into `dir`: `config.json` with its `quantization_config`,
    /// and `model.safetensors` with the int8 weights and their scales.
    pub fn save_int8(&self, dir: &Path) -> Result<()> {
        let Some(int8) = self.mode.int8().filter(|q| !q.is_empty()) else {
            bail!("{} has no linear layer hone quantizes", self.class_name())
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tensors: HashMap<String, Tensor> = self
            .params
            .params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        quantization::write_safetensors(&dir.join("model.safetensors"), &tensors, &int8)?;
        let mut config = self.config.to_json()?;
        config["quantization_config"] = int8.config_json();
        crate::io::write_json(&dir.join("config.json"), &config)
    }

    /// The same model as the network kind a pipeline needs, or an error naming what the
    /// model is instead.
    pub fn into_kind<N: NetKind + ?Sized>(self) -> Result<Model<N>> {
        let net = net_as::<N>((*self.net).clone(), &self.class_name())?;
        Ok(Model {
            net,
            config: self.config,
            head: self.head,
            params: self.params,
            mode: self.mode,
            device: self.device,
            adapter: self.adapter,
        })
    }
}

impl<N: NetKind + ?Sized> Model<N> {
    /// Put `head` on the architecture in `config`, taking weights from `params`.
    pub fn build(
        config: ModelConfig,
        head: Head,
        params: ParamStore,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Self::build_adapted(config, head, params, None, None, device, seed)
    }

    /// [`Model::build`] with a LoRA adapter on the layers it targets; then only the
    /// adapter, the modules to save and the biases it names train.
    fn build_adapted(
        config: ModelConfig,
        head: Head,
        params: ParamStore,
        adapter: Option<LoraConfig>,
        int8: Option<Arc<Int8Weights>>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let mode = ModelMode::new(seed);
        mode.set_int8(int8);
        Self::build_in_mode(config, head, params, adapter, mode, device)
    }

    /// [`Model::build_adapted`] in `mode` (which may hold int8 weights or an adapter set).
    fn build_in_mode(
        mut config: ModelConfig,
        head: Head,
        params: ParamStore,
        adapter: Option<LoraConfig>,
        mode: ModelMode,
        device: &Device,
    ) -> Result<Self> {
        let spec = registry::find(config.arch.model_type(), head.kind())?;
        params.set_buffers(spec.buffers);
        if let Some(lora) = &adapter {
            lora.validate()?;
            let adapters = Adapters {
                config: lora.clone(),
                base_prefix: config.arch.base_prefix().to_string(),
            };
            let kind = head.kind();
            let rule = adapters.clone();
            params.set_trainable(move |name| rule.trains(name, kind));
            mode.set_adapters(Some(adapters));
        }
        let net = (spec.build)(&Build {
            vb: params.var_builder(DType::F32, device),
            arch: &config.arch,
            head: &head,
            mode: &mode,
        })?;
        if let Some(lora) = &adapter {
            check_adapter_fits(&params, lora, &config.arch)?;
        }
        params.finish_loading();
        config.architecture = Some(spec.class_name.to_string());
        if !head.labels().is_empty() {
            config.id2label = head.labels().iter().cloned().enumerate().collect();
        }
        if let Head::SequenceClassification { problem, .. } = &head {
            config.problem_type = Some(*problem);
        }
        Ok(Self {
            net: net_as::<N>(net, spec.class_name)?,
            config,
            head,
            params,
            mode,
            device: device.clone(),
            adapter,
        })
    }

    /// Load a model directory and put `head` on it; head parameters the checkpoint lacks
    /// are initialised from `seed`. An adapter directory brings its trained adapter (and
    /// head), which must fit the base tensor for tensor.
    pub fn load_for(model_dir: &ModelDir, head: Head, device: &Device, seed: u64) -> Result<Self> {
        Self::load_dir(model_dir, head, None, false, device, seed)
    }

    /// Load a model directory for training a new LoRA adapter on it: the adapter starts
    /// as PEFT starts it, the head as [`Model::load_for`] does, the base stays frozen.
    pub fn load_with_new_adapter(
        model_dir: &ModelDir,
        head: Head,
        adapter: LoraConfig,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        if model_dir.adapter.is_some() {
            bail!(
                "{} is an adapter already; train a new one on its base model",
                model_dir.path.display()
            )
        }
        Self::load_dir(model_dir, head, Some(adapter), false, device, seed)
    }

    fn load_dir(
        model_dir: &ModelDir,
        head: Head,
        new_adapter: Option<LoraConfig>,
        quantize: bool,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let arch = &model_dir.config.arch;
        let spec = registry::find(arch.model_type(), head.kind())?;
        let Checkpoint {
            mut tensors,
            int8,
            path,
        } = model_dir.read_weights(device)?;
        let mut source = path.display().to_string();
        // A trained adapter brings its head too: nothing may be missing then.
        let mut new_ok: Vec<String> = spec.head_params.iter().map(|p| p.to_string()).collect();
        let adapter = match (&model_dir.adapter, new_adapter) {
            (Some(files), _) => {
                tensors.extend(files.read_weights(device)?);
                source = format!("{source} + {}", files.dir.join(ADAPTER_WEIGHTS).display());
                new_ok.clear();
                Some(files.config.clone())
            }
            (None, new) => new,
        };
        let params =
            ParamStore::with_checkpoint(tensors, &source, seed, arch.base_prefix(), new_ok);
        if adapter.is_some() && model_dir.adapter.is_none() {
            params.allow_new_adapters();
        }
        let int8 = match quantize {
            true => Some(Arc::new(Int8Weights::quantizing())),
            false => int8,
        };
        Self::build_adapted(
            model_dir.config.clone(),
            head,
            params,
            adapter,
            int8,
            device,
            seed,
        )
        .with_context(|| format!("cannot load the model in {}", model_dir.path.display()))
    }

    /// Several adapters over one base model, for inference ([`AdapterSet`]): batch row `i`
    /// runs through adapter `route[i]` (see [`ModelMode::route`]). The adapters must share
    /// their base model and head (kind and number of labels); the head's parameters the
    /// base lacks must come from every adapter (PEFT's `modules_to_save`).
    pub fn open_with_adapters(adapters: &[(String, ModelDir)], device: &Device) -> Result<Self> {
        let (first_name, first) = adapters.first().context("no adapter given")?;
        let head = Head::from_config(&first.config);
        let mut files = Vec::new();
        for (name, dir) in adapters {
            let adapter = dir.adapter.clone().with_context(|| {
                format!(
                    "{} (adapter `{name}`) has no {ADAPTER_CONFIG}",
                    dir.path.display()
                )
            })?;
            if dir.weights_dir != first.weights_dir {
                bail!(
                    "adapter `{name}` is over {}, adapter `{first_name}` over {}: adapters served together share one base model",
                    dir.weights_dir.display(),
                    first.weights_dir.display()
                )
            }
            let theirs = Head::from_config(&dir.config);
            if theirs.kind() != head.kind() || theirs.labels().len() != head.labels().len() {
                bail!(
                    "adapter `{name}` has a {:?} head with {} labels, adapter `{first_name}` a {:?} head with {}: adapters served together share their head's shape",
                    theirs.kind(),
                    theirs.labels().len(),
                    head.kind(),
                    head.labels().len()
                )
            }
            files.push((name.clone(), adapter));
        }
        let set = Arc::new(AdapterSet::read(&files, device)?);
        let arch = &first.config.arch;
        let spec = registry::find(arch.model_type(), head.kind())?;
        let Checkpoint {
            tensors,
            int8,
            path,
        } = first.read_weights(device)?;
        let new_ok: Vec<String> = spec.head_params.iter().map(|p| p.to_string()).collect();
        let source = path.display().to_string();
        let params = ParamStore::with_checkpoint(tensors, &source, 0, arch.base_prefix(), new_ok);
        let mode = ModelMode::new(0);
        mode.set_int8(int8);
        mode.set_adapter_set(Some(set.clone()));
        let model = Self::build_in_mode(first.config.clone(), head, params, None, mode, device)
            .with_context(|| format!("cannot load the model in {}", first.weights_dir.display()))?;
        if let Some(layer) = set.untaken().first() {
            bail!(
                "adapter tensors for `{layer}` have no place in this {} model",
                arch.model_type()
            )
        }
        for name in model.params.newly_initialized() {
            let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
            if !set.saved_by_all(layer) {
                bail!("`{name}` is in neither the base model ({source}) nor every adapter's {ADAPTER_WEIGHTS}")
            }
        }
        Ok(model)
    }

    /// A fresh model with a LoRA adapter on it (for timing and memory measurements:
    /// training adapters on random weights teaches nothing).
    pub fn from_scratch_with_adapter(
        config: ModelConfig,
        head: Head,
        adapter: LoraConfig,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let params = ParamStore::fresh(seed);
        params.allow_new_adapters();
        Self::build_adapted(config, head, params, Some(adapter), None, device, seed)
    }

    /// A model with freshly initialised weights (pretraining from scratch).
    pub fn from_scratch(
        config: ModelConfig,
        head: Head,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Self::build(config, head, ParamStore::fresh(seed), device, seed)
    }
}

/// After building with an adapter: it reached some layer, and every adapter tensor the
/// checkpoint brought found its place (else the adapter was made for another model).
fn check_adapter_fits(params: &ParamStore, lora: &LoraConfig, arch: &ArchConfig) -> Result<()> {
    let all = params.params();
    if !all.iter().any(|(n, _)| is_adapter_param(n)) {
        let mut layers: Vec<&str> = all
            .iter()
            .filter(|(n, v)| n.ends_with(".weight") && v.rank() == 2)
            .filter_map(|(n, _)| n.strip_suffix(".weight")?.rsplit('.').next())
            .filter(|m| !m.chars().all(|c| c.is_ascii_digit()))
            .collect();
        layers.sort();
        layers.dedup();
        bail!(
            "peft target_modules {:?} match no linear layer of this {} model (its layers are named {})",
            lora.target_modules,
            arch.model_type(),
            layers.join(", ")
        )
    }
    if let Some(stray) = params
        .unused_checkpoint_tensors()
        .into_iter()
        // A module saved whole shadows the base checkpoint's copy, which a base saved
        // without the architecture's prefix (`pooler.dense.bias` for `bert.pooler...`)
        // leaves unused: that copy is not the adapter's.
        .filter(|n| params.get(&format!("{}{n}", arch.base_prefix())).is_none())
        .find(|n| is_adapter_param(n) || params.is_trainable(n))
    {
        bail!(
            "adapter tensor `{stray}` has no place in this {} model (target_modules {:?})",
            arch.model_type(),
            lora.target_modules
        )
    }
    Ok(())
}

impl<N: ?Sized> Model<N> {
    /// The model for inference only: its weights will not change, so its linear layers
    /// may pack them once for the CPU GEMM ([`ModelMode::freeze`]). Training refuses it.
    pub fn frozen(self) -> Self {
        self.mode.freeze();
        self
    }

    /// Hugging Face's class name of this model (`BertForSequenceClassification`).
    pub fn class_name(&self) -> String {
        self.config.architecture.clone().unwrap_or_default()
    }

    /// Replace the learned absolute position table of a fresh model by Vaswani et al.'s
    /// sinusoids, scaled to the random init's RMS (`initializer_range`). The table stays a
    /// trainable parameter with Hugging Face's name; only its starting point changes. Why:
    /// with random rows, attending "to the previous token" must be learned separately for
    /// every position, which keeps small masked LMs on the unigram plateau for a long time;
    /// with sinusoids every fixed offset is one linear map of the table.
    pub fn init_sinusoidal_positions(&self) -> Result<()> {
        let arch = &self.config.arch;
        let name = arch
            .position_table()
            .context("the model has no learned position embeddings")?;
        let var = self
            .params
            .get(&name)
            .with_context(|| format!("the model has no parameter {name}"))?;
        let (rows, dim) = var.dims2()?;
        let table = super::layers::sinusoidal_table(rows, dim, &self.device)?
            .affine(arch.initializer_range() * std::f64::consts::SQRT_2, 0.0)?
            .to_dtype(var.dtype())?;
        var.set(&table)
            .with_context(|| format!("cannot initialise {name}"))?;
        Ok(())
    }

    /// Number of parameters that train (an adapter's and the head's, or all).
    pub fn num_trainable_parameters(&self) -> usize {
        self.params
            .trainable_params()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Total number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.params
            .params()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Write the model into `dir` in Hugging Face's layout: `config.json` and
    /// `model.safetensors`; with an adapter, `config.json` (hone's head and labels) and
    /// PEFT's `adapter_config.json` and `adapter_model.safetensors` (the adapter and the
    /// modules to save only; the base stays where it is).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::io::write_json(&dir.join("config.json"), &self.config.to_json()?)?;
        let Some(lora) = &self.adapter else {
            return self.params.save_safetensors(&dir.join("model.safetensors"));
        };
        let arch = &self.config.arch;
        let mut file = LoraConfig {
            fan_in_fan_out: arch.stores_transposed(arch.base_prefix()),
            ..lora.clone()
        };
        file.task_type
            .get_or_insert_with(|| LoraConfig::task_type_for(self.head.kind()).to_string());
        crate::io::write_json(
            &dir.join(ADAPTER_CONFIG),
            &file.to_peft_json(self.head.kind()),
        )?;
        let tensors: HashMap<String, Tensor> = self
            .params
            .trainable_params()
            .into_iter()
            .map(|(n, v)| (peft_name(&n), v.as_tensor().clone()))
            .collect();
        crate::io::safetensors_file::write(&dir.join(ADAPTER_WEIGHTS), &tensors, HashMap::new())
    }

    /// Set the weights back from what [`Model::save`] wrote into `dir` (a checkpoint):
    /// every parameter, or with an adapter the ones that train.
    pub fn load_weights(&self, dir: &Path) -> Result<()> {
        let (path, params, tensors) = match &self.adapter {
            None => {
                let path = dir.join("model.safetensors");
                crate::io::safetensors_file::verify(&path)?;
                let tensors = candle_core::safetensors::load(&path, &self.device)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                (path, self.params.params(), tensors)
            }
            Some(_) => {
                let files = AdapterFiles {
                    dir: dir.to_path_buf(),
                    config: LoraConfig::load(dir)?,
                };
                let tensors = files.read_weights(&self.device)?;
                (
                    dir.join(ADAPTER_WEIGHTS),
                    self.params.trainable_params(),
                    tensors,
                )
            }
        };
        for (name, var) in params {
            let t = tensors
                .get(&name)
                .with_context(|| format!("{} lacks tensor `{name}`", path.display()))?;
            if t.shape() != var.shape() {
                bail!(
                    "tensor `{name}` in {} has shape {:?}, the model expects {:?}",
                    path.display(),
                    t.dims(),
                    var.dims()
                )
            }
            var.set(t)?;
        }
        Ok(())
    }

    /// Write the model with its adapter folded in, `W + (alpha / r) B A`, as a plain
    /// Hugging Face model directory (what `hone merge` does; PEFT's `merge_and_unload`).
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        let lora = self
            .adapter
            .as_ref()
            .context("the model has no adapter to merge")?;
        let all: HashMap<String, Tensor> = self
            .params
            .params()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        let arch = &self.config.arch;
        let mut merged = HashMap::new();
        for (name, weight) in &all {
            if is_adapter_param(name) {
                continue;
            }
            let module = name.strip_suffix(".weight").unwrap_or("");
            let a = all.get(&format!("{module}.lora_A.weight"));
            let b = all.get(&format!("{module}.lora_B.weight"));
            let weight = match (a, b) {
                (Some(a), Some(b)) => {
                    // [out, r] x [r, in] -> [out, in]; a Conv1D stores W as [in, out].
                    let delta = (b.matmul(a)? * lora.scale())?;
                    let delta = match arch.stores_transposed(module) {
                        true => delta.t()?,
                        false => delta,
                    };
                    (weight + delta)?
                }
                _ => weight.clone(),
            };
            merged.insert(name.clone(), weight);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::io::write_json(&dir.join("config.json"), &self.config.to_json()?)?;
        crate::io::safetensors_file::write(&dir.join("model.safetensors"), &merged, HashMap::new())
    }
}
