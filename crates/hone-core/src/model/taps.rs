//! Intermediate tensors of a forward pass, recorded on request: what distillation's
//! hidden-state and attention-transfer terms compare (Transformers' `output_hidden_states`
//! and `output_attentions`, without widening every head's signature). Outside [`capture`]
//! the recording calls in the model code do nothing.

use std::cell::RefCell;

use candle_core::{Result, Tensor};

/// What one forward pass recorded, in call order.
#[derive(Debug, Default)]
pub struct Taps {
    /// The encoder's `[B, T]` attention mask (1 token, 0 padding).
    pub attention_mask: Option<Tensor>,
    /// `[B, T, H]`: the embeddings' output, then each layer's (Transformers' `hidden_states`).
    pub hidden_states: Vec<Tensor>,
    /// `[B, heads, Tq, Tk]`: each attention's probabilities, when asked for.
    pub attentions: Vec<Tensor>,
    want_attentions: bool,
}

thread_local! {
    static ACTIVE: RefCell<Option<Taps>> = const { RefCell::new(None) };
}

/// Run `f` (one forward pass, on this thread) and return what it recorded. Attention
/// probabilities cost an extra `[B, heads, T, T]` product per layer, so they are recorded
/// only when `attentions` is set.
pub fn capture<T>(
    attentions: bool,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Taps)> {
    // Restores the outer recording (or none) even if `f` fails or panics.
    struct Restore(Option<Taps>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            ACTIVE.with(|a| *a.borrow_mut() = outer);
        }
    }
    let fresh = Taps {
        want_attentions: attentions,
        ..Taps::default()
    };
    let outer = ACTIVE.with(|a| a.borrow_mut().replace(fresh));
    let restore = Restore(outer);
    let out = f();
    let taps = ACTIVE.with(|a| a.borrow_mut().take()).unwrap_or_default();
    drop(restore);
    Ok((out?, taps))
}

fn with_active(f: impl FnOnce(&mut Taps)) {
    ACTIVE.with(|a| {
        if let Some(t) = a.borrow_mut().as_mut() {
            f(t)
        }
    })
}

/// Record the encoder's attention mask `[B, T]`.
pub(crate) fn attention_mask(mask: &Tensor) {
    with_active(|t| t.attention_mask = Some(mask.clone()))
}

/// Record a hidden state `[B, T, H]`.
pub(crate) fn hidden_state(h: &Tensor) {
    with_active(|t| t.hidden_states.push(h.clone()))
}

/// Whether attention probabilities are being recorded (the caller computes them only then).
pub(crate) fn wants_attentions() -> bool {
    ACTIVE.with(|a| a.borrow().as_ref().is_some_and(|t| t.want_attentions))
}

/// Record attention probabilities `[B, heads, Tq, Tk]` made by `probs`, if asked for.
pub(crate) fn attention(probs: impl FnOnce() -> Result<Tensor>) -> Result<()> {
    if wants_attentions() {
        let p = probs()?;
        with_active(|t| t.attentions.push(p));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn records_only_inside_capture_and_nests() -> anyhow::Result<()> {
        let x = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
        hidden_state(&x); // nothing listens
        let ((), outer) = capture(false, || {
            hidden_state(&x);
            let ((), inner) = capture(true, || {
                hidden_state(&x);
                hidden_state(&x);
                attention(|| Ok(x.clone()))?;
                Ok(())
            })?;
            assert_eq!((inner.hidden_states.len(), inner.attentions.len()), (2, 1));
            // Not asked for here: the closure is never run.
            attention(|| panic!("attention probabilities computed without a listener"))?;
            hidden_state(&x);
            Ok(())
        })?;
        assert_eq!((outer.hidden_states.len(), outer.attentions.len()), (2, 0));
        assert!(!wants_attentions());
        // A failing pass still ends its recording.
        let failed = capture(true, || -> anyhow::Result<()> { anyhow::bail!("boom") });
        assert!(failed.is_err());
        assert!(!wants_attentions());
        Ok(())
    }
}
