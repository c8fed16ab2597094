//! Learning-rate schedules with Hugging Face's formulas (`transformers.optimization`).
//!
//! Steps count optimizer updates from 0, as PyTorch's `LambdaLR` does: the update with
//! index `k` (0-based) uses `base_lr * lambda(k)`, so with warmup the first update runs at
//! learning rate 0, exactly as in the Hugging Face Trainer.

use std::f64::consts::PI;
use std::str::FromStr;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// The shape of a schedule, named as Hugging Face's `lr_scheduler_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// `base_lr` throughout (any warmup is ignored, as in Hugging Face).
    Constant,
    /// Linear warmup from 0, then `base_lr`.
    ConstantWithWarmup,
    /// Linear warmup, then linear decay to 0 at the last step.
    Linear,
    /// Linear warmup, then half a cosine down to 0 at the last step.
    Cosine,
    /// Linear warmup, then half a cosine down to `min_lr` at the decay end, then `min_lr`.
    CosineWithMinLr,
    /// Linear warmup, then `base_lr * sqrt(warmup / step)`: the original Transformer's
    /// ("Noam") schedule with its peak at `base_lr` (Hugging Face's `inverse_sqrt`).
    InverseSqrt,
}

impl ScheduleKind {
    /// Hugging Face's name.
    pub fn hf_name(&self) -> &'static str {
        match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::ConstantWithWarmup => "constant_with_warmup",
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::CosineWithMinLr => "cosine_with_min_lr",
            ScheduleKind::InverseSqrt => "inverse_sqrt",
        }
    }
}

impl FromStr for ScheduleKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "constant" => ScheduleKind::Constant,
            "constant_with_warmup" => ScheduleKind::ConstantWithWarmup,
            "linear" => ScheduleKind::Linear,
            "cosine" => ScheduleKind::Cosine,
            "cosine_with_min_lr" => ScheduleKind::CosineWithMinLr,
            "inverse_sqrt" => ScheduleKind::InverseSqrt,
            other => bail!(
                "unknown learning-rate schedule `{other}` (use linear, cosine, constant, \
                 constant_with_warmup, cosine_with_min_lr or inverse_sqrt)"
            ),
        })
    }
}

impl std::fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.hf_name())
    }
}

/// How long the warmup is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warmup {
    /// This many updates.
    Steps(u64),
    /// This fraction of the total updates, rounded up (`ceil(ratio * total)`, as Hugging
    /// Face's `get_warmup_steps`).
    Ratio(f64),
}

impl Warmup {
    /// The warmup length in updates for a run of `total_steps`.
    pub fn steps(&self, total_steps: u64) -> Result<u64> {
        match *self {
            Warmup::Steps(n) => Ok(n),
            Warmup::Ratio(r) => {
                ensure!(
                    (0.0..=1.0).contains(&r),
                    "warmup ratio must lie in [0, 1], got {r}"
                );
                Ok((r * total_steps as f64).ceil() as u64)
            }
        }
    }
}

/// A learning rate for every optimizer update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: u64,
    /// Total optimizer updates of the run.
    pub total_steps: u64,
    /// The floor of [`ScheduleKind::CosineWithMinLr`] (absolute learning rate).
    pub min_lr: f64,
    /// Where [`ScheduleKind::CosineWithMinLr`] reaches `min_lr` (nanoGPT's `lr_decay_iters`);
    /// `None` means `total_steps`, which is Hugging Face's `cosine_with_min_lr`.
    pub decay_steps: Option<u64>,
}

impl LrSchedule {
    /// A schedule of `kind` peaking at `base_lr` over `total_steps` updates (`min_lr` 0).
    pub fn new(kind: ScheduleKind, base_lr: f64, warmup: Warmup, total_steps: u64) -> Result<Self> {
        ensure!(
            base_lr.is_finite() && base_lr >= 0.0,
            "learning rate must be a non-negative number, got {base_lr}"
        );
        Ok(Self {
            kind,
            base_lr,
            warmup_steps: warmup.steps(total_steps)?,
            total_steps,
            min_lr: 0.0,
            decay_steps: None,
        })
    }

    /// A schedule with a warmup already in updates; `min_lr` and `decay_steps` matter only
    /// to `cosine_with_min_lr`.
    pub fn new_with_floor(
        kind: ScheduleKind,
        base_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        min_lr: f64,
        decay_steps: u64,
    ) -> Result<Self> {
        let s = Self::new(kind, base_lr, Warmup::Steps(warmup_steps), total_steps)?;
        Ok(if kind == ScheduleKind::CosineWithMinLr {
            s.with_min_lr(min_lr)?.with_decay_steps(decay_steps)
        } else {
            s
        })
    }

