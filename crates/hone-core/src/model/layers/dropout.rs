use candle_core::{DType, Device, Result, Tensor};

use super::{LayerNorm, ModelMode};
use crate::ops::{self, KeepMask};

/// Zeroes each element with probability `p` in training and scales the rest by 1/(1-p);
/// the identity in evaluation.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    mode: ModelMode,
}

impl Dropout {
    pub fn new(p: f64, mode: &ModelMode) -> Self {
        Self {
            p: p as f32,
            mode: mode.clone(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self.keep_mask(x.dims(), x.dtype(), x.device())? {
            None => Ok(x.clone()),
            Some(keep) => x.mul(&keep),
        }
    }

    /// `x + dropout(h)`, as one op (see [`ops::residual_add`]); the mask is the one
    /// `forward(h)` would draw.
    pub fn residual_add(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        let keep = self.keep_mask(h.dims(), h.dtype(), h.device())?;
        ops::residual_add(x, h, keep.as_ref())
    }

    /// `norm(x + dropout(h))` (a post-LN residual connection); fused into one pass when
    /// the model runs inference only.
    pub fn residual_norm(&self, x: &Tensor, h: &Tensor, norm: &LayerNorm) -> Result<Tensor> {
        match self.mode.is_inference_only() {
            true => norm.forward_residual_inference(x, h),
            false => norm.forward(&self.residual_add(x, h)?),
        }
    }
}

/// The attention op draws the mask of its probabilities from the layer.
impl ops::KeepMask for Dropout {
    fn keep_mask(&self, shape: &[usize], dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        self.mode
            .mask(shape, self.p)
            .map(|m| Tensor::from_vec(m, shape, device)?.to_dtype(dtype))
            .transpose()
    }
}
