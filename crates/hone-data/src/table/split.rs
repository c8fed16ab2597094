//! Deterministic train / validation split for data sets that ship without a validation set.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Splits `examples` into (train, validation) with `ratio` of them (rounded up, like HF
/// `train_test_split`) going to validation, chosen by a seeded ChaCha8 shuffle: the same seed
/// gives the same split on every platform and run. Both parts keep the original order, so
/// validation outputs line up with the file. With at least two examples and `0 < ratio < 1`,
/// both parts are non-empty.
pub fn train_validation_split<T>(
    examples: Vec<T>,
    ratio: f64,
    seed: u64,
) -> Result<(Vec<T>, Vec<T>)> {
    if !(0.0..=1.0).contains(&ratio) {
        return Err(DataError::Invalid(format!(
            "validation ratio must be within [0, 1], got {ratio}"
        )));
    }
    let n = examples.len();
    let mut n_valid = (ratio * n as f64).ceil() as usize;
    if ratio > 0.0 && ratio < 1.0 && n >= 2 {
        n_valid = n_valid.clamp(1, n - 1);
    }
    let n_valid = n_valid.min(n);

    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, seed);
    let mut is_valid = vec![false; n];
    for &i in &order[..n_valid] {
        is_valid[i] = true;
    }
    let mut train = Vec::with_capacity(n - n_valid);
    let mut valid = Vec::with_capacity(n_valid);
    for (ex, v) in examples.into_iter().zip(is_valid) {
        if v {
            valid.push(ex);
        } else {
            train.push(ex);
        }
    }
    Ok((train, valid))
}

/// Fisher-Yates with our own bounded sampling, so the result depends only on ChaCha8's
/// output stream and not on how some `rand` version maps it to ranges.
fn shuffle(items: &mut [usize], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..items.len()).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// Uniform in `0..bound` by rejection sampling (no modulo bias).
fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % bound;
        }
    }
}
