//! The head Hugging Face puts on Marian: `MarianMTModel`.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{MarianConfig, MarianModel};
use crate::model::heads::{Seq2SeqLm, Seq2SeqTokens};
use crate::model::layers::{KvCache, Linear, ModelMode};

/// `MarianMTModel`: the encoder-decoder, then logits `h W^T + final_logits_bias` through
/// an output projection tied to the shared embedding (or its own `lm_head` when
/// `tie_word_embeddings` is false); `vb` is the model root (names start with `model.`).
#[derive(Debug, Clone)]
pub struct MarianMtModel {
    pub model: MarianModel,
    lm_head: Linear,
    /// `[1, vocab]`, a buffer in Transformers: saved, never trained (the registry lists
    /// it as one, so it arrives detached).
    final_logits_bias: Tensor,
}

impl MarianMtModel {
    pub fn new(vb: VarBuilder, c: &MarianConfig, mode: &ModelMode) -> Result<Self> {
        let model = MarianModel::new(vb.pp("model"), c, mode)?;
        let lm_head = match c.tie_word_embeddings {
            true => Linear::from_weight(model.shared().clone(), None, mode),
            false => {
                Linear::without_bias(vb.pp("lm_head"), c.d_model, c.vocab_size, c.init_std, mode)?
            }
        };
        let final_logits_bias =
            vb.get_with_hints((1, c.vocab_size), "final_logits_bias", Init::Const(0.0))?;
        Ok(Self {
            model,
            lm_head,
            final_logits_bias,
        })
    }
}

impl Seq2SeqLm for MarianMtModel {
    fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.model.encode(input_ids, attention_mask)
    }

    fn decode(
        &self,
        decoder_input_ids: &Tensor,
        encoder_states: &Tensor,
        attention_mask: &Tensor,
        cache: Option<&mut Vec<KvCache>>,
    ) -> Result<Tensor> {
        let h = self
            .model
            .decode(decoder_input_ids, encoder_states, attention_mask, cache)?;
        let logits = self.lm_head.forward(&h)?;
        logits.broadcast_add(&self.final_logits_bias.to_dtype(logits.dtype())?)
    }

    fn new_cache(&self) -> Vec<KvCache> {
        self.model.new_cache()
    }

    fn tokens(&self) -> Seq2SeqTokens {
        let c = &self.model.config;
        Seq2SeqTokens {
            decoder_start: c.decoder_start_token_id,
            eos: c.eos_token_id,
            pad: c.pad_token_id,
            forced_eos: c.forced_eos_token_id,
        }
    }

    fn max_positions(&self) -> usize {
        self.model.config.max_position_embeddings
    }

    fn device(&self) -> &candle_core::Device {
        self.model.shared().device()
    }
}
