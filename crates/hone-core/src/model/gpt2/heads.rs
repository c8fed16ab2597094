//! The heads Hugging Face puts on GPT-2, with its semantics and tensor names.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::{Gpt2Config, Gpt2Model};
use crate::model::config::Architecture;
use crate::model::heads::CausalLm;
use crate::model::layers::{KvCache, Linear, TrainingMode};

/// `GPT2LMHeadModel`: the stack, then logits through an LM head tied to the token
/// embedding; `vb` is the model root (names start with `transformer.`).
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    pub transformer: Gpt2Model,
}

impl Gpt2LmHeadModel {
    pub fn new(vb: VarBuilder, c: &Gpt2Config, mode: &TrainingMode) -> Result<Self> {
        Ok(Self {
            transformer: Gpt2Model::new(vb.pp("transformer"), c, mode)?,
        })
    }
}

impl CausalLm for Gpt2LmHeadModel {
    /// Logits `[B, T, vocab]`.
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor> {
        let h = self.transformer.forward(input_ids, attention_mask, cache)?;
        Linear::from_weight(self.transformer.wte().clone(), None).forward(&h)
    }

    fn new_cache(&self) -> Vec<KvCache> {
        self.transformer.new_cache()
    }

    fn config(&self) -> &dyn Architecture {
        &self.transformer.config
    }

    fn device(&self) -> &candle_core::Device {
        self.transformer.wte().device()
    }
}
