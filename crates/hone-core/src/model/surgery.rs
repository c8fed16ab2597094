//! Model surgery on Hugging Face directories: a student made of some of a teacher's layers
//! (DistilBERT's initialisation). The architecture says how its layers are named and
//! counted; nothing here knows a model type.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::config::ModelConfig;

/// Write to `out` the model of `dir` with only `layers` (teacher layer numbers, in the
/// student's order): student layer i is teacher layer `layers[i]`; embeddings, pooler and
/// head are copied whole. The tokenizer files come along.
pub fn keep_layers(dir: &Path, layers: &[usize], out: &Path) -> Result<()> {
    let mut config = ModelConfig::load(&dir.join("config.json"))?;
    let n = config.arch.num_layers();
    if layers.is_empty() {
        bail!("student_layers is empty")
    }
    if let Some(&bad) = layers.iter().find(|&&l| l >= n) {
        bail!(
            "student_layers: layer {bad} does not exist ({} has {n} layers, 0 to {})",
            dir.display(),
            n - 1
        )
    }
    let weights = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .with_context(|| format!("cannot read {}", weights.display()))?;
    // A checkpoint may name its base model's tensors with or without the base prefix
    // (`bert.encoder.layer.3.` or `encoder.layer.3.`).
    let base = config.arch.base_prefix().to_string();
    let prefixes = |i: usize| {
        let full = config.arch.layer_prefix(i);
        let bare = full
            .strip_prefix(base.as_str())
            .unwrap_or(&full)
            .to_string();
        [full, bare]
    };
    let teacher_prefixes: Vec<[String; 2]> = (0..n).map(prefixes).collect();
    let mut kept: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in tensors {
        let layer = teacher_prefixes.iter().enumerate().find_map(|(j, ps)| {
            ps.iter()
                .position(|p| name.starts_with(p.as_str()))
                .map(|k| (j, k))
        });
        match layer {
            None => {
                kept.insert(name, t);
            }
            Some((j, form)) => {
                if let Some(i) = layers.iter().position(|&l| l == j) {
                    let rest = &name[teacher_prefixes[j][form].len()..];
                    kept.insert(format!("{}{rest}", prefixes(i)[form]), t);
                }
            }
        }
    }
    config.arch.set_num_layers(layers.len())?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    crate::io::write_json(&out.join("config.json"), &config.to_json()?)?;
    crate::io::safetensors_file::write(&out.join("model.safetensors"), &kept, HashMap::new())?;
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
    ] {
        let src = dir.join(file);
        if src.is_file() {
            std::fs::copy(&src, out.join(file))
                .with_context(|| format!("cannot copy {}", src.display()))?;
        }
    }
    Ok(())
}
