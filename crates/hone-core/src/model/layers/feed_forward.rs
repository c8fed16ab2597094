use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::{Dropout, Linear};

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
        let h = self.act.forward(&self.up.forward(x)?)?;
        let h = match &self.inner_dropout {
            Some(d) => d.forward(&h)?,
            None => h,
        };
        self.down.forward(&h)
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
