use std::sync::{Arc, OnceLock};

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{Activation, Dropout, ModelMode};
use crate::model::adapter_set::LayerSlots;
use crate::onnx;
use crate::ops::{Epilogue, Int8Matrix, PackedMatrix};

/// `y = x W^T + b`, its product in the model's autocast dtype, plus a LoRA adapter's
/// `(alpha / r) B A dropout(x)` when the model gives this layer one. Hugging Face's GPT-2
/// `Conv1D` stores `W^T` instead; [`Linear::conv1d`] loads that layout and multiplies
/// without the transpose.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight is stored `[in, out]` (GPT-2 Conv1D) rather than `[out, in]`.
    stored_transposed: bool,
    lora: Option<Lora>,
    /// Each adapter's part of a multi-adapter model, applied to its own batch rows.
    slots: Option<Arc<LayerSlots>>,
    /// The weight in int8 (a quantized model): the product runs in int8 on the CPU.
    int8: Option<Arc<Int8Matrix>>,
    /// The weight packed for the CPU's inference GEMM, made on the first forward pass of
    /// a frozen model ([`ModelMode::freeze`]).
    packed: Arc<OnceLock<PackedMatrix>>,
    mode: ModelMode,
}

/// A LoRA adapter: `A [r, in]` (Kaiming-uniform, as PEFT starts it) and `B [out, r]`
/// (zero, so a fresh adapter changes nothing), named `lora_A` / `lora_B` under the layer.
#[derive(Debug, Clone)]
struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: Dropout,
}

