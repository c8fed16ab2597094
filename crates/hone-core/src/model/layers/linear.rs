use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::ModelMode;

/// `y = x W^T + b`, its product in the model's autocast dtype. Hugging Face's GPT-2
/// `Conv1D` stores `W^T` instead; [`Linear::conv1d`] loads that layout and multiplies
/// without the transpose.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight is stored `[in, out]` (GPT-2 Conv1D) rather than `[out, in]`.
    stored_transposed: bool,
    mode: ModelMode,
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
        Ok(Self::from_weight(weight, Some(bias), mode))
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
        Ok(Self::from_weight(weight, None, mode))
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
        Ok(Self {
            stored_transposed: true,
            ..Self::from_weight(weight, Some(bias), mode)
        })
    }

    /// A linear map from an existing weight `[out, in]`, e.g. an LM head tied to the token
    /// embedding.
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>, mode: &ModelMode) -> Self {
        Self {
            weight,
            bias,
            stored_transposed: false,
            mode: mode.clone(),
        }
    }

    /// The weight as stored.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `x [..., in]` -> `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::linear(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stored_transposed,
            self.mode.autocast(),
        )
    }
}
