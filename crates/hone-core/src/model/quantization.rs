//! Dynamic int8 quantization of the linear layers: the weights int8 per output channel
//! (symmetric), the activations quantized per row at run time (`ops::linear_int8`).
//!
//! A quantized model directory is a Hugging Face one whose `model.safetensors` stores each
//! quantized layer's `weight` as I8 `[out, in]` beside an F32 `weight_scale` `[out]`, and
//! whose `config.json` says so in `quantization_config` (`quant_method = "hone_int8"`).
//! Every other tensor stays f32. A layer whose checkpoint stores its weight `[in, out]`
//! (GPT-2's `Conv1D`) keeps that layout for its I8 tensor, its scales still per output
//! channel, and the file's metadata lists it under `hone_int8_transposed`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::ops::Int8Matrix;

/// What `config.json`'s `quantization_config.quant_method` says of a hone int8 model.
pub const QUANT_METHOD: &str = "hone_int8";
const SCALE_SUFFIX: &str = "_scale";
/// The safetensors metadata key that lists the modules stored `[in, out]`.
const TRANSPOSED_KEY: &str = "hone_int8_transposed";

/// The int8 weights of a model's linear layers, by module name (`bert.encoder.layer.0.
/// attention.self.query`). Loaded from a quantized checkpoint, or filled by the layers
/// themselves while a model is built for quantizing.
#[derive(Debug, Default)]
pub struct Int8Weights {
    by_module: Mutex<HashMap<String, Arc<Int8Matrix>>>,
    /// Modules whose checkpoint weight is `[in, out]` (GPT-2's Conv1D).
    transposed: Mutex<BTreeSet<String>>,
    /// Quantize the weight of every linear layer built (`hone quantize`).
    quantize_new: bool,
}

impl Int8Weights {
    /// A store the linear layers fill as they are built.
    pub fn quantizing() -> Self {
        Self {
            quantize_new: true,
            ..Default::default()
        }
    }

