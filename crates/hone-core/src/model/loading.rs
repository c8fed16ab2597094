//! A model: a network with its head, its parameters and configuration, opened from a
//! Hugging Face model directory (`config.json`, `model.safetensors` or `pytorch_model.bin`)
//! or built fresh, and saved back in the same layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::config::ModelConfig;
use super::heads::registry::{self, Build};
use super::heads::{net_as, Head, Net, NetKind};
use super::{ModelMode, ParamStore};

/// The files of a model directory, checked to exist.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
    pub config: ModelConfig,
}

impl ModelDir {
    /// Open a directory, reading its `config.json`.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            bail!("model directory {} does not exist", path.display())
        }
        let config_path = path.join("config.json");
        if !config_path.is_file() {
            bail!("{} has no config.json", path.display())
        }
        Ok(Self {
            path: path.to_path_buf(),
            config: ModelConfig::load(&config_path)?,
        })
    }

    /// The weights file: `model.safetensors`, else `pytorch_model.bin`.
    pub fn weights_path(&self) -> Result<PathBuf> {
        ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| self.path.join(f))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{} has neither model.safetensors nor pytorch_model.bin",
                    self.path.display()
                )
            })
    }

    /// Read every checkpoint tensor.
    pub fn read_weights(&self, device: &Device) -> Result<(HashMap<String, Tensor>, PathBuf)> {
        let path = self.weights_path()?;
        let tensors = if path.extension().is_some_and(|e| e == "bin") {
            candle_core::pickle::read_all(&path)
                .with_context(|| format!("cannot read PyTorch weights {}", path.display()))?
                .into_iter()
                .map(|(k, t)| Ok((k, t.to_device(device)?)))
                .collect::<Result<HashMap<_, _>>>()?
        } else {
            candle_core::safetensors::load(&path, device)
                .with_context(|| format!("cannot read weights {}", path.display()))?
        };
        Ok((tensors, path))
    }
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
        }
    }
}

impl Model<Net> {
    /// Load a model directory with the head its config names.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let model_dir = ModelDir::open(dir)?;
        let head = Head::from_config(&model_dir.config);
        Self::load_for(&model_dir, head, device, 0)
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
        })
    }
}

impl<N: NetKind + ?Sized> Model<N> {
    /// Put `head` on the architecture in `config`, taking weights from `params`.
    pub fn build(
        mut config: ModelConfig,
        head: Head,
        params: ParamStore,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let spec = registry::find(config.arch.model_type(), head.kind())?;
        let mode = ModelMode::new(seed);
        let net = (spec.build)(&Build {
            vb: params.var_builder(DType::F32, device),
            arch: &config.arch,
            head: &head,
            mode: &mode,
        })?;
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
        })
    }

    /// Load a model directory and put `head` on it; head parameters the checkpoint lacks
    /// are initialised from `seed`.
    pub fn load_for(model_dir: &ModelDir, head: Head, device: &Device, seed: u64) -> Result<Self> {
        let spec = registry::find(model_dir.config.arch.model_type(), head.kind())?;
        let (tensors, path) = model_dir.read_weights(device)?;
        let params = ParamStore::with_checkpoint(
            tensors,
            &path.display().to_string(),
            seed,
            model_dir.config.arch.base_prefix(),
            spec.head_params.iter().map(|p| p.to_string()).collect(),
        );
        Self::build(model_dir.config.clone(), head, params, device, seed)
            .with_context(|| format!("cannot load the model in {}", model_dir.path.display()))
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

impl<N: ?Sized> Model<N> {
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

    /// Total number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.params
            .params()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    /// Write `config.json` and `model.safetensors` into `dir` (Hugging Face layout).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::io::write_json(&dir.join("config.json"), &self.config.to_json()?)?;
        self.params.save_safetensors(&dir.join("model.safetensors"))
    }
}
