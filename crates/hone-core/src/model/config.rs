//! Model configurations, read from and written to Hugging Face `config.json` files, and the
//! [`Architecture`] questions every architecture answers for the rest of hone.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bert::BertConfig;
use super::gpt2::Gpt2Config;
use super::heads::{Head, ProblemType};
use super::marian::MarianConfig;

/// Hugging Face's `model_type`: which architecture a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Bert,
    Gpt2,
    Marian,
}

impl ModelType {
    pub const ALL: [ModelType; 3] = [ModelType::Bert, ModelType::Gpt2, ModelType::Marian];

    /// The `model_type` string of `config.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::Bert => "bert",
            ModelType::Gpt2 => "gpt2",
            ModelType::Marian => "marian",
        }
    }
}

impl std::fmt::Display for ModelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the code outside an architecture's own module asks of it: sizes, token ids
/// and the names of its parameters. Each architecture's config implements it beside the
/// architecture, so adding one never means editing a `match` elsewhere.
pub trait Architecture: std::fmt::Debug + Send + Sync {
    fn model_type(&self) -> ModelType;
    fn hidden_size(&self) -> usize;
    fn num_layers(&self) -> usize;
    /// Keep `n` layers (a student made of some of a teacher's layers). Architectures whose
    /// layers cannot be counted one way say so.
    fn set_num_layers(&mut self, n: usize) -> Result<()>;
    /// Layer `i`'s tensors that structured pruning cuts, by name, for architectures that
    /// support it (and whose saved form Transformers can load pruned).
    fn prunable_layer(&self, _i: usize) -> Option<PrunableLayer> {
        None
    }
    /// Record pruning: `heads` (original head numbers) leave layer `i`'s attention;
    /// feed-forward layers become `intermediate_size` wide.
    fn record_pruning(
        &mut self,
        _i: usize,
        _heads: &[usize],
        _intermediate_size: usize,
    ) -> Result<()> {
        bail!("structured pruning is not supported for this architecture yet")
    }
    /// Heads of layer `i` as it is now: their original numbers, in order.
    fn remaining_heads(&self, i: usize) -> Vec<usize> {
        let _ = i;
        (0..self.num_attention_heads()).collect()
    }
    fn num_attention_heads(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The longest sequence the position embeddings cover.
    fn max_positions(&self) -> usize;
    /// Standard deviation of the normal initialisation of fresh weights.
    fn initializer_range(&self) -> f64;
    fn pad_token_id(&self) -> Option<u32>;
    fn set_pad_token_id(&mut self, id: u32);
    fn bos_token_id(&self) -> Option<u32> {
        None
    }
    fn eos_token_id(&self) -> Option<u32> {
        None
    }
    /// The head of a checkpoint whose `architectures` entry hone does not know.
    fn default_head(&self) -> Head;
    /// The prefix of the base model's parameters inside a model with a head (`bert.`);
    /// a checkpoint of the bare base model omits it.
    fn base_prefix(&self) -> &'static str;
    /// Name prefixes of the input embedding tables (tokens, positions, segments).
    fn embedding_prefixes(&self) -> Vec<String>;
    /// Name prefix of layer `i` of the stack.
    fn layer_prefix(&self, i: usize) -> String;
    /// The learned absolute position table, if the architecture has one.
    fn position_table(&self) -> Option<String>;
    /// Set the dropout before a classification head (the recipe's `classifier_dropout`).
    fn set_classifier_dropout(&mut self, p: f64) -> Result<()>;
    /// The linear layers PEFT puts LoRA on by default (its per-model mapping).
    fn default_lora_targets(&self) -> Vec<String>;
    /// Whether the linear layer `module` stores its weight `[in, out]` (GPT-2's `Conv1D`)
    /// rather than `[out, in]`: PEFT's `fan_in_fan_out`, and how a merge adds `B A`.
    fn stores_transposed(&self, module: &str) -> bool;
}

/// Architecture hyper-parameters by `model_type`. The one place that lists the
/// architectures; every question about one goes through [`Architecture`] (`Deref`).
#[derive(Debug, Clone)]
pub enum ArchConfig {
    Bert(BertConfig),
    Gpt2(Gpt2Config),
    Marian(MarianConfig),
}

impl Deref for ArchConfig {
    type Target = dyn Architecture;
    fn deref(&self) -> &Self::Target {
        match self {
            ArchConfig::Bert(c) => c,
            ArchConfig::Gpt2(c) => c,
            ArchConfig::Marian(c) => c,
        }
    }
}

impl DerefMut for ArchConfig {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            ArchConfig::Bert(c) => c,
            ArchConfig::Gpt2(c) => c,
            ArchConfig::Marian(c) => c,
        }
    }
}

