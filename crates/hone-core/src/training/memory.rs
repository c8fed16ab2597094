//! A lower bound on the memory one training step needs, to refuse up front a batch that
//! cannot fit rather than be killed by the kernel's OOM killer mid-run.
//!
//! Only what certainly stays alive until the backward pass is counted, so that a refusal is
//! never wrong: the weights, their gradients and AdamW's two moments, and per layer the
//! tensors backward needs (the attention probabilities, B x heads x T x T; the query, key,
//! value, context and two residual inputs, 6 x B x T x H; the feed-forward's inner
//! activation, 4 x B x T x H). Real use is higher (temporaries, the allocator).

use anyhow::{bail, Result};

/// What a model and a batch look like, for [`StepMemory::lower_bound`].
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub parameters: usize,
    pub trainable: usize,
    /// Moment tensors the optimizer keeps per trainable parameter (2 for AdamW).
    pub moments: usize,
    pub batch: usize,
    /// The longest sequence a batch can hold.
    pub seq_len: usize,
    /// Bytes per activation element (4 in fp32, 2 under bf16 or fp16 autocast).
    pub activation_bytes: usize,
}

/// The lower bound, split as the message reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMemory {
    /// Weights, gradients and optimizer moments (f32).
    pub state: u64,
    /// Activations kept for the backward pass.
    pub activations: u64,
}

const GIB: f64 = (1u64 << 30) as f64;

impl StepMemory {
    pub fn lower_bound(s: &StepShape) -> Self {
        let state = 4 * (s.parameters + s.trainable * (1 + s.moments)) as u64;
        let (b, t, h) = (s.batch as u64, s.seq_len as u64, s.hidden as u64);
        let per_layer = b * s.heads as u64 * t * t + 10 * b * t * h;
        Self {
            state,
            activations: per_layer * s.layers as u64 * s.activation_bytes as u64,
        }
    }

    pub fn total(&self) -> u64 {
        self.state + self.activations
    }

    /// Refuse when even the lower bound exceeds `available` bytes.
    pub fn check(&self, s: &StepShape, available: u64) -> Result<()> {
        if self.total() <= available {
            return Ok(());
        }
        bail!(
            "a training step needs at least {:.1} GiB ({:.1} GiB of activations for batch {} x {} tokens x {} layers, {:.1} GiB of weights, gradients and optimizer state) and {:.1} GiB is available: lower per_device_train_batch_size or the sequence length (gradient_accumulation_steps keeps the effective batch)",
            self.total() as f64 / GIB,
            self.activations as f64 / GIB,
            s.batch,
            s.seq_len,
            s.layers,
            self.state as f64 / GIB,
            available as f64 / GIB
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_adds_up_by_hand_and_refuses_only_past_it() {
        // 2 layers, H 16, 2 heads, batch 3 x 5 tokens, fp32, AdamW over 100 of 120 params.
        let s = StepShape {
            layers: 2,
            hidden: 16,
            heads: 2,
            parameters: 120,
            trainable: 100,
            moments: 2,
            batch: 3,
            seq_len: 5,
            activation_bytes: 4,
        };
        let m = StepMemory::lower_bound(&s);
        // 4 x (120 + 100 x 3) = 1680; per layer 3*2*25 + 10*3*5*16 = 150 + 2400 = 2550.
        assert_eq!(m.state, 1680);
        assert_eq!(m.activations, 2550 * 2 * 4);
        assert!(m.check(&s, m.total()).is_ok());
        let err = m.check(&s, m.total() - 1).unwrap_err().to_string();
        assert!(err.contains("batch 3 x 5 tokens x 2 layers"), "{err}");
    }
}
