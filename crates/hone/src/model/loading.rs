//! Opening a Hugging Face model directory (`config.json`, `model.safetensors` or
//! `pytorch_model.bin`, `tokenizer.json` or `vocab.txt`) as one of our task models.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::config::{ArchConfig, ModelConfig};
use super::heads::{
    BertForPreTraining, BertForSequenceClassification, BertForTokenClassification, ProblemType,
};
use super::{BertModel, Gpt2LmHeadModel, ParamStore, TrainingMode};

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

/// Which head to put on the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// The bare encoder (embeddings, `hone embed`).
    Encoder,
    /// Sequence classification / regression with these labels.
    SequenceClassification {
        id2label: Vec<String>,
        problem: ProblemType,
    },
    /// Token classification with these tags.
    TokenClassification { id2label: Vec<String> },
    /// MLM (+ NSP when `nsp`).
    PreTraining { nsp: bool },
    /// Causal language modelling.
    CausalLm,
}

impl Task {
    /// The task a saved directory was trained for, from `architectures` and `id2label`.
    pub fn from_config(config: &ModelConfig) -> Result<Self> {
        let labels: Vec<String> = config.id2label.values().cloned().collect();
        Ok(match config.architecture.as_deref() {
            Some("BertForSequenceClassification") => Task::SequenceClassification {
                problem: ProblemType::from_hf(config.problem_type.as_deref(), labels.len()),
                id2label: labels,
            },
            Some("BertForTokenClassification") => Task::TokenClassification { id2label: labels },
            Some("BertForPreTraining") => Task::PreTraining { nsp: true },
            Some("BertForMaskedLM") => Task::PreTraining { nsp: false },
            Some("GPT2LMHeadModel") | Some("GPT2Model") => Task::CausalLm,
            _ => match config.arch {
                ArchConfig::Bert(_) => Task::Encoder,
                ArchConfig::Gpt2(_) => Task::CausalLm,
            },
        })
    }

    /// Hugging Face's class name for this task on `config`'s architecture.
    pub fn architecture_name(&self) -> &'static str {
        match self {
            Task::Encoder => "BertModel",
            Task::SequenceClassification { .. } => "BertForSequenceClassification",
            Task::TokenClassification { .. } => "BertForTokenClassification",
            Task::PreTraining { nsp: true } => "BertForPreTraining",
            Task::PreTraining { nsp: false } => "BertForMaskedLM",
            Task::CausalLm => "GPT2LMHeadModel",
        }
    }

    /// Parameter-name prefixes that may be new when fine-tuning from a base checkpoint.
    fn head_prefixes(&self) -> Vec<String> {
        let p: &[&str] = match self {
            Task::Encoder | Task::CausalLm => &[],
            Task::SequenceClassification { .. } => &["classifier.", "bert.pooler."],
            Task::TokenClassification { .. } => &["classifier."],
            Task::PreTraining { .. } => &["cls.", "bert.pooler."],
        };
        p.iter().map(|s| s.to_string()).collect()
    }
}

/// A model with its head.
#[derive(Debug, Clone)]
pub enum TaskModel {
    Encoder(BertModel),
    SequenceClassification(BertForSequenceClassification),
    TokenClassification(BertForTokenClassification),
    PreTraining(BertForPreTraining),
    CausalLm(Gpt2LmHeadModel),
}

/// A built model: its configuration, parameters, dropout switch and the model itself.
#[derive(Clone)]
pub struct LoadedModel {
    pub config: ModelConfig,
    pub task: Task,
    pub params: ParamStore,
    pub mode: TrainingMode,
    pub model: TaskModel,
    pub device: Device,
}