    fn loaded(by_module: HashMap<String, Arc<Int8Matrix>>, transposed: BTreeSet<String>) -> Self {
        Self {
            by_module: Mutex::new(by_module),
            transposed: Mutex::new(transposed),
            quantize_new: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Int8Matrix>>> {
        self.by_module.lock().expect("int8 weights poisoned")
    }

    /// The int8 weight `[out, in]` of the linear layer `module` whose f32 weight is
    /// `[out, in]` (or `[in, out]`, `stored_transposed`): the checkpoint's, or, when
    /// quantizing, a new one.
    pub(crate) fn for_linear(
        &self,
        module: &str,
        weight: &Tensor,
        stored_transposed: bool,
    ) -> candle_core::Result<Option<Arc<Int8Matrix>>> {
        if let Some(q) = self.lock().get(module) {
            return Ok(Some(q.clone()));
        }
        if !self.quantize_new {
            return Ok(None);
        }
        let weight = match stored_transposed {
            true => weight.t()?,
            false => weight.clone(),
        };
        let (n, k) = weight.dims2()?;
        let w = weight
            .to_dtype(DType::F32)?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let q = Arc::new(Int8Matrix::quantize(&w, n, k));
        self.lock().insert(module.to_string(), q.clone());
        if stored_transposed {
            self.transposed
                .lock()
                .expect("int8 weights poisoned")
                .insert(module.to_string());
        }
        Ok(Some(q))
    }

    /// The quantized modules, sorted.
    pub fn modules(&self) -> Vec<String> {
        let mut m: Vec<String> = self.lock().keys().cloned().collect();
        m.sort();
        m
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// `config.json`'s `quantization_config` for these weights.
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::json!({
            "quant_method": QUANT_METHOD,
            "bits": 8,
            "weights": "int8, symmetric, per output channel",
            "activations": "int8, symmetric, per row, at run time",
            "modules": self.modules(),
        })
    }
}

/// A checkpoint's tensors: f32 (and the dequantized f32 of every int8 weight, so that
/// everything that reads weights reads them as ever), and the int8 weights by module, if
/// the file holds any.
pub fn read_safetensors(
    path: &Path,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, Option<Int8Weights>)> {
    crate::io::safetensors_file::verify(path)?;
    let cannot = || format!("cannot read weights {}", path.display());
    // A plain checkpoint is read as before (memory-mapped by candle); only a quantized one
    // is read whole, to split its int8 tensors out.
    if !holds_int8(path).with_context(cannot)? {
        let tensors = candle_core::safetensors::load(path, device).with_context(cannot)?;
        return Ok((tensors, None));
    }
    let bytes = std::fs::read(path).with_context(cannot)?;
    let not_safetensors = || format!("{} is not a safetensors file", path.display());
    let file = safetensors::SafeTensors::deserialize(&bytes).with_context(not_safetensors)?;
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).with_context(not_safetensors)?;
    let transposed: BTreeSet<String> = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(TRANSPOSED_KEY))
        .map(|list| {
            list.split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut tensors = HashMap::new();
    let mut int8 = HashMap::new();
    for (name, view) in file.tensors() {
        if view.dtype() != Dtype::I8 {
            if !name.ends_with(SCALE_SUFFIX) {
                tensors.insert(name.clone(), load_view(&view, device)?);
            }
            continue;
        }
        let scale_name = format!("{name}{SCALE_SUFFIX}");
        let module = name
            .strip_suffix(".weight")
            .with_context(|| format!("{}: int8 tensor `{name}` is not a weight", path.display()))?;
        let (&[rows, cols], Ok(scale)) = (view.shape(), file.tensor(&scale_name)) else {
            bail!(
                "{}: int8 weight `{name}` needs a 2-D shape and an f32 `{scale_name}`",
                path.display()
            )
        };
        let is_transposed = transposed.contains(module);
        let (n, k) = if is_transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let scale = load_view(&scale, device)?.to_vec1::<f32>()?;
        if scale.len() != n {
            bail!(
                "{}: `{scale_name}` has {} scales for {n} rows",
                path.display(),
                scale.len()
            )
        }
        let stored: Vec<i8> = view.data().iter().map(|&b| b as i8).collect();
        let q = match is_transposed {
            // [in, out] as stored -> [out, in] for the kernel.
            true => (0..n * k).map(|i| stored[(i % k) * n + i / k]).collect(),
            false => stored,
        };
        let matrix = Int8Matrix::new(q, scale, n, k);
        let mut f32s = Tensor::from_vec(matrix.dequantize(), (n, k), device)?;
        if is_transposed {
            f32s = f32s.t()?.contiguous()?;
        }
        tensors.insert(name.clone(), f32s);
        int8.insert(module.to_string(), Arc::new(matrix));
    }
    let unknown: Vec<&String> = transposed
        .iter()
        .filter(|m| !int8.contains_key(*m))
        .collect();
    if !unknown.is_empty() {
        bail!(
            "{}: {TRANSPOSED_KEY} names modules without an int8 weight: {unknown:?}",
            path.display()
        )
    }
    Ok((tensors, Some(Int8Weights::loaded(int8, transposed))))
}

/// Whether a safetensors file holds any I8 tensor, from its header alone (8 bytes of
/// length, then the JSON that names each tensor's dtype).
fn holds_int8(path: &Path) -> Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let (header, _) = crate::io::safetensors_file::read_header(&mut file)?;
    Ok(header
        .as_object()
        .is_some_and(|m| m.values().any(|t| t["dtype"] == "I8")))
}

/// An F32 tensor of a quantized file (the only other type [`write_safetensors`] writes).
fn load_view(view: &TensorView, device: &Device) -> Result<Tensor> {
    if view.dtype() != Dtype::F32 {
        bail!(
            "a quantized checkpoint holds I8 and F32 tensors, not {:?}",
            view.dtype()
        )
    }
    let v: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(v, view.shape(), device)?)
}

/// Writes `tensors` (f32, by name) to `path`, each quantized module's weight as I8 beside
/// its F32 scales.
pub fn write_safetensors(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    int8: &Int8Weights,
) -> Result<()> {
    let modules = int8.lock();
    let transposed = int8
        .transposed
        .lock()
        .expect("int8 weights poisoned")
        .clone();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    for (name, t) in tensors {
        let module = name.strip_suffix(".weight");
        if let Some((module, q)) = module.and_then(|m| Some((m, modules.get(m)?))) {
            // In the layout of the f32 weight it replaces: [in, out] for a Conv1D.
            let (shape, bytes) = match transposed.contains(module) {
                true => (
                    vec![q.k, q.n],
                    (0..q.n * q.k)
                        .map(|i| q.q[(i % q.n) * q.k + i / q.n] as u8)
                        .collect(),
                ),
                false => (vec![q.n, q.k], q.q.iter().map(|&v| v as u8).collect()),
            };
            owned.push((name.clone(), Dtype::I8, shape, bytes));
            let scale = q.scale.iter().flat_map(|s| s.to_le_bytes()).collect();
            owned.push((
                format!("{name}{SCALE_SUFFIX}"),
                Dtype::F32,
                vec![q.n],
                scale,
            ));
        } else {
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            owned.push((name.clone(), Dtype::F32, t.dims().to_vec(), bytes));
        }
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = HashMap::new();
    if !transposed.is_empty() {
        let list: Vec<&str> = transposed.iter().map(String::as_str).collect();
        metadata.insert(TRANSPOSED_KEY.to_string(), list.join(","));
    }
    crate::io::safetensors_file::write_views(path, views, metadata)
}
