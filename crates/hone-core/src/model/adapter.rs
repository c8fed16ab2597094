//! LoRA adapters (Hu et al., 2021) as Hugging Face PEFT defines them: a linear layer `W`
//! named in `target_modules` gets two small matrices, `A [r, in]` and `B [out, r]`, and
//! computes `W x + (lora_alpha / r) * B A dropout(x)`. `W` stays frozen; only the adapters
//! (and the task head, PEFT's `modules_to_save`) train. The files are PEFT's:
//! `adapter_config.json` and `adapter_model.safetensors`, keys under `base_model.model.`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::heads::{registry, HeadKind};

/// PEFT's file names.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix PEFT's `PeftModel` puts before the base model's parameter names.
const PEFT_PREFIX: &str = "base_model.model.";

/// Which modules get an adapter (PEFT's `target_modules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// Modules whose name is one of these or ends with `.` + one of these (`query`,
    /// `c_attn`, `attention.self.value`).
    Names(Vec<String>),
    /// Every linear layer of the base model (not the task head): PEFT's `all-linear`.
    AllLinear,
}

impl Serialize for TargetModules {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            TargetModules::Names(names) => names.serialize(s),
            TargetModules::AllLinear => s.serialize_str("all-linear"),
        }
    }
}

impl<'de> Deserialize<'de> for TargetModules {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TargetModules;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of module names, or \"all-linear\"")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                match v {
                    "all-linear" => Ok(TargetModules::AllLinear),
                    // PEFT also takes one name as a string (a regex there; a name here).
                    name => Ok(TargetModules::Names(vec![name.to_string()])),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(TargetModules::Names(names))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Which biases train beside the adapters (PEFT's `bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraBias {
    /// None of the base model's.
    #[default]
    None,
    /// Every bias of the base model.
    All,
    /// The biases of the layers that carry an adapter.
    LoraOnly,
}

/// PEFT's `peft_type`; LoRA is the one hone implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PeftType {
    #[default]
    #[serde(rename = "LORA", alias = "lora")]
    Lora,
}

/// A LoRA adapter's settings: a recipe's `[peft]` section and the fields hone reads from
/// and writes to PEFT's `adapter_config.json` (other PEFT fields are ignored on reading).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    #[serde(default)]
    pub peft_type: PeftType,
    /// The rank of `A` and `B`.
    pub r: usize,
    /// The update is scaled by `lora_alpha / r`.
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: TargetModules,
    /// Modules trained and saved whole beside the adapters (the task head); None: the
    /// head's own, as PEFT's task types add them.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default)]
    pub bias: LoraBias,
    /// Set in files for GPT-2 (whose `Conv1D` stores `W` as `[in, out]`); hone knows each
    /// layer's layout and writes it for PEFT.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Where the base model is (PEFT resolves it from the working directory).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// PEFT's task type: SEQ_CLS, TOKEN_CLS, CAUSAL_LM, FEATURE_EXTRACTION, ...
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
}

impl LoraConfig {
    /// `lora_alpha / r`, the factor on `B A x`.
    pub fn scale(&self) -> f64 {
        self.lora_alpha / self.r as f64
    }

