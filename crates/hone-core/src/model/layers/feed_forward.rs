use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::{Dropout, Linear};
use crate::onnx;

/// The FFN non-linearity, named as in Hugging Face configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, `x * Phi(x)` (BERT's "gelu").
    Gelu,
    /// GELU with the tanh approximation (GPT-2's "gelu_new"). Written as `gelu_new`, the
    /// name Transformers' ACT2FN knows (it has no `gelu_tanh`).
    #[serde(
        rename = "gelu_new",
        alias = "gelu_tanh",
        alias = "gelu_pytorch_tanh",
        alias = "gelu_fast"
    )]
    GeluTanh,
    Relu,
    /// `x * sigmoid(x)` (Marian's "swish"; PyTorch's SiLU).
    #[serde(alias = "silu")]
    Swish,
}

impl Activation {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => crate::ops::gelu_erf(x),
            Activation::GeluTanh => crate::ops::gelu_tanh(x),
            Activation::Relu => crate::ops::relu(x),
            Activation::Swish => crate::ops::silu(x),
        }
    }

    /// The ONNX twin of [`Activation::forward`], from standard operators (Erf and Tanh,
    /// not opset 20's Gelu, so that opset 17 readers take it).
    pub fn onnx(&self, g: &mut onnx::Graph, x: &onnx::Value) -> Result<onnx::Value> {
        let half = g.constant(&[0.5], &[])?;
        let one = g.constant(&[1.0], &[])?;
        Ok(match self {
            // x/2 (1 + erf(x / sqrt 2))
            Activation::Gelu => {
                let sqrt2 = g.constant(&[std::f32::consts::SQRT_2], &[])?;
                let e = g.div(x, &sqrt2);
                let e = g.erf(&e);
                let e = g.add(&e, &one);
                let y = g.mul(x, &e);
                g.mul(&y, &half)
            }
            // x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
            Activation::GeluTanh => {
                let (three, c) = (g.constant(&[3.0], &[])?, g.constant(&[0.044715], &[])?);
                let k = g.constant(&[(2.0 / std::f32::consts::PI).sqrt()], &[])?;
                let x3 = g.pow(x, &three);
                let x3 = g.mul(&x3, &c);
                let inner = g.add(x, &x3);
                let inner = g.mul(&inner, &k);
                let t = g.tanh(&inner);
                let t = g.add(&t, &one);
                let y = g.mul(x, &t);
                g.mul(&y, &half)
            }
            Activation::Relu => g.relu(x),
            Activation::Swish => {
                let s = g.sigmoid(x);
                g.mul(x, &s)
            }
        })
    }
}

/// Position-wise feed-forward network: `down(dropout?(act(up(x))))`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    up: Linear,
    down: Linear,
    act: Activation,
    /// Dropout between the two projections (the original Transformer; BERT/GPT-2 have none).
    inner_dropout: Option<Dropout>,
}

impl FeedForward {
    pub fn new(up: Linear, down: Linear, act: Activation, inner_dropout: Option<Dropout>) -> Self {
        Self {
            up,
            down,
            act,
            inner_dropout,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.up.forward_activated(x, self.act)?;
        let h = match &self.inner_dropout {
            Some(d) => d.forward(&h)?,
            None => h,
        };
        self.down.forward(&h)
    }

    /// The ONNX twin of [`FeedForward::forward`] (no dropout).
    pub fn onnx(&self, g: &mut onnx::Graph, x: &onnx::Value) -> Result<onnx::Value> {
        let h = self.up.onnx(g, x)?;
        let h = self.act.onnx(g, &h)?;
        self.down.onnx(g, &h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_are_written_with_names_transformers_knows() {
        for (act, name) in [
            (Activation::Gelu, "gelu"),
            (Activation::GeluTanh, "gelu_new"),
            (Activation::Relu, "relu"),
            (Activation::Swish, "swish"),
        ] {
            assert_eq!(serde_json::to_value(act).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<Activation>(name.into()).unwrap(),
                act
            );
        }
        for alias in ["gelu_tanh", "gelu_pytorch_tanh", "gelu_fast"] {
            let act: Activation = serde_json::from_value(alias.into()).unwrap();
            assert_eq!(act, Activation::GeluTanh);
        }
    }
}
