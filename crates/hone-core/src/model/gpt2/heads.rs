//! The heads Hugging Face puts on GPT-2, with its semantics and tensor names.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{Gpt2Config, Gpt2Model};
use crate::model::config::Architecture;
use crate::model::heads::{CausalLm, ProblemType, SequenceClassifier};
use crate::model::layers::{KvCache, Linear, ModelMode};

/// `GPT2LMHeadModel`: the stack, then logits through an LM head tied to the token
/// embedding; `vb` is the model root (names start with `transformer.`).
#[derive(Debug, Clone)]
pub struct Gpt2LmHeadModel {
    pub transformer: Gpt2Model,
    /// Tied to `transformer.wte`: the same tensor, no parameter of its own.
    lm_head: Linear,
}

impl Gpt2LmHeadModel {
    pub fn new(vb: VarBuilder, c: &Gpt2Config, mode: &ModelMode) -> Result<Self> {
        let transformer = Gpt2Model::new(vb.pp("transformer"), c, mode)?;
        let lm_head = Linear::from_weight(transformer.wte().clone(), None, mode);
        Ok(Self {
            transformer,
            lm_head,
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
        self.lm_head.forward(&h)
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

/// `GPT2ForSequenceClassification`: a bias-free `score` layer on the hidden state of each
/// row's last token that is not padding (a causal model has seen the whole text only
/// there). As in Hugging Face, that is the rightmost id other than `pad_token_id`
/// (right padding); without a pad id it is the last position.
#[derive(Debug, Clone)]
pub struct Gpt2ForSequenceClassification {
    pub transformer: Gpt2Model,
    score: Linear,
    problem: ProblemType,
}

impl Gpt2ForSequenceClassification {
    pub fn new(
        vb: VarBuilder,
        c: &Gpt2Config,
        num_labels: usize,
        problem: ProblemType,
        mode: &ModelMode,
    ) -> Result<Self> {
        Ok(Self {
            transformer: Gpt2Model::new(vb.pp("transformer"), c, mode)?,
            score: Linear::without_bias(
                vb.pp("score"),
                c.n_embd,
                num_labels,
                c.initializer_range,
                mode,
            )?,
            problem,
        })
    }

    /// Per row of `input_ids` `[B, T]`, the flat index `b * T + t` of its last non-pad
    /// token: `[B]` u32.
    fn last_token_rows(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let device = input_ids.device();
        let last = match self.transformer.config.pad_token_id {
            // max over t of t * [id_t != pad]: the rightmost real token (0 when none).
            Some(pad) => {
                let positions = Tensor::arange(0u32, t as u32, device)?.unsqueeze(0)?;
                input_ids
                    .ne(pad)?
                    .to_dtype(DType::U32)?
                    .broadcast_mul(&positions)?
                    .max(D::Minus1)?
            }
            None => Tensor::full(t as u32 - 1, b, device)?,
        };
        let row_starts = Tensor::arange_step(0u32, (b * t) as u32, t as u32, device)?;
        last + row_starts
    }
}

impl SequenceClassifier for Gpt2ForSequenceClassification {
    /// Logits `[B, num_labels]`.
    fn forward(&self, ids: &Tensor, _type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let h = self.transformer.forward(ids, Some(mask), None)?;
        let (b, t, d) = h.dims3()?;
        let pooled = h
            .reshape((b * t, d))?
            .index_select(&self.last_token_rows(ids)?, 0)?;
        self.score.forward(&pooled)
    }

    fn problem(&self) -> ProblemType {
        self.problem
    }
}