impl ArchConfig {
    fn from_json(model_type: ModelType, value: Value) -> Result<Self> {
        Ok(match model_type {
            ModelType::Bert => ArchConfig::Bert(serde_json::from_value(value)?),
            ModelType::Gpt2 => ArchConfig::Gpt2(serde_json::from_value(value)?),
            ModelType::Marian => ArchConfig::Marian(serde_json::from_value(value)?),
        })
    }

    fn to_json(&self) -> Result<Value> {
        Ok(match self {
            ArchConfig::Bert(c) => serde_json::to_value(c)?,
            ArchConfig::Gpt2(c) => serde_json::to_value(c)?,
            ArchConfig::Marian(c) => serde_json::to_value(c)?,
        })
    }

    /// The BERT hyper-parameters (for BERT's own builders).
    pub(crate) fn bert(&self) -> candle_core::Result<&BertConfig> {
        match self {
            ArchConfig::Bert(c) => Ok(c),
            other => candle_core::bail!("expected a BERT config, got {}", other.model_type()),
        }
    }

    /// The GPT-2 hyper-parameters (for GPT-2's own builders).
    pub(crate) fn gpt2(&self) -> candle_core::Result<&Gpt2Config> {
        match self {
            ArchConfig::Gpt2(c) => Ok(c),
            other => candle_core::bail!("expected a GPT-2 config, got {}", other.model_type()),
        }
    }

    /// The Marian hyper-parameters (for Marian's own builders).
    pub(crate) fn marian(&self) -> candle_core::Result<&MarianConfig> {
        match self {
            ArchConfig::Marian(c) => Ok(c),
            other => candle_core::bail!("expected a Marian config, got {}", other.model_type()),
        }
    }
}

/// A parsed `config.json`: the architecture-specific part plus the task fields every
/// Hugging Face config carries (labels, architectures).
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ArchConfig,
    /// `architectures[0]`, e.g. `BertForSequenceClassification`.
    pub architecture: Option<String>,
    pub id2label: BTreeMap<usize, String>,
    /// `problem_type` of a sequence classifier.
    pub problem_type: Option<ProblemType>,
    /// The original JSON, so that fields we do not model survive a save.
    pub raw: serde_json::Map<String, Value>,
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
        let model_type = match raw.get("model_type") {
            None => bail!("no `model_type` field"),
            Some(v) => serde_json::from_value::<ModelType>(v.clone()).map_err(|_| {
                anyhow::anyhow!(
                    "unsupported model_type {v} (supported: {})",
                    ModelType::ALL.map(ModelType::as_str).join(", ")
                )
            })?,
        };
        let arch = ArchConfig::from_json(model_type, Value::Object(raw.clone()))?;
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
        let problem_type = match raw.get("problem_type") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| anyhow::anyhow!("problem_type: {e}"))?,
            ),
        };
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
        if let Value::Object(fields) = self.arch.to_json()? {
            out.extend(fields);
        }
        out.insert("model_type".into(), self.arch.model_type().as_str().into());
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
            out.insert("problem_type".into(), serde_json::to_value(p)?);
        }
        out.entry("transformers_version")
            .or_insert_with(|| "5.0.0".into());
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = r#""model_type": "bert", "vocab_size": 10, "hidden_size": 4,
        "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8"#;

    #[test]
    fn problem_type_is_checked_and_defaults_as_in_hugging_face() {
        let parse = |extra: &str| ModelConfig::parse(&format!("{{{TINY}{extra}}}"));
        let err = parse(r#", "problem_type": "binary""#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("problem_type") && err.contains("single_label_classification"),
            "{err}"
        );
        let head = |extra: &str| Head::from_config(&parse(extra).unwrap());
        let seqcls = r#", "architectures": ["BertForSequenceClassification"]"#;
        assert_eq!(
            head(&format!(r#"{seqcls}, "id2label": {{"0": "score"}}"#)).problem(),
            ProblemType::Regression,
            "one label and no problem_type: regression"
        );
        assert_eq!(
            head(&format!(
                r#"{seqcls}, "id2label": {{"0": "a", "1": "b"}}, "problem_type": "multi_label_classification""#
            ))
            .problem(),
            ProblemType::MultiLabel
        );
        let err = ModelConfig::parse(r#"{"model_type": "llama"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("llama") && err.contains("bert, gpt2, marian"),
            "{err}"
        );
    }
}

/// The tensors structured pruning cuts in one layer (Hugging Face names). Weights are
/// `[out, in]`: a head owns `head_dim` rows of query/key/value and as many columns of the
/// attention output; a feed-forward neuron owns a row of the first projection and a column
/// of the second.
#[derive(Debug, Clone)]
pub struct PrunableLayer {
    pub query: String,
    pub key: String,
    pub value: String,
    pub attention_output: String,
    pub intermediate: String,
    pub ffn_output: String,
    pub head_dim: usize,
}