    /// The floor of a `cosine_with_min_lr` schedule, as an absolute learning rate.
    pub fn with_min_lr(mut self, min_lr: f64) -> Result<Self> {
        ensure!(
            (0.0..=self.base_lr).contains(&min_lr),
            "min_lr must lie in [0, learning rate {}], got {min_lr}",
            self.base_lr
        );
        self.min_lr = min_lr;
        Ok(self)
    }

    /// The floor as a fraction of the base learning rate (Hugging Face's `min_lr_rate`).
    pub fn with_min_lr_rate(self, rate: f64) -> Result<Self> {
        ensure!(
            (0.0..=1.0).contains(&rate),
            "min_lr_rate must lie in [0, 1], got {rate}"
        );
        let min_lr = self.base_lr * rate;
        self.with_min_lr(min_lr)
    }

    /// Where the cosine reaches `min_lr`, when that is not the end of the run.
    pub fn with_decay_steps(mut self, decay_steps: u64) -> Self {
        self.decay_steps = Some(decay_steps);
        self
    }

    /// The multiplier of `base_lr` for update `step` (0-based), Hugging Face's lambda.
    pub fn lambda(&self, step: u64) -> f64 {
        let (s, w) = (step as f64, self.warmup_steps as f64);
        let warming = step < self.warmup_steps && self.kind != ScheduleKind::Constant;
        if warming {
            return s / w.max(1.0);
        }
        match self.kind {
            ScheduleKind::Constant | ScheduleKind::ConstantWithWarmup => 1.0,
            ScheduleKind::Linear => {
                let left = self.total_steps.saturating_sub(step) as f64;
                let span = (self.total_steps.saturating_sub(self.warmup_steps) as f64).max(1.0);
                (left / span).max(0.0)
            }
            // Past the end the lambda stays at 0 (Hugging Face's formula would climb back up).
            ScheduleKind::Cosine => {
                0.5 * (1.0 + (PI * self.progress(step, self.total_steps)).cos())
            }
            ScheduleKind::CosineWithMinLr => {
                let end = self.decay_steps.unwrap_or(self.total_steps);
                let rate = if self.base_lr > 0.0 {
                    self.min_lr / self.base_lr
                } else {
                    0.0
                };
                let factor = 0.5 * (1.0 + (PI * self.progress(step, end)).cos());
                factor * (1.0 - rate) + rate
            }
            // Hugging Face's timescale is the warmup (10,000 without one): after the
            // warmup, 1 / sqrt((step + timescale - warmup) / timescale).
            ScheduleKind::InverseSqrt => {
                let timescale = if self.warmup_steps > 0 { w } else { 10_000.0 };
                1.0 / ((s + timescale - w) / timescale).sqrt()
            }
        }
    }

    /// Fraction of the decay phase done at `step`, clamped to [0, 1].
    fn progress(&self, step: u64, end: u64) -> f64 {
        let done = step.saturating_sub(self.warmup_steps) as f64;
        let span = (end.saturating_sub(self.warmup_steps) as f64).max(1.0);
        (done / span).min(1.0)
    }

    /// The learning rate of update `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.base_lr * self.lambda(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs(s: &LrSchedule, steps: std::ops::Range<u64>) -> Vec<f64> {
        steps.map(|k| s.lr_at(k)).collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn kinds_parse_from_hugging_face_names() {
        for name in [
            "linear",
            "cosine",
            "constant",
            "constant_with_warmup",
            "cosine_with_min_lr",
            "inverse_sqrt",
        ] {
            let k: ScheduleKind = name.parse().unwrap();
            assert_eq!(k.hf_name(), name);
            let from_json: ScheduleKind = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(from_json, k);
        }
        assert!("polynomial".parse::<ScheduleKind>().is_err());
        let s =
            LrSchedule::new_with_floor(ScheduleKind::CosineWithMinLr, 1.0, 2, 10, 0.1, 6).unwrap();
        assert_eq!(
            (s.kind, s.warmup_steps, s.min_lr, s.decay_steps),
            (ScheduleKind::CosineWithMinLr, 2, 0.1, Some(6))
        );
    }

    #[test]
    fn constant_ignores_warmup() {
        let s = LrSchedule::new(ScheduleKind::Constant, 0.1, Warmup::Steps(3), 10).unwrap();
        close(&lrs(&s, 0..3), &[0.1, 0.1, 0.1]);
    }

