//! Injected numerical faults, a test hook: a NaN or an infinity put into the loss or into
//! a gradient at a chosen update, to show that a run stops naming the update (or, in fp16,
//! skips it and lowers the loss scale) exactly as it would on a real overflow.
//!
//! The command line reads one from `HONE_INJECT_FAULT` (see [`InjectedFault::from_env`]);
//! a library user calls [`crate::training::Trainer::inject_fault`].

use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// Where the bad value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultSite {
    /// Added to the update's first micro-batch loss, before the backward pass.
    Loss,
    /// Added to every element of the first trained parameter's gradient, after
    /// accumulation and before clipping.
    Gradient,
}

/// One bad value at one update: written `nan-loss@3`, `inf-grad@5` (value, site, update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InjectedFault {
    pub site: FaultSite,
    /// NaN or positive infinity.
    pub value: f64,
    /// The update it hits, 1 for the first.
    pub update: usize,
}

impl InjectedFault {
    /// The environment variable the command line reads.
    pub const ENV: &'static str = "HONE_INJECT_FAULT";

    /// The fault `HONE_INJECT_FAULT` asks for, if set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(Self::ENV) {
            Ok(text) => Ok(Some(
                text.parse()
                    .with_context(|| format!("{}={text}", Self::ENV))?,
            )),
            Err(_) => Ok(None),
        }
    }

    pub(crate) fn hits(&self, site: FaultSite, update: usize) -> bool {
        self.site == site && self.update == update
    }
}

/// A test hook: `HONE_INTERRUPT_AFTER_STEPS=N` stops a run as if interrupted after update N,
/// its checkpoint written (the resume tests of multi-rank runs, where a kill would race the
/// ranks).
pub fn interrupt_after_steps_from_env() -> Result<Option<usize>> {
    const ENV: &str = "HONE_INTERRUPT_AFTER_STEPS";
    match std::env::var(ENV) {
        Ok(n) => Ok(Some(n.parse().with_context(|| {
            format!("{ENV}={n:?} is not a number of updates")
        })?)),
        Err(_) => Ok(None),
    }
}

impl FromStr for InjectedFault {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let usage =
            "expected VALUE-SITE@UPDATE with VALUE nan or inf, SITE loss or grad, e.g. nan-loss@3";
        let (what, update) = s.split_once('@').context(usage)?;
        let (value, site) = what.split_once('-').context(usage)?;
        let value = match value {
            "nan" => f64::NAN,
            "inf" => f64::INFINITY,
            _ => bail!("{usage}"),
        };
        let site = match site {
            "loss" => FaultSite::Loss,
            "grad" => FaultSite::Gradient,
            _ => bail!("{usage}"),
        };
        let update: usize = update.parse().ok().filter(|&u| u > 0).context(usage)?;
        Ok(Self {
            site,
            value,
            update,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_bad_ones_are_refused() {
        let f: InjectedFault = "inf-grad@5".parse().unwrap();
        assert_eq!(
            (f.site, f.value, f.update),
            (FaultSite::Gradient, f64::INFINITY, 5)
        );
        let f: InjectedFault = "nan-loss@1".parse().unwrap();
        assert!(f.value.is_nan() && f.site == FaultSite::Loss);
        for bad in [
            "nan-loss",
            "nan-loss@0",
            "zero-loss@2",
            "nan-weights@2",
            "nan@2",
        ] {
            assert!(bad.parse::<InjectedFault>().is_err(), "{bad}");
        }
    }
}
