use std::sync::{Arc, Mutex};

use candle_core::DType;
use rand::Rng;

use crate::model::adapter::{Adapters, LoraConfig};
use crate::model::adapter_set::AdapterSet;
use crate::model::quantization::Int8Weights;
use crate::ops::Int8Matrix;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// How one model runs, shared by all its layers: training or evaluation (dropout on or
/// off), the random stream dropout masks come from, the dtype its matrix products run in
/// (autocast), and the LoRA adapters its linear layers carry. candle's CPU RNG cannot be
/// seeded, so masks are drawn here from a seeded ChaCha stream whose position can be saved
/// and restored for an exact resume.
#[derive(Debug, Clone)]
pub struct ModelMode {
    inner: Arc<Mutex<ModeState>>,
}

#[derive(Debug)]
struct ModeState {
    training: bool,
    rng: ChaCha8Rng,
    /// bf16 or fp16 for autocast-style mixed precision; None: the inputs' own dtype.
    autocast: Option<DType>,
    adapters: Option<Arc<Adapters>>,
    /// Several adapters over one base (inference): what the layers take when built.
    adapter_set: Option<Arc<AdapterSet>>,
    /// The adapter slot of each batch row of the forward pass under way (a model with an
    /// adapter set): set by [`ModelMode::route`].
    route: Option<Arc<Vec<u32>>>,
    /// The linear layers' int8 weights (a quantized model, or one being quantized).
    int8: Option<Arc<Int8Weights>>,
    /// The weights no longer change (an inference program): layers may keep derived
    /// copies of them, such as the CPU GEMM's packed panels.
    frozen: bool,
}

