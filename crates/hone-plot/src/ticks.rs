//! Axis ticks: "nice" tick positions and their labels.

/// Evenly spaced "nice" tick values (steps of 1, 2 or 5 times a power of ten) covering
/// `[min, max]`, with about `target` intervals (at least one).
///
/// The first tick is `<= min` and the last `>= max`. A degenerate range (`min == max`) is widened
/// around the value; non-finite bounds fall back to `0..1`; swapped bounds are reordered.
pub fn nice_ticks(min: f64, max: f64, target: usize) -> Vec<f64> {
    TickSet::new(min, max, target).values
}

/// Formats a tick value for an axis whose ticks are `step` apart: just enough decimals to tell
/// neighbouring ticks apart, and scientific notation (`5e-4`, `1.5e-5`, `2e6`) for very small or
/// very large steps.
pub fn format_tick(value: f64, step: f64) -> String {
    if !value.is_finite() {
        return format!("{value}");
    }
    let exp = if step.is_finite() && step > 0.0 {
        (step.log10() + 1e-9).floor() as i32
    } else {
        0
    };
    format_with_exp(value, step.abs(), exp)
}

fn format_with_exp(value: f64, step: f64, exp: i32) -> String {
    // Snap values that are zero up to rounding error, so we never print "-0" or "1e-17".
    let value = if value == 0.0 || (step > 0.0 && value.abs() < step * 1e-6) {
        0.0
    } else {
        value
    };
    if exp <= -4 || exp >= 6 {
        if value == 0.0 {
            return "0".to_string();
        }
        // Scientific: as many mantissa digits as the step needs.
        let value_exp = format!("{value:e}")
            .split('e')
            .nth(1)
            .and_then(|e| e.parse::<i32>().ok())
            .unwrap_or(exp);
        let digits = (value_exp - exp).clamp(0, 15) as usize;
        let s = format!("{value:.digits$e}");
        match s.split_once('e') {
            Some((mantissa, e)) => {
                let mantissa = if mantissa.contains('.') {
                    mantissa.trim_end_matches('0').trim_end_matches('.')
                } else {
                    mantissa
                };
                format!("{mantissa}e{e}")
            }
            None => s,
        }
    } else {
        let decimals = (-exp).max(0) as usize;
        format!("{value:.decimals$}")
    }
}

/// Tick positions plus what is needed to label them consistently.
#[derive(Debug, Clone)]
pub(crate) struct TickSet {
    pub(crate) values: Vec<f64>,
    step: f64,
    /// `step == nice * 10^exp` with `nice` in {1, 2, 5}.
    exp: i32,
}

impl TickSet {
    pub(crate) fn new(min: f64, max: f64, target: usize) -> Self {
        let (mut lo, mut hi) = if min.is_finite() && max.is_finite() {
            (min.min(max), min.max(max))
        } else if min.is_finite() {
            (min, min)
        } else if max.is_finite() {
            (max, max)
        } else {
            (0.0, 1.0)
        };
        if hi - lo <= hi.abs().max(lo.abs()) * 1e-12 || !(hi - lo).is_finite() {
            // Degenerate (single value / constant series): widen around the value.
            let centre = if (hi - lo).is_finite() {
                0.5 * (lo + hi)
            } else {
                0.0
            };
            if centre == 0.0 {
                lo = -1.0;
                hi = 1.0;
            } else {
                let half = (centre.abs() * 0.1).max(f64::MIN_POSITIVE);
                lo = centre - half;
                hi = centre + half;
            }
            if !(hi - lo).is_finite() || hi - lo <= 0.0 {
                lo = 0.0;
                hi = 1.0;
            }
        }
        let target = target.max(1) as f64;
        let raw = (hi - lo) / target;
        let mut exp = raw.log10().floor() as i32;
        let mag = pow10(exp);
        let norm = raw / mag;
        let nice = if norm <= 1.0 + 1e-9 {
            1
        } else if norm <= 2.0 + 1e-9 {
            2
        } else if norm <= 5.0 + 1e-9 {
            5
        } else {
            exp += 1;
            1
        };
        let step = nice as f64 * pow10(exp);
        // Tick k sits at k * nice * 10^exp; computing it that way (rather than accumulating
        // steps) keeps 0.6 as 0.6 instead of 0.6000000000000001.
        let value = |k: i64| {
            let m = k.saturating_mul(nice) as f64;
            if exp < 0 {
                m / pow10(-exp)
            } else {
                m * pow10(exp)
            }
        };
        let first = ((lo / step) + 1e-9).floor() as i64;
        let last = ((hi / step) - 1e-9).ceil() as i64;
        let last = last.max(first.saturating_add(1));
        // Guard against absurd tick counts from pathological input.
        let last = last.min(first.saturating_add(1000));
        let values = (first..=last).map(value).collect();
        TickSet { values, step, exp }
    }

