use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::ops::{self, KeepMask};

/// Shared by every dropout layer of one model: whether it is training, and the random stream
/// the masks come from. candle's CPU RNG cannot be seeded, so masks are drawn here from a
/// seeded ChaCha stream whose position can be saved and restored for an exact resume.
#[derive(Debug, Clone)]
pub struct TrainingMode {
    inner: Arc<Mutex<ModeState>>,
}

#[derive(Debug)]
struct ModeState {
    training: bool,
    rng: ChaCha8Rng,
}

impl TrainingMode {
    /// Starts in evaluation mode (dropout off), as a freshly loaded Hugging Face model does.
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        let rng = ChaCha8Rng::seed_from_u64(seed);
        Self {
            inner: Arc::new(Mutex::new(ModeState {
                training: false,
                rng,
            })),
        }
    }

    pub fn set_training(&self, training: bool) {
        self.inner.lock().expect("dropout state poisoned").training = training;
    }

    pub fn is_training(&self) -> bool {
        self.inner.lock().expect("dropout state poisoned").training
    }

    /// The random stream's state: (seed, stream, word position).
    pub fn rng_state(&self) -> ([u8; 32], u64, u128) {
        let s = self.inner.lock().expect("dropout state poisoned");
        (s.rng.get_seed(), s.rng.get_stream(), s.rng.get_word_pos())
    }

    /// Restore a state saved by [`TrainingMode::rng_state`].
    pub fn set_rng_state(&self, seed: [u8; 32], stream: u64, word_pos: u128) {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(stream);
        rng.set_word_pos(word_pos);
        self.inner.lock().expect("dropout state poisoned").rng = rng;
    }

    /// A keep-mask scaled by 1/(1-p), or None in evaluation mode.
    fn mask(&self, shape: &[usize], p: f32) -> Option<Vec<f32>> {
        let mut s = self.inner.lock().expect("dropout state poisoned");
        if !s.training || p <= 0.0 {
            return None;
        }
        let n: usize = shape.iter().product();
        let scale = 1.0 / (1.0 - p);
        // The same draws as `n` calls of `gen::<f32>()` (each takes one u32 of the stream
        // and keeps its top 24 bits), but the words come out in bulk and the threshold runs
        // in parallel.
        let mut words = vec![0u32; n];
        s.rng.fill(&mut words[..]);
        drop(s);
        Some(
            words
                .par_iter()
                .with_min_len(1 << 14)
                .map(|&w| {
                    let u = (w >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
                    if u < p {
                        0.0
                    } else {
                        scale
                    }
                })
                .collect(),
        )
    }
}

/// Zeroes each element with probability `p` in training and scales the rest by 1/(1-p);
/// the identity in evaluation.
#[derive(Debug, Clone)]
pub struct Dropout {
    p: f32,
    mode: TrainingMode,
}

impl Dropout {
    pub fn new(p: f64, mode: &TrainingMode) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bulk_mask_draws_match_one_at_a_time() {
        let mode = TrainingMode::new(7);
        mode.set_training(true);
        let (seed, stream, pos) = mode.rng_state();
        let p = 0.1f32;
        // 1001 draws: not a multiple of the ChaCha block; twice, so the second starts mid-block.
        let a = mode.mask(&[7, 11, 13], p).unwrap();
        let b = mode.mask(&[1001], p).unwrap();
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(stream);
        rng.set_word_pos(pos);
        let scale = 1.0 / (1.0 - p);
        let mut draw = || if rng.gen::<f32>() < p { 0.0 } else { scale };
        let ra: Vec<f32> = (0..a.len()).map(|_| draw()).collect();
        let rb: Vec<f32> = (0..b.len()).map(|_| draw()).collect();
        assert_eq!(a, ra);
        assert_eq!(b, rb);
        assert_eq!(mode.rng_state().2, rng.get_word_pos());
    }
}