    #[test]
    fn constant_with_warmup_by_hand() {
        let s =
            LrSchedule::new(ScheduleKind::ConstantWithWarmup, 1.0, Warmup::Steps(4), 10).unwrap();
        close(&lrs(&s, 0..6), &[0.0, 0.25, 0.5, 0.75, 1.0, 1.0]);
    }

    #[test]
    fn linear_by_hand() {
        // Warmup 2 of 10: 0, 0.5, then (10 - k) / 8 down to 0 at step 10.
        let s = LrSchedule::new(ScheduleKind::Linear, 1.0, Warmup::Steps(2), 10).unwrap();
        close(
            &lrs(&s, 0..12),
            &[
                0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0,
            ],
        );
        // No warmup: the first update runs at the full rate.
        let s = LrSchedule::new(ScheduleKind::Linear, 2.0, Warmup::Steps(0), 4).unwrap();
        close(&lrs(&s, 0..5), &[2.0, 1.5, 1.0, 0.5, 0.0]);
    }

    #[test]
    fn cosine_by_hand() {
        // Warmup 1 of 5: 0, then 0.5 * (1 + cos(pi * (k - 1) / 4)).
        let s = LrSchedule::new(ScheduleKind::Cosine, 1.0, Warmup::Steps(1), 5).unwrap();
        let h = 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        close(&lrs(&s, 0..7), &[0.0, 1.0, h, 0.5, 1.0 - h, 0.0, 0.0]);
    }

    #[test]
    fn cosine_with_min_lr_by_hand() {
        // Hugging Face's form: decays to min_lr at the end of the run.
        let s = LrSchedule::new(ScheduleKind::CosineWithMinLr, 1.0, Warmup::Steps(2), 6)
            .unwrap()
            .with_min_lr(0.1)
            .unwrap();
        let h = 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2);
        let f = |x: f64| x * 0.9 + 0.1;
        close(
            &lrs(&s, 0..8),
            &[0.0, 0.5, 1.0, f(h), 0.55, f(1.0 - h), 0.1, 0.1],
        );
        // nanoGPT's form: min_lr reached at lr_decay_iters, held after.
        let s = LrSchedule::new(ScheduleKind::CosineWithMinLr, 2.0, Warmup::Steps(0), 100)
            .unwrap()
            .with_min_lr_rate(0.1)
            .unwrap()
            .with_decay_steps(2);
        close(&lrs(&s, 0..5), &[2.0, 1.1, 0.2, 0.2, 0.2]);
    }

    #[test]
    fn warmup_ratio_rounds_up_like_hugging_face() {
        assert_eq!(Warmup::Ratio(0.1).steps(1000).unwrap(), 100);
        assert_eq!(Warmup::Ratio(0.1).steps(15).unwrap(), 2);
        // 0.07 * 100 is 7.000000000000001 in f64; Python's math.ceil gives 8 too.
        assert_eq!(Warmup::Ratio(0.07).steps(100).unwrap(), 8);
        assert_eq!(Warmup::Ratio(0.0).steps(100).unwrap(), 0);
        assert!(Warmup::Ratio(1.5).steps(100).is_err());
        let s = LrSchedule::new(ScheduleKind::Linear, 1.0, Warmup::Ratio(0.25), 8).unwrap();
        assert_eq!(s.warmup_steps, 2);
    }
}

#[cfg(test)]
mod inverse_sqrt_tests {
    use super::*;

    #[test]
    fn inverse_sqrt_warms_up_then_decays_as_one_over_sqrt_step() {
        let s = LrSchedule::new(ScheduleKind::InverseSqrt, 1e-3, Warmup::Steps(4), 100).unwrap();
        // Warmup: 0, 1/4, 2/4, 3/4 of the peak; then sqrt(4 / step).
        for (step, want) in [
            (0, 0.0),
            (1, 0.25e-3),
            (3, 0.75e-3),
            (4, 1e-3),
            (16, 0.5e-3),
        ] {
            assert!(
                (s.lr_at(step) - want).abs() < 1e-15,
                "step {step}: {}",
                s.lr_at(step)
            );
        }
        // Without warmup, Hugging Face's timescale of 10,000 steps.
        let s = LrSchedule::new(ScheduleKind::InverseSqrt, 1.0, Warmup::Steps(0), 100).unwrap();
        assert_eq!(s.lr_at(0), 1.0);
        assert!((s.lr_at(30_000) - 0.5).abs() < 1e-12);
    }
}