    /// Reject what hone does not implement or what cannot work, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            bail!("peft: r must be at least 1")
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            bail!(
                "peft: lora_dropout must be in [0, 1), got {}",
                self.lora_dropout
            )
        }
        if self.use_rslora || self.use_dora {
            bail!("peft: use_rslora and use_dora are not supported (plain LoRA only)")
        }
        if let TargetModules::Names(names) = &self.target_modules {
            if names.is_empty() {
                bail!("peft: target_modules is empty")
            }
        }
        Ok(())
    }

    /// Whether the linear layer named `module` (its full parameter prefix, e.g.
    /// `bert.encoder.layer.0.attention.self.query`) carries an adapter; `base_prefix` is
    /// the architecture's (`bert.`), which bounds `all-linear` to the base model.
    pub fn targets(&self, module: &str, base_prefix: &str) -> bool {
        match &self.target_modules {
            TargetModules::Names(names) => names.iter().any(|t| is_module(module, t)),
            TargetModules::AllLinear => module.starts_with(base_prefix),
        }
    }

    /// The modules trained whole: the recipe's, or the head's as PEFT adds them.
    pub fn modules_to_save(&self, head: HeadKind) -> Vec<String> {
        let mut modules = self.modules_to_save.clone().unwrap_or_default();
        if matches!(
            head,
            HeadKind::SequenceClassification | HeadKind::TokenClassification
        ) {
            for m in ["classifier", "score"] {
                if !modules.iter().any(|x| x == m) {
                    modules.push(m.to_string());
                }
            }
        }
        modules
    }

    /// Whether parameter `name` trains: the adapters, the modules to save, and the biases
    /// `bias` names. `targeted` tells whether its module carries an adapter.
    pub fn trains(&self, name: &str, head: HeadKind, targeted: bool) -> bool {
        if is_adapter_param(name) {
            return true;
        }
        // PEFT wraps a whole module named in modules_to_save (`pooler` is BERT's
        // `bert.pooler`): every parameter under it trains.
        let module = name.rsplit_once('.').map_or("", |(m, _)| m);
        let ancestors = module
            .match_indices('.')
            .map(|(i, _)| &module[..i])
            .chain(std::iter::once(module));
        let to_save = self.modules_to_save(head);
        if ancestors
            .into_iter()
            .any(|a| to_save.iter().any(|m| is_module(a, m)))
        {
            return true;
        }
        name.ends_with(".bias")
            && match self.bias {
                LoraBias::None => false,
                LoraBias::All => true,
                LoraBias::LoraOnly => targeted,
            }
    }

    /// PEFT's task type for a head.
    pub fn task_type_for(head: HeadKind) -> &'static str {
        match head {
            HeadKind::SequenceClassification => "SEQ_CLS",
            HeadKind::TokenClassification => "TOKEN_CLS",
            HeadKind::CausalLm => "CAUSAL_LM",
            HeadKind::Seq2SeqLm => "SEQ_2_SEQ_LM",
            HeadKind::Base | HeadKind::MaskedLm | HeadKind::PreTraining => "FEATURE_EXTRACTION",
        }
    }

    /// Read `adapter_config.json` from an adapter directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a LoRA adapter config", path.display()))?;
        config
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    /// The JSON PEFT writes (its defaults for the fields hone does not use), so that
    /// `PeftModel.from_pretrained` reads it.
    pub fn to_peft_json(&self, head: HeadKind) -> serde_json::Value {
        let target_modules = match &self.target_modules {
            TargetModules::Names(n) => serde_json::json!(n),
            TargetModules::AllLinear => serde_json::json!("all-linear"),
        };
        serde_json::json!({
            "peft_type": "LORA",
            "task_type": self.task_type.clone().unwrap_or_else(|| Self::task_type_for(head).into()),
            "base_model_name_or_path": self.base_model_name_or_path,
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": target_modules,
            "modules_to_save": self.modules_to_save(head),
            "bias": self.bias,
            "fan_in_fan_out": self.fan_in_fan_out,
            "inference_mode": true,
            "init_lora_weights": true,
            "use_rslora": false,
            "use_dora": false,
            "lora_bias": false,
            "rank_pattern": {},
            "alpha_pattern": {},
            "layers_to_transform": null,
            "layers_pattern": null,
            "revision": null,
        })
    }
}

