//! Model surgery on Hugging Face directories: a student made of some of a teacher's layers
//! (DistilBERT's initialisation), and structured pruning (attention heads and feed-forward
//! neurons cut out of the weights). The architecture says how its layers and tensors are
//! named; nothing here knows a model type.

use std::collections::{BTreeMap, HashMap};
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
    crate::tokenization::copy_tokenizer_files(dir, out)
}

/// What structured pruning removes: per layer, attention heads (their current positions in
/// the layer) and the feed-forward neurons to keep (the same number in every layer, so
/// that the saved config has one `intermediate_size`).
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Layer -> head positions to remove.
    pub heads: BTreeMap<usize, Vec<usize>>,
    /// Layer -> neuron indices to keep, ascending; absent: keep all.
    pub neurons: BTreeMap<usize, Vec<usize>>,
}

/// Apply `plan` to `tensors` (a model's weights, Hugging Face names) and `config`: the
/// query/key/value rows and attention-output columns of removed heads go, as do the
/// feed-forward rows and columns of removed neurons; the config records the pruned heads
/// (by original number, Transformers' `pruned_heads`) and the new `intermediate_size`.
pub fn prune(
    config: &mut ModelConfig,
    tensors: &mut HashMap<String, Tensor>,
    plan: &PrunePlan,
) -> Result<()> {
    let layers = config.arch.num_layers();
    let widths: Vec<usize> = plan.neurons.values().map(Vec::len).collect();
    if widths.windows(2).any(|w| w[0] != w[1]) || (!widths.is_empty() && widths.len() != layers) {
        bail!("feed-forward pruning keeps the same number of neurons in every layer")
    }
    let mut intermediate = None;
    // A bare base checkpoint names its tensors without the base prefix (`encoder.layer.0.`).
    let base = config.arch.base_prefix().to_string();
    let bare = !tensors.keys().any(|k| k.starts_with(&base));
    for i in 0..layers {
        let mut names = config
            .arch
            .prunable_layer(i)
            .context("structured pruning is not supported for this architecture yet")?;
        if bare {
            for n in [
                &mut names.query,
                &mut names.key,
                &mut names.value,
                &mut names.attention_output,
                &mut names.intermediate,
                &mut names.ffn_output,
            ] {
                *n = n.strip_prefix(&base).unwrap_or(n).to_string();
            }
        }
        let remaining = config.arch.remaining_heads(i);
        let remove: Vec<usize> = plan.heads.get(&i).cloned().unwrap_or_default();
        if let Some(&bad) = remove.iter().find(|&&h| h >= remaining.len()) {
            bail!(
                "layer {i} has {} heads, cannot remove head {bad}",
                remaining.len()
            )
        }
        let keep_heads: Vec<usize> = (0..remaining.len())
            .filter(|h| !remove.contains(h))
            .collect();
        if keep_heads.is_empty() {
            bail!("layer {i} would have no attention head left")
        }
        let d = names.head_dim;
        let rows: Vec<u32> = keep_heads
            .iter()
            .flat_map(|&h| (h * d..(h + 1) * d).map(|r| r as u32))
            .collect();
        let get = |tensors: &HashMap<String, Tensor>, name: &str| -> Result<Tensor> {
            tensors
                .get(name)
                .cloned()
                .with_context(|| format!("pruning: the model has no tensor `{name}`"))
        };
        let mut select = |name: String, dim: usize, idx: &[u32]| -> Result<()> {
            let t = get(tensors, &name)?;
            let idx = Tensor::new(idx, t.device())?;
            tensors.insert(name, t.index_select(&idx, dim)?.contiguous()?);
            Ok(())
        };
        if keep_heads.len() < remaining.len() {
            for m in [&names.query, &names.key, &names.value] {
                select(format!("{m}.weight"), 0, &rows)?;
                select(format!("{m}.bias"), 0, &rows)?;
            }
            select(format!("{}.weight", names.attention_output), 1, &rows)?;
        }
        let ffn_width = match plan.neurons.get(&i) {
            Some(keep) => {
                let idx: Vec<u32> = keep.iter().map(|&j| j as u32).collect();
                select(format!("{}.weight", names.intermediate), 0, &idx)?;
                select(format!("{}.bias", names.intermediate), 0, &idx)?;
                select(format!("{}.weight", names.ffn_output), 1, &idx)?;
                keep.len()
            }
            None => get(tensors, &format!("{}.bias", names.intermediate))?.dim(0)?,
        };
        intermediate = Some(ffn_width);
        let removed: Vec<usize> = remove.iter().map(|&h| remaining[h]).collect();
        config.arch.record_pruning(i, &removed, ffn_width)?;
    }
    if intermediate.is_none() {
        bail!("the model has no layers to prune")
    }
    Ok(())
}

/// Prune the model in `dir` by `plan` into `out` (written whole or not at all), with its
/// tokenizer.
pub fn prune_dir(dir: &Path, plan: &PrunePlan, out: &Path) -> Result<()> {
    let mut config = ModelConfig::load(&dir.join("config.json"))?;
    let weights = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .with_context(|| format!("cannot read {}", weights.display()))?;
    prune(&mut config, &mut tensors, plan)?;
    crate::io::write_dir_atomically(out, |tmp| {
        crate::io::write_json(&tmp.join("config.json"), &config.to_json()?)?;
        crate::io::safetensors_file::write(
            &tmp.join("model.safetensors"),
            &tensors,
            HashMap::new(),
        )?;
        crate::tokenization::copy_tokenizer_files(dir, tmp)
    })
}