    pub(crate) fn lo(&self) -> f64 {
        self.values[0]
    }

    pub(crate) fn hi(&self) -> f64 {
        self.values[self.values.len() - 1]
    }

    pub(crate) fn labels(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|&v| format_with_exp(v, self.step, self.exp))
            .collect()
    }
}

fn pow10(exp: i32) -> f64 {
    10f64.powi(exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approx(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn ticks_zero_to_one() {
        let t = nice_ticks(0.0, 1.0, 5);
        assert!(approx(&t, &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), "{t:?}");
        // Computed without accumulation, so exactly the decimal literals.
        assert_eq!(t[3], 0.6);
        let labels: Vec<String> = t.iter().map(|&v| format_tick(v, 0.2)).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
    }

    #[test]
    fn ticks_use_1_2_5_steps_and_cover_range() {
        for &(lo, hi, target) in &[
            (0.0, 1.0, 5),
            (0.13, 0.87, 4),
            (-3.7, 12.2, 6),
            (1.0, 1000.0, 5),
            (2.1e-5, 4.9e-5, 5),
            (-1e9, 3e9, 7),
            (0.5, 0.5004, 3),
        ] {
            let t = nice_ticks(lo, hi, target);
            assert!(t.len() >= 2, "{t:?}");
            assert!(t[0] <= lo && *t.last().unwrap() >= hi, "{lo}..{hi}: {t:?}");
            let step = t[1] - t[0];
            let mantissa = step / 10f64.powf(step.log10().floor());
            assert!(
                [1.0, 2.0, 5.0, 10.0]
                    .iter()
                    .any(|m| (mantissa - m).abs() < 1e-6),
                "{lo}..{hi}: step {step}"
            );
            for w in t.windows(2) {
                assert!(((w[1] - w[0]) - step).abs() < step * 1e-9);
            }
        }
        assert!(approx(
            &nice_ticks(1.0, 1000.0, 5),
            &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]
        ));
        assert!(approx(
            &nice_ticks(-3.7, 12.2, 4),
            &[-5.0, 0.0, 5.0, 10.0, 15.0]
        ));
    }

    #[test]
    fn ticks_degenerate_ranges() {
        // Single point / constant series: widened around the value.
        let t = nice_ticks(2.0, 2.0, 5);
        assert!(t[0] < 2.0 && *t.last().unwrap() > 2.0, "{t:?}");
        let t = nice_ticks(0.0, 0.0, 5);
        assert!(t[0] < 0.0 && *t.last().unwrap() > 0.0, "{t:?}");
        // Non-finite and swapped bounds.
        assert!(approx(
            &nice_ticks(f64::NAN, f64::INFINITY, 5),
            &nice_ticks(0.0, 1.0, 5)
        ));
        assert_eq!(nice_ticks(1.0, 0.0, 5), nice_ticks(0.0, 1.0, 5));
        assert!(nice_ticks(0.0, 1.0, 0).len() >= 2);
        assert!(nice_ticks(-f64::MAX, f64::MAX, 5).len() >= 2);
        assert!(nice_ticks(f64::MIN_POSITIVE, f64::MIN_POSITIVE, 5).len() >= 2);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(format_tick(0.0, 1e-5), "0");
        assert_eq!(format_tick(2e-5, 1e-5), "2e-5");
        assert_eq!(format_tick(1.5e-5, 5e-6), "1.5e-5");
        assert_eq!(format_tick(5e-4, 5e-4), "5e-4");
        assert_eq!(format_tick(0.001, 0.001), "0.001");
        assert_eq!(format_tick(250.0, 50.0), "250");
        assert_eq!(format_tick(-0.5, 0.5), "-0.5");
        assert_eq!(format_tick(3e6, 1e6), "3e6");
        assert_eq!(format_tick(1e-17, 0.1), "0.0");
        assert_eq!(format_tick(-1e-17, 0.1), "0.0");
    }
}
