use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::onnx;

/// LayerNorm over the last dimension, differentiable in all its inputs (see [`crate::ops`]).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// `LN(x + h)` for inference (no gradient; see [`crate::ops::residual_layer_norm_inference`]).
    pub fn forward_residual_inference(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        crate::ops::residual_layer_norm_inference(x, h, &self.weight, &self.bias, self.eps)
    }

    /// The ONNX twin of [`LayerNorm::forward`].
    pub fn onnx(&self, g: &mut onnx::Graph, x: &onnx::Value) -> Result<onnx::Value> {
        let (w, b) = (
            g.weight("ln_weight", &self.weight)?,
            g.weight("ln_bias", &self.bias)?,
        );
        Ok(g.layer_norm(x, &w, &b, self.eps))
    }
}
