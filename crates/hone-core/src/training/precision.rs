//! Mixed precision: which dtype the matrix products run in, and fp16's dynamic loss scaling.

use candle_core::DType;
use serde::{Deserialize, Serialize};

/// The recipe's `precision`: fp32 everywhere, or autocast-style mixed precision with fp32
/// master weights and optimizer moments (see [`crate::model::ModelMode::autocast`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    #[default]
    #[serde(alias = "f32", alias = "tf32")]
    #[cfg_attr(feature = "clap", value(alias = "f32", alias = "tf32"))]
    Fp32,
    /// Matrix products in bfloat16 (no loss scaling needed: bf16 has f32's range).
    Bf16,
    /// Matrix products in float16, with dynamic loss scaling ([`GradScaler`]).
    #[serde(alias = "f16")]
    #[cfg_attr(feature = "clap", value(alias = "f16"))]
    Fp16,
}

impl Precision {
    /// The dtype matrix products run in, None for plain fp32.
    pub fn autocast_dtype(self) -> Option<DType> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::Fp16 => Some(DType::F16),
        }
    }
}

/// Dynamic loss scaling for fp16, with `torch.amp.GradScaler`'s defaults: the loss is
/// multiplied by `scale` before the backward pass so small gradients survive fp16; an update
/// whose gradients overflow is skipped and the scale halved; after `growth_interval` clean
/// updates in a row the scale doubles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: usize,
    /// Clean updates since the scale last changed.
    pub good_steps: usize,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self {
            scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            good_steps: 0,
        }
    }
}

impl GradScaler {
    /// Records one update's outcome; returns whether to apply it (its gradients were finite).
    pub fn update(&mut self, grads_finite: bool) -> bool {
        if grads_finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.good_steps = 0;
            }
        } else {
            self.scale *= self.backoff_factor;
            self.good_steps = 0;
        }
        grads_finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaler_backs_off_on_overflow_and_grows_after_clean_runs() {
        let mut s = GradScaler {
            growth_interval: 3,
            ..Default::default()
        };
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true) && s.update(true));
        assert_eq!(s.scale, 32768.0, "not yet");
        assert!(s.update(true));
        assert_eq!((s.scale, s.good_steps), (65536.0, 0));
        s.update(true);
        s.update(false);
        assert_eq!(
            (s.scale, s.good_steps),
            (32768.0, 0),
            "an overflow resets the count"
        );
    }

    #[test]
    fn precision_names() {
        let parse = |s: &str| serde_json::from_str::<Precision>(&format!("\"{s}\""));
        assert_eq!(parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!(parse("fp16").unwrap(), Precision::Fp16);
        assert_eq!(parse("tf32").unwrap(), Precision::Fp32);
        assert_eq!(Precision::Fp32.autocast_dtype(), None);
        let err = parse("int4").unwrap_err().to_string();
        assert!(err.contains("int4") && err.contains("bf16"), "{err}");
    }
}
