//! Several LoRA adapters over one base model, for inference: each batch row names its
//! adapter, and every layer runs the base product for the whole batch and adds each
//! adapter's `(alpha / r) B A x` on its own rows (S-LoRA's and Punica's batching). The base
//! weights exist once; each adapter adds only its small matrices and its saved modules
//! (PEFT's `modules_to_save`, the task head).
//!
//! A layer finds its adapters by its name when the model is built ([`AdapterSet::take`]);
//! a forward pass finds which rows belong to which adapter in the model's mode
//! ([`super::ModelMode::route`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use super::adapter::AdapterFiles;

/// One adapter's matrices on one layer: `A [r, in]` and `(alpha / r) B [out, r]`.
#[derive(Debug, Clone)]
pub struct SlotLora {
    pub a: Tensor,
    pub b_scaled: Tensor,
}

/// One adapter's own copy of a whole layer (a module it saves): its weight and bias where
/// it has them, the base layer's otherwise.
#[derive(Debug, Clone, Default)]
pub struct SlotModule {
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
}

/// What one layer carries for each adapter (indexed by slot; None where that adapter
/// leaves the layer as the base has it).
#[derive(Debug, Clone, Default)]
pub struct LayerSlots {
    pub lora: Vec<Option<SlotLora>>,
    pub module: Vec<Option<SlotModule>>,
}

/// The adapters of a multi-adapter model, by slot (the order they were given).
#[derive(Debug)]
pub struct AdapterSet {
    pub names: Vec<String>,
    /// Per layer name, its slots; a layer takes its entry when built.
    layers: Mutex<BTreeMap<String, LayerSlots>>,
    /// The layers every adapter has its own weight for (the base's copy is never used).
    saved_by_all: BTreeSet<String>,
}

impl AdapterSet {
    /// Read each adapter's tensors (hone's names) and sort them by layer. Adapters that
    /// train biases of the base model are refused: their rows would need other biases in
    /// every layer they touch, which only a merged model gives.
    pub fn read(adapters: &[(String, AdapterFiles)], device: &Device) -> Result<Self> {
        let n = adapters.len();
        let mut layers: BTreeMap<String, LayerSlots> = BTreeMap::new();
        fn slots<'a>(
            layers: &'a mut BTreeMap<String, LayerSlots>,
            layer: &str,
            n: usize,
        ) -> &'a mut LayerSlots {
            layers
                .entry(layer.to_string())
                .or_insert_with(|| LayerSlots {
                    lora: vec![None; n],
                    module: vec![None; n],
                })
        }
        for (slot, (name, files)) in adapters.iter().enumerate() {
            let config = &files.config;
            if config.bias != super::adapter::LoraBias::None {
                bail!(
                    "adapter `{name}` ({}) trains the base model's biases (bias = {:?}): several adapters share a model only with bias = \"none\"; serve it alone",
                    files.dir.display(),
                    config.bias
                )
            }
            let tensors: HashMap<String, Tensor> = files.read_weights(device)?;
            let mut a_of: HashMap<String, Tensor> = HashMap::new();
            let mut b_of: HashMap<String, Tensor> = HashMap::new();
            for (key, t) in tensors {
                if let Some(layer) = key.strip_suffix(".lora_A.weight") {
                    a_of.insert(layer.to_string(), t);
                } else if let Some(layer) = key.strip_suffix(".lora_B.weight") {
                    b_of.insert(layer.to_string(), t);
                } else if let Some(layer) = key.strip_suffix(".weight") {
                    let m = slots(&mut layers, layer, n).module[slot]
                        .get_or_insert_with(SlotModule::default);
                    m.weight = Some(t);
                } else if let Some(layer) = key.strip_suffix(".bias") {
                    let m = slots(&mut layers, layer, n).module[slot]
                        .get_or_insert_with(SlotModule::default);
                    m.bias = Some(t);
                } else {
                    bail!("adapter `{name}`: tensor `{key}` is neither a LoRA matrix nor a weight or bias")
                }
            }
            for (layer, a) in a_of {
                let b = b_of.remove(&layer).with_context(|| {
                    format!("adapter `{name}`: `{layer}.lora_A.weight` has no lora_B")
                })?;
                let b_scaled = (b * config.scale())?;
                slots(&mut layers, &layer, n).lora[slot] = Some(SlotLora { a, b_scaled });
            }
            if let Some(layer) = b_of.keys().next() {
                bail!("adapter `{name}`: `{layer}.lora_B.weight` has no lora_A")
            }
        }
        let saved_by_all = layers
            .iter()
            .filter(|(_, s)| {
                s.module
                    .iter()
                    .all(|m| m.as_ref().is_some_and(|m| m.weight.is_some()))
            })
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Self {
            names: adapters.iter().map(|(n, _)| n.clone()).collect(),
            layers: Mutex::new(layers),
            saved_by_all,
        })
    }

    /// The slots of layer `name`, removed from the set (each layer takes its own once).
    pub fn take(&self, name: &str) -> Option<LayerSlots> {
        self.layers
            .lock()
            .expect("adapter set poisoned")
            .remove(name)
    }

    /// Whether every adapter has its own weight for layer `name` (so the base's, maybe
    /// freshly initialised, is never used).
    pub fn saved_by_all(&self, name: &str) -> bool {
        self.saved_by_all.contains(name)
    }

    /// After the model is built: the layers no layer took (the adapter was made for
    /// another model).
    pub fn untaken(&self) -> Vec<String> {
        self.layers
            .lock()
            .expect("adapter set poisoned")
            .keys()
            .cloned()
            .collect()
    }
}
