//! Model configurations, read from and written to Hugging Face `config.json` files.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::layers::Activation;

/// BERT-family encoder hyper-parameters (`model_type = "bert"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_gelu")]
    pub hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default = "default_bert_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob` (Hugging Face).
    #[serde(default)]
    pub classifier_dropout: Option<f64>,
}

/// GPT-2 decoder hyper-parameters (`model_type = "gpt2"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_positions: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_gelu_new")]
    pub activation_function: Activation,
    #[serde(default = "default_dropout")]
    pub resid_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub embd_pdrop: f64,
    #[serde(default = "default_dropout")]
    pub attn_pdrop: f64,
    #[serde(default = "default_gpt_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_init_range")]
    pub initializer_range: f64,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

impl Gpt2Config {
    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

fn default_gelu() -> Activation {
    Activation::Gelu
}
fn default_gelu_new() -> Activation {
    Activation::GeluTanh
}
fn default_dropout() -> f64 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_init_range() -> f64 {
    0.02
}
fn default_bert_eps() -> f64 {
    1e-12
}
fn default_gpt_eps() -> f64 {
    1e-5
}

/// A parsed `config.json`: the architecture-specific part plus the task fields every
/// Hugging Face config carries (labels, architectures).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    /// `architectures[0]`, e.g. `BertForSequenceClassification`.
    pub architecture: Option<String>,
    pub id2label: BTreeMap<usize, String>,
    /// `problem_type`: single_label_classification, multi_label_classification, regression.
    pub problem_type: Option<String>,
    /// The original JSON, so that fields we do not model survive a save.
    pub raw: serde_json::Map<String, Value>,
}

/// Architecture hyper-parameters by `model_type`.
#[derive(Debug, Clone)]
pub enum ArchConfig {
    Bert(BertConfig),
    Gpt2(Gpt2Config),
}

impl ModelConfig {
    /// Read `config.json` from a model directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let raw: serde_json::Map<String, Value> = serde_json::from_str(text)?;
        let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
        let value = Value::Object(raw.clone());
        let arch = match model_type {
            "bert" => ArchConfig::Bert(serde_json::from_value(value)?),
            "gpt2" => ArchConfig::Gpt2(serde_json::from_value(value)?),
            "" => bail!("no `model_type` field"),
            other => bail!("unsupported model_type `{other}` (supported: bert, gpt2)"),
        };
        let architecture = raw
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut id2label = BTreeMap::new();
        if let Some(map) = raw.get("id2label").and_then(Value::as_object) {
            for (k, v) in map {
                let id: usize = k
                    .parse()
                    .with_context(|| format!("id2label key `{k}` is not an integer"))?;
                id2label.insert(id, v.as_str().unwrap_or_default().to_string());
            }
        }
        let problem_type = raw
            .get("problem_type")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Self {
            arch,
            architecture,
            id2label,
            problem_type,
            raw,
        })
    }

    /// Serialise back to `config.json`, with the architecture and labels set.
    pub fn to_json(&self) -> Result<Value> {
        let mut out = self.raw.clone();
        let arch = match &self.arch {
            ArchConfig::Bert(c) => serde_json::to_value(c)?,
            ArchConfig::Gpt2(c) => serde_json::to_value(c)?,
        };
        if let Value::Object(fields) = arch {
            out.extend(fields);
        }
        let model_type = match self.arch {
            ArchConfig::Bert(_) => "bert",
            ArchConfig::Gpt2(_) => "gpt2",
        };
        out.insert("model_type".into(), model_type.into());
        if let Some(a) = &self.architecture {
            out.insert("architectures".into(), serde_json::json!([a]));
        }
        if !self.id2label.is_empty() {
            let id2label: serde_json::Map<String, Value> = self
                .id2label
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.clone())))
                .collect();
            let label2id: serde_json::Map<String, Value> = self
                .id2label
                .iter()
                .map(|(k, v)| (v.clone(), Value::from(*k)))
                .collect();
            out.insert("num_labels".into(), self.id2label.len().into());
            out.insert("id2label".into(), Value::Object(id2label));
            out.insert("label2id".into(), Value::Object(label2id));
        }
        if let Some(p) = &self.problem_type {
            out.insert("problem_type".into(), p.clone().into());
        }
        out.entry("transformers_version")
            .or_insert_with(|| "5.0.0".into());
        Ok(Value::Object(out))
    }
}