/// BERT and GPT-2 initialise weights from N(0, 0.02) and biases at zero.
pub(crate) fn weight_init(std: f64) -> Init {
    Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

impl Linear {
    /// A `[out, in]` weight named `weight` and a bias named `bias` under `vb`.
    pub fn new(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        init_std: f64,
        mode: &ModelMode,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", weight_init(init_std))?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Self::from_weight(weight, Some(bias), mode)
            .with_int8(&vb)?
            .with_adapter(&vb, in_dim, out_dim)
    }

    /// A `[out, in]` weight named `weight` and no bias (GPT-2's classification `score`).
    pub fn without_bias(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        init_std: f64,
        mode: &ModelMode,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", weight_init(init_std))?;
        Self::from_weight(weight, None, mode)
            .with_int8(&vb)?
            .with_adapter(&vb, in_dim, out_dim)
    }

    /// GPT-2's `Conv1D`: the weight is stored `[in, out]`.
    pub fn conv1d(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        init_std: f64,
        mode: &ModelMode,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((in_dim, out_dim), "weight", weight_init(init_std))?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        let layer = Self {
            stored_transposed: true,
            ..Self::from_weight(weight, Some(bias), mode)
        };
        layer.with_int8(&vb)?.with_adapter(&vb, in_dim, out_dim)
    }

    /// A linear map from an existing weight `[out, in]`, e.g. an LM head tied to the token
    /// embedding.
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>, mode: &ModelMode) -> Self {
        Self {
            weight,
            bias,
            stored_transposed: false,
            lora: None,
            slots: None,
            int8: None,
            packed: Arc::default(),
            mode: mode.clone(),
        }
    }

    /// The layer with its int8 weight (`[out, in]`, whatever the stored layout) when the
    /// model is quantized.
    fn with_int8(mut self, vb: &VarBuilder) -> Result<Self> {
        self.int8 = self
            .mode
            .int8_for(&vb.prefix(), &self.weight, self.stored_transposed)?;
        Ok(self)
    }

    /// The layer with an adapter when its model targets it (by the layer's name, `vb`'s
    /// prefix).
    fn with_adapter(mut self, vb: &VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        if let Some(set) = self.mode.adapter_set() {
            self.slots = set.take(&vb.prefix()).map(Arc::new);
        }
        let Some(config) = self.mode.adapter_for(&vb.prefix()) else {
            return Ok(self);
        };
        // PyTorch's kaiming_uniform_(a = sqrt(5)) on [r, in]: U(+-1/sqrt(in)).
        let bound = 1.0 / (in_dim as f64).sqrt();
        let a = vb.pp("lora_A").get_with_hints(
            (config.r, in_dim),
            "weight",
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let b = vb
            .pp("lora_B")
            .get_with_hints((out_dim, config.r), "weight", Init::Const(0.0))?;
        self.lora = Some(Lora {
            a,
            b,
            scale: config.scale(),
            dropout: Dropout::new(config.lora_dropout, &self.mode),
        });
        Ok(self)
    }

    /// One layer that computes `parts` side by side, `[..., sum of their outputs]`: the
    /// weights stacked by output rows (BERT's query, key and value as one product). None
    /// when a part carries an adapter or int8 weights, stores its weight transposed, or the
    /// parts disagree on having a bias.
    pub fn stacked(parts: &[&Linear]) -> Result<Option<Linear>> {
        let plain = |l: &&Linear| {
            l.lora.is_none() && l.slots.is_none() && l.int8.is_none() && !l.stored_transposed
        };
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        if !parts.iter().all(plain)
            || parts
                .iter()
                .any(|l| l.bias.is_some() != first.bias.is_some())
        {
            return Ok(None);
        }
        let weights: Vec<&Tensor> = parts.iter().map(|l| &l.weight).collect();
        let biases: Option<Vec<&Tensor>> = parts.iter().map(|l| l.bias.as_ref()).collect();
        let bias = biases.map(|b| Tensor::cat(&b, 0)).transpose()?;
        let weight = Tensor::cat(&weights, 0)?;
        Ok(Some(Self::from_weight(weight, bias, &first.mode)))
    }

    /// The weight as stored.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Input features (whichever way the weight is stored).
    pub fn in_features(&self) -> Result<usize> {
        self.weight.dim(usize::from(!self.stored_transposed))
    }

    /// `x [..., in]` -> `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Epilogue::None)
    }

    /// `act(x W^T + b)`: on the inference path GELU is applied as the product is stored,
    /// so the `[..., out]` intermediate is written once.
    pub fn forward_activated(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let epilogue = match act {
            Activation::Gelu => Epilogue::GeluErf,
            Activation::GeluTanh => Epilogue::GeluTanh,
            _ => Epilogue::None,
        };
        let fused = epilogue != Epilogue::None
            && self.lora.is_none()
            && self.slots.is_none()
            && (self.int8_for(x).is_some() || self.packed_for(x).is_some());
        match fused {
            true => self.forward_with(x, epilogue),
            false => act.forward(&self.forward(x)?),
        }
    }

    fn forward_with(&self, x: &Tensor, epilogue: Epilogue) -> Result<Tensor> {
        let autocast = self.mode.autocast();
        let t = self.stored_transposed;
        let y = match self.int8_for(x) {
            // Inference only: the int8 product has no gradient.
            Some(q) => crate::ops::linear_int8(x, q, self.bias.as_ref(), epilogue)?,
            None => match self.packed_for(x) {
                Some(packed) => crate::ops::linear_packed(x, packed, self.bias.as_ref(), epilogue)?,
                None => crate::ops::linear(x, &self.weight, self.bias.as_ref(), t, autocast)?,
            },
        };
        let y = match &self.lora {
            None => y,
            Some(lora) => {
                // [..., in] -> [..., r] -> [..., out]; the scale goes on B ([out, r]), not
                // on an activation of the batch's size.
                let h = lora.dropout.forward(x)?;
                let h = crate::ops::linear(&h, &lora.a, None, false, autocast)?;
                let h = crate::ops::linear(&h, &(&lora.b * lora.scale)?, None, false, autocast)?;
                (y + h)?
            }
        };
        match &self.slots {
            None => Ok(y),
            Some(slots) => self.add_slots(x, y, slots),
        }
    }

    /// A multi-adapter model: the base product `y` for the whole batch, then on each
    /// adapter's rows its saved copy of the layer in place of the base's, or its
    /// `(alpha / r) B A x` added. `x [n, ..., in]`, where `n` is the batch or the batch's
    /// rows flattened with their tokens (`n / batch` rows per batch row).
    fn add_slots(&self, x: &Tensor, mut y: Tensor, slots: &LayerSlots) -> Result<Tensor> {
        let route = self.mode.current_route().ok_or_else(|| {
            candle_core::Error::Msg(
                "a model with several adapters runs only with each row's adapter (ModelMode::route)"
                    .into(),
            )
        })?;
        let n = x.dim(0)?;
        if route.is_empty() || n % route.len() != 0 {
            candle_core::bail!("{n} rows in a layer's input, {} rows routed", route.len())
        }
        let per = n / route.len();
        let autocast = self.mode.autocast();
        for (slot, (lora, module)) in slots.lora.iter().zip(&slots.module).enumerate() {
            if lora.is_none() && module.is_none() {
                continue;
            }
            let rows: Vec<u32> = route
                .iter()
                .enumerate()
                .filter(|&(_, &s)| s as usize == slot)
                .flat_map(|(r, _)| (r * per..(r + 1) * per).map(|i| i as u32))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let idx = Tensor::new(rows.as_slice(), x.device())?;
            let xs = x.index_select(&idx, 0)?;
            if let Some(m) = module {
                let w = m.weight.as_ref().unwrap_or(&self.weight);
                let bias = m.bias.as_ref().or(self.bias.as_ref());
                let ys = crate::ops::linear(&xs, w, bias, self.stored_transposed, autocast)?;
                let base = y.index_select(&idx, 0)?;
                y = y.index_add(&idx, &(ys - base)?, 0)?;
            }
            if let Some(l) = lora {
                let h = crate::ops::linear(&xs, &l.a, None, false, autocast)?;
                let h = crate::ops::linear(&h, &l.b_scaled, None, false, autocast)?;
                y = y.index_add(&idx, &h, 0)?;
            }
        }
        Ok(y)
    }

    /// The int8 weight, when this product may use it (inference on the CPU).
    fn int8_for(&self, x: &Tensor) -> Option<&Int8Matrix> {
        let usable = x.device().is_cpu() && !self.mode.is_training();
        self.int8.as_deref().filter(|_| usable)
    }

    /// The packed weight, when this product may use it: a frozen model in evaluation
    /// mode, f32 on the CPU without autocast (packed on first use).
    fn packed_for(&self, x: &Tensor) -> Option<&PackedMatrix> {
        let usable = x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && self.mode.is_inference_only()
            && self.mode.autocast().is_none();
        if !usable {
            return None;
        }
        if let Some(p) = self.packed.get() {
            return Some(p);
        }
        let (rows, cols) = self.weight.dims2().ok()?;
        let (n, k) = match self.stored_transposed {
            true => (cols, rows),
            false => (rows, cols),
        };
        let w = self.weight.flatten_all().ok()?.to_vec1::<f32>().ok()?;
        let t = self.stored_transposed;
        Some(self.packed.get_or_init(|| PackedMatrix::pack(&w, n, k, t)))
    }

    /// The ONNX twin of [`Linear::forward`] at inference (no dropout): `x [..., in]` ->
    /// `[..., out]`, with a LoRA adapter folded into the weight.
    pub fn onnx(&self, g: &mut onnx::Graph, x: &onnx::Value) -> Result<onnx::Value> {
        let w = g.weight("weight", &self.weight_in_out()?)?;
        let y = g.matmul(x, &w);
        match &self.bias {
            Some(b) => {
                let b = g.weight("bias", b)?;
                Ok(g.add(&y, &b))
            }
            None => Ok(y),
        }
    }

    /// `W^T [in, out]` plus the adapter's `(alpha / r) (B A)^T`, as a merge writes it.
    fn weight_in_out(&self) -> Result<Tensor> {
        let w = if self.stored_transposed {
            self.weight.clone()
        } else {
            self.weight.t()?
        };
        match &self.lora {
            None => Ok(w),
            Some(lora) => w + (lora.b.matmul(&lora.a)? * lora.scale)?.t()?,
        }
    }
}