/// Whether module `module` is `target` or ends with `.target` (PEFT's rule).
fn is_module(module: &str, target: &str) -> bool {
    module == target
        || module
            .strip_suffix(target)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a parameter is one of an adapter's matrices (`...query.lora_A.weight`).
pub fn is_adapter_param(name: &str) -> bool {
    name.contains(".lora_A.") || name.contains(".lora_B.")
}

/// A parameter name as PEFT saves it (`base_model.model.` + hone's name).
pub fn peft_name(name: &str) -> String {
    format!("{PEFT_PREFIX}{name}")
}

/// hone's name of a PEFT key: without `base_model.model.`, and without PEFT's
/// `.default` adapter name or the `.modules_to_save.default` wrapper some writers keep.
pub fn from_peft_name(key: &str) -> String {
    let name = key.strip_prefix(PEFT_PREFIX).unwrap_or(key);
    name.replace(".modules_to_save.default.", ".")
        .replace(".lora_A.default.", ".lora_A.")
        .replace(".lora_B.default.", ".lora_B.")
}

/// What a model's linear layers consult when they are built: the adapter settings and
/// the architecture's base prefix (which bounds `all-linear`).
#[derive(Debug, Clone)]
pub struct Adapters {
    pub config: LoraConfig,
    pub base_prefix: String,
}

impl Adapters {
    /// Whether parameter `name` trains under this adapter.
    pub fn trains(&self, name: &str, head: HeadKind) -> bool {
        let module = name.rsplit_once('.').map_or("", |(m, _)| m);
        let targeted = self.config.targets(module, &self.base_prefix);
        self.config.trains(name, head, targeted)
    }
}

/// An adapter directory's files, found and checked.
#[derive(Debug, Clone)]
pub struct AdapterFiles {
    pub dir: PathBuf,
    pub config: LoraConfig,
}

impl AdapterFiles {
    /// The adapter in `dir`, if it holds `adapter_config.json`.
    pub fn find(dir: &Path) -> Result<Option<Self>> {
        if !dir.join(ADAPTER_CONFIG).is_file() {
            return Ok(None);
        }
        let weights = dir.join(ADAPTER_WEIGHTS);
        if !weights.is_file() {
            bail!(
                "{} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}",
                dir.display()
            )
        }
        Ok(Some(Self {
            dir: dir.to_path_buf(),
            config: LoraConfig::load(dir)?,
        }))
    }

    /// The base model's directory: `base` if given, else the config's
    /// `base_model_name_or_path` as PEFT resolves it (from the working directory), else
    /// relative to the adapter directory.
    pub fn base_dir(&self, base: Option<&Path>) -> Result<PathBuf> {
        if let Some(b) = base {
            return Ok(b.to_path_buf());
        }
        let named = self
            .config
            .base_model_name_or_path
            .as_deref()
            .with_context(|| {
                format!(
                    "{}: no base_model_name_or_path; give the base model with --base",
                    self.dir.join(ADAPTER_CONFIG).display()
                )
            })?;
        let candidates = [PathBuf::from(named), self.dir.join(named)];
        candidates
            .iter()
            .find(|p| p.join("config.json").is_file())
            .cloned()
            .with_context(|| {
                format!(
                    "{}: the base model {named:?} is not a model directory here; give it with --base",
                    self.dir.join(ADAPTER_CONFIG).display()
                )
            })
    }

    /// The model config of an adapter directory that has only PEFT's files: the base's,
    /// with the head PEFT's task type names (`SEQ_CLS` on BERT is
    /// `BertForSequenceClassification`) and as many labels as the saved head has rows,
    /// named as Transformers names them (`LABEL_0`, ...).
    pub fn head_config(&self, base: ModelConfig) -> Result<ModelConfig> {
        let kind = match self.config.task_type.as_deref() {
            Some("SEQ_CLS") => HeadKind::SequenceClassification,
            Some("TOKEN_CLS") => HeadKind::TokenClassification,
            Some("CAUSAL_LM") => HeadKind::CausalLm,
            Some("SEQ_2_SEQ_LM") => HeadKind::Seq2SeqLm,
            _ => return Ok(base),
        };
        let spec = registry::find(base.arch.model_type(), kind)?;
        let mut config = base;
        config.architecture = Some(spec.class_name.to_string());
        if matches!(
            kind,
            HeadKind::SequenceClassification | HeadKind::TokenClassification
        ) {
            let tensors = self.read_weights(&candle_core::Device::Cpu)?;
            let rows = self
                .config
                .modules_to_save(kind)
                .iter()
                .find_map(|m| tensors.get(&format!("{m}.weight")))
                .map(|w| w.dim(0))
                .transpose()?
                .with_context(|| {
                    format!(
                        "{}: a {} adapter without its head (modules_to_save) cannot say its labels",
                        self.dir.join(ADAPTER_WEIGHTS).display(),
                        self.config.task_type.as_deref().unwrap_or_default()
                    )
                })?;
            config.id2label = (0..rows).map(|i| (i, format!("LABEL_{i}"))).collect();
        }
        Ok(config)
    }

    /// The adapter's tensors under hone's names.
    pub fn read_weights(
        &self,
        device: &candle_core::Device,
    ) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
        let path = self.dir.join(ADAPTER_WEIGHTS);
        crate::io::safetensors_file::verify(&path)?;
        let tensors = candle_core::safetensors::load(&path, device)
            .with_context(|| format!("cannot read adapter weights {}", path.display()))?;
        Ok(tensors
            .into_iter()
            .map(|(k, t)| (from_peft_name(&k), t))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &str) -> LoraConfig {
        serde_json::from_str(&format!(
            r#"{{"r": 8, "lora_alpha": 16, "target_modules": {targets}, "modules_to_save": null}}"#
        ))
        .unwrap()
    }

    #[test]
    fn targets_and_trainable_parameters_follow_peft() {
        let c = config(r#"["query", "value"]"#);
        assert_eq!(c.scale(), 2.0);
        let q = "bert.encoder.layer.0.attention.self.query";
        assert!(c.targets(q, "bert."));
        assert!(!c.targets("bert.encoder.layer.0.attention.self.key", "bert."));
        assert!(!c.targets("bert.encoder.layer.0.attention.self.xquery", "bert."));
        let all = config(r#""all-linear""#);
        assert!(all.targets("transformer.h.0.attn.c_attn", "transformer."));
        assert!(!all.targets("score", "transformer."));

        let seq = HeadKind::SequenceClassification;
        assert!(c.trains(&format!("{q}.lora_A.weight"), seq, true));
        assert!(c.trains("classifier.weight", seq, false));
        assert!(c.trains("score.weight", seq, false));
        assert!(!c.trains(&format!("{q}.weight"), seq, true));
        assert!(!c.trains(&format!("{q}.bias"), seq, true));
        assert!(!c.trains("bert.pooler.dense.weight", seq, false));
        assert!(!c.trains("lm_head.weight", HeadKind::CausalLm, false));
        // A parent module in modules_to_save trains everything under it, as PEFT wraps it.
        let pooler = LoraConfig {
            modules_to_save: Some(vec!["pooler".into()]),
            ..c.clone()
        };
        assert!(pooler.trains("bert.pooler.dense.weight", seq, false));
        assert!(!pooler.trains("bert.encoder.layer.0.output.dense.weight", seq, false));
        let lora_only = LoraConfig {
            bias: LoraBias::LoraOnly,
            ..c.clone()
        };
        assert!(lora_only.trains(&format!("{q}.bias"), seq, true));
        assert!(!lora_only.trains("bert.encoder.layer.0.output.dense.bias", seq, false));
    }

    #[test]
    fn peft_names_round_trip() {
        let name = "bert.encoder.layer.0.attention.self.query.lora_A.weight";
        assert_eq!(from_peft_name(&peft_name(name)), name);
        assert_eq!(
            from_peft_name("base_model.model.classifier.modules_to_save.default.weight"),
            "classifier.weight"
        );
        assert_eq!(
            from_peft_name("base_model.model.x.query.lora_B.default.weight"),
            "x.query.lora_B.weight"
        );
    }

    #[test]
    fn unsupported_settings_are_named() {
        let mut c = config(r#"["query"]"#);
        c.use_dora = true;
        assert!(c.validate().unwrap_err().to_string().contains("use_dora"));
        let mut c = config(r#"["query"]"#);
        c.r = 0;
        assert!(c.validate().unwrap_err().to_string().contains("r must"));
    }
}