impl ModelMode {
    /// Starts in evaluation mode (dropout off), as a freshly loaded Hugging Face model does.
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        let rng = ChaCha8Rng::seed_from_u64(seed);
        Self {
            inner: Arc::new(Mutex::new(ModeState {
                training: false,
                rng,
                autocast: None,
                adapters: None,
                adapter_set: None,
                route: None,
                int8: None,
                frozen: false,
            })),
        }
    }

    pub fn set_training(&self, training: bool) {
        self.inner.lock().expect("dropout state poisoned").training = training;
    }

    /// Promise that the weights no longer change, so that layers may keep derived copies
    /// of them (packed for the CPU's inference GEMM). For inference programs: a frozen
    /// model in evaluation mode computes no gradient for its weights.
    pub fn freeze(&self) {
        self.inner.lock().expect("dropout state poisoned").frozen = true;
    }

    pub fn is_frozen(&self) -> bool {
        self.inner.lock().expect("dropout state poisoned").frozen
    }

    /// Frozen and in evaluation mode: nothing wants a gradient, so layers may take the
    /// inference kernels (packed weights, fused ops without a backward pass).
    pub fn is_inference_only(&self) -> bool {
        let s = self.inner.lock().expect("dropout state poisoned");
        s.frozen && !s.training
    }

    pub fn is_training(&self) -> bool {
        self.inner.lock().expect("dropout state poisoned").training
    }

    /// The dtype the linear layers' and attention's matrix products take their operands in
    /// (PyTorch's autocast): bf16 or fp16; None runs them in the inputs' own dtype. LayerNorm
    /// and softmax statistics, losses, parameters and gradients stay f32 either way.
    pub fn autocast(&self) -> Option<DType> {
        self.inner.lock().expect("dropout state poisoned").autocast
    }

    pub fn set_autocast(&self, dtype: Option<DType>) {
        self.inner.lock().expect("dropout state poisoned").autocast = dtype;
    }

    /// The adapters the model's linear layers get when they are built.
    pub fn set_adapters(&self, adapters: Option<Adapters>) {
        self.inner.lock().expect("dropout state poisoned").adapters = adapters.map(Arc::new);
    }

    /// The adapter settings for the linear layer named `module`, if it carries one.
    pub fn adapter_for(&self, module: &str) -> Option<LoraConfig> {
        let s = self.inner.lock().expect("dropout state poisoned");
        let a = s.adapters.as_ref()?;
        a.config
            .targets(module, &a.base_prefix)
            .then(|| a.config.clone())
    }

    /// The adapters of a multi-adapter model, which its layers take when they are built.
    pub fn set_adapter_set(&self, set: Option<Arc<AdapterSet>>) {
        self.inner
            .lock()
            .expect("dropout state poisoned")
            .adapter_set = set;
    }

    pub fn adapter_set(&self) -> Option<Arc<AdapterSet>> {
        self.inner
            .lock()
            .expect("dropout state poisoned")
            .adapter_set
            .clone()
    }

    /// Run the forward passes made while the scope lives with batch row `i` through
    /// adapter slot `slots[i]` (a multi-adapter model).
    pub fn route(&self, slots: Vec<u32>) -> RouteScope {
        self.inner.lock().expect("dropout state poisoned").route = Some(Arc::new(slots));
        RouteScope { mode: self.clone() }
    }

    /// The adapter slot of each batch row, while a [`RouteScope`] lives.
    pub fn current_route(&self) -> Option<Arc<Vec<u32>>> {
        self.inner
            .lock()
            .expect("dropout state poisoned")
            .route
            .clone()
    }

    /// The int8 weights the model's linear layers take when they are built.
    pub fn set_int8(&self, int8: Option<Arc<Int8Weights>>) {
        self.inner.lock().expect("dropout state poisoned").int8 = int8;
    }

    /// The int8 weights, if the model is quantized.
    pub fn int8(&self) -> Option<Arc<Int8Weights>> {
        self.inner
            .lock()
            .expect("dropout state poisoned")
            .int8
            .clone()
    }

    /// The int8 weight of the linear layer `module` (f32 weight `[out, in]`), if any.
    pub(crate) fn int8_for(
        &self,
        module: &str,
        weight: &candle_core::Tensor,
        stored_transposed: bool,
    ) -> candle_core::Result<Option<Arc<Int8Matrix>>> {
        match self.int8() {
            Some(store) => store.for_linear(module, weight, stored_transposed),
            None => Ok(None),
        }
    }

    /// Autocast to `dtype` until the scope is dropped, then back to the setting before.
    pub fn autocast_scope(&self, dtype: Option<DType>) -> AutocastScope {
        let previous = self.autocast();
        self.set_autocast(dtype);
        AutocastScope {
            mode: self.clone(),
            previous,
        }
    }

    /// The random stream's state: (seed, stream, word position).
    pub fn rng_state(&self) -> ([u8; 32], u64, u128) {
        let s = self.inner.lock().expect("dropout state poisoned");
        (s.rng.get_seed(), s.rng.get_stream(), s.rng.get_word_pos())
    }

    /// Restore a state saved by [`ModelMode::rng_state`].
    pub fn set_rng_state(&self, seed: [u8; 32], stream: u64, word_pos: u128) {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(stream);
        rng.set_word_pos(word_pos);
        self.inner.lock().expect("dropout state poisoned").rng = rng;
    }

    /// A keep-mask scaled by 1/(1-p), or None in evaluation mode.
    pub(super) fn mask(&self, shape: &[usize], p: f32) -> Option<Vec<f32>> {
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

/// Clears [`ModelMode::route`]'s routing when dropped.
#[must_use = "the routing is cleared when the scope is dropped"]
pub struct RouteScope {
    mode: ModelMode,
}

impl Drop for RouteScope {
    fn drop(&mut self) {
        if let Ok(mut s) = self.mode.inner.lock() {
            s.route = None;
        }
    }
}

/// Restores a model's autocast setting when dropped (see [`ModelMode::autocast_scope`]).
#[must_use = "the autocast setting is restored when the scope is dropped"]
pub struct AutocastScope {
    mode: ModelMode,
    previous: Option<DType>,
}

impl Drop for AutocastScope {
    fn drop(&mut self) {
        self.mode.set_autocast(self.previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn bulk_mask_draws_match_one_at_a_time() {
        let mode = ModelMode::new(7);
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