impl LoadedModel {
    /// Build `task` on the architecture in `config`, taking weights from `params`.
    pub fn build(
        mut config: ModelConfig,
        task: Task,
        params: ParamStore,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let mode = TrainingMode::new(seed);
        let vb = params.var_builder(DType::F32, device);
        let model = match (&config.arch, &task) {
            (ArchConfig::Bert(c), Task::Encoder) => {
                let with_pooler = params_contains(&params, "bert.pooler.dense.weight");
                TaskModel::Encoder(BertModel::new(vb.pp("bert"), c, with_pooler, &mode)?)
            }
            (ArchConfig::Bert(c), Task::SequenceClassification { id2label, problem }) => {
                let n = if *problem == ProblemType::Regression {
                    1
                } else {
                    id2label.len()
                };
                TaskModel::SequenceClassification(BertForSequenceClassification::new(
                    vb, c, n, *problem, &mode,
                )?)
            }
            (ArchConfig::Bert(c), Task::TokenClassification { id2label }) => {
                TaskModel::TokenClassification(BertForTokenClassification::new(
                    vb,
                    c,
                    id2label.len(),
                    &mode,
                )?)
            }
            (ArchConfig::Bert(c), Task::PreTraining { nsp }) => {
                TaskModel::PreTraining(BertForPreTraining::new(vb, c, *nsp, &mode)?)
            }
            (ArchConfig::Gpt2(c), Task::CausalLm) => {
                TaskModel::CausalLm(Gpt2LmHeadModel::new(vb, c, &mode)?)
            }
            (arch, task) => bail!(
                "task {} does not fit a {} model",
                task.architecture_name(),
                match arch {
                    ArchConfig::Bert(_) => "BERT",
                    ArchConfig::Gpt2(_) => "GPT-2",
                }
            ),
        };
        params.finish_loading();
        config.architecture = Some(task.architecture_name().to_string());
        match &task {
            Task::SequenceClassification { id2label, problem } => {
                config.id2label = id2label.iter().cloned().enumerate().collect();
                config.problem_type = Some(problem.hf_name().to_string());
            }
            Task::TokenClassification { id2label } => {
                config.id2label = id2label.iter().cloned().enumerate().collect();
            }
            _ => {}
        }
        Ok(Self {
            config,
            task,
            params,
            mode,
            model,
            device: device.clone(),
        })
    }

    /// Load a model directory with the head its config names.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let model_dir = ModelDir::open(dir)?;
        let task = Task::from_config(&model_dir.config)?;
        Self::load_for_task(&model_dir, task, device, 0)
    }

    /// Load a model directory and put `task`'s head on it; head parameters the checkpoint
    /// lacks are initialised from `seed`.
    pub fn load_for_task(
        model_dir: &ModelDir,
        task: Task,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let (tensors, path) = model_dir.read_weights(device)?;
        let params = ParamStore::with_checkpoint(
            tensors,
            &path.display().to_string(),
            seed,
            task.head_prefixes(),
        );
        Self::build(model_dir.config.clone(), task, params, device, seed)
            .with_context(|| format!("cannot load the model in {}", model_dir.path.display()))
    }

    /// A model with freshly initialised weights (pretraining from scratch).
    pub fn from_scratch(
        config: ModelConfig,
        task: Task,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Self::build(config, task, ParamStore::fresh(seed), device, seed)
    }

    /// Replace the learned absolute position table of a fresh model by Vaswani et al.'s
    /// sinusoids, scaled to the random init's RMS (`initializer_range`). The table stays a
    /// trainable parameter with Hugging Face's name; only its starting point changes. Why:
    /// with random rows, attending "to the previous token" must be learned separately for
    /// every position, which keeps small masked LMs on the unigram plateau for a long time;
    /// with sinusoids every fixed offset is one linear map of the table.
    pub fn init_sinusoidal_positions(&self) -> Result<()> {
        let std = match &self.config.arch {
            ArchConfig::Bert(c) => c.initializer_range,
            ArchConfig::Gpt2(c) => c.initializer_range,
        };
        let (name, var) = self
            .params
            .params()
            .into_iter()
            .find(|(n, _)| {
                n.ends_with("embeddings.position_embeddings.weight") || n.ends_with("wpe.weight")
            })
            .context("the model has no learned position embeddings")?;
        let (rows, dim) = var.dims2()?;
        let table = super::layers::sinusoidal_table(rows, dim, &self.device)?
            .affine(std * std::f64::consts::SQRT_2, 0.0)?
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

fn params_contains(params: &ParamStore, name: &str) -> bool {
    use candle_nn::var_builder::SimpleBackend;
    params.contains_tensor(name)
}
