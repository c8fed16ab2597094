//! Autocast, as `torch.autocast` does it: inside an [`autocast`] scope the matrix products of
//! [`super::linear`] and [`super::attention`] take their operands in a lower precision (bf16
//! or fp16) and hand back f32, while everything else (LayerNorm and softmax statistics, the
//! loss, the parameters and their gradients) stays f32. The scope is per thread, like
//! PyTorch's.

use std::cell::Cell;

use candle_core::DType;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Restores the enclosing autocast setting when dropped.
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    previous: Option<DType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.previous));
    }
}

/// Runs the matrix products of this thread in `dtype` (None: f32) until the guard drops.
pub fn autocast(dtype: Option<DType>) -> AutocastGuard {
    let previous = AUTOCAST.with(|a| a.replace(dtype));
    AutocastGuard { previous }
}

/// The current autocast dtype, if any, for an f32 operand.
pub(crate) fn autocast_dtype_for(x: &candle_core::Tensor) -> Option<DType> {
    (x.dtype() == DType::F32)
        .then(|| AUTOCAST.with(Cell::get))
        .flatten()
}
