use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// `y = x W^T + b`. Hugging Face's GPT-2 `Conv1D` stores `W^T` instead; [`Linear::conv1d`]
/// loads that layout and multiplies without the transpose.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight is stored `[in, out]` (GPT-2 Conv1D) rather than `[out, in]`.
    stored_transposed: bool,
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
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, init_std: f64) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", weight_init(init_std))?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias: Some(bias),
            stored_transposed: false,
        })
    }

    /// A `[out, in]` weight named `weight` and no bias (GPT-2's classification `score`).
    pub fn without_bias(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        init_std: f64,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", weight_init(init_std))?;
        Ok(Self::from_weight(weight, None))
    }

    /// GPT-2's `Conv1D`: the weight is stored `[in, out]`.
    pub fn conv1d(vb: VarBuilder, in_dim: usize, out_dim: usize, init_std: f64) -> Result<Self> {
        let weight = vb.get_with_hints((in_dim, out_dim), "weight", weight_init(init_std))?;
        let bias = vb.get_with_hints(out_dim, "bias", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias: Some(bias),
            stored_transposed: true,
        })
    }

    /// A linear map from an existing weight, e.g. an LM head tied to the token embedding.
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            stored_transposed: false,
        }
    }

    /// The weight as stored.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bias = self.bias.as_ref();
        let t = self.stored_transposed;
        match x.dims() {
            // Leading dimensions fold into rows: one large GEMM instead of a batched one,
            // and no reshape nodes for the backward pass to walk.
            [_, _] | [_, _, _] => crate::ops::linear(x, &self.weight, bias, t),
            _ => {
                let w = if t {
                    self.weight.clone()
                } else {
                    self.weight.t()?
                };
                let y = x.broadcast_matmul(&w)?;
                match bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
        }
    }
}
