//! The heads Hugging Face puts on GPT-2, with its semantics and tensor names.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::{Gpt2Config, Gpt2Model};
use crate::model::config::Architecture;
use crate::model::heads::{CausalLm, ProblemType, SequenceClassifier};
use crate::model::layers::{onnx_position_ids, KvCache, Linear, ModelMode};
use crate::onnx::{self, Axis, TokenInput};

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

    /// `logits` `[B, T, vocab]`, without past key values.
    fn onnx(&self, g: &mut onnx::Graph) -> Result<()> {
        let h = self.transformer.onnx(g)?;
        let logits = self.lm_head.onnx(g, &h)?;
        let vocab = self.transformer.config.vocab_size;
        g.output(
            "logits",
            &logits,
            &[Axis::Batch, Axis::Sequence, Axis::Fixed(vocab)],
        );
        Ok(())
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

    /// `logits` `[B, num_labels]` at each row's last non-pad token, as
    /// [`Gpt2ForSequenceClassification::last_token_rows`] picks it.
    fn onnx(&self, g: &mut onnx::Graph) -> Result<()> {
        let h = self.transformer.onnx(g)?;
        let input_ids = g.token_input(TokenInput::InputIds);
        let rows = match self.transformer.config.pad_token_id {
            Some(pad) => {
                // [B]: max over t of t * [id_t != pad], the rightmost real token.
                let positions = onnx_position_ids(g, &input_ids);
                let pad = g.int(pad as i64);
                let is_pad = g.equal(&input_ids, &pad);
                let real = g.not(&is_pad);
                let real = g.cast_int(&real);
                let t = g.mul(&real, &positions);
                let last = g.reduce_max(&t, 1);
                // One-hot [B, 1, T] over positions, times h [B, T, D]: the rows [B, D].
                let last = g.unsqueeze(&last, &[1, 2]);
                let pick = g.equal(&positions, &last);
                let pick = g.cast_float(&pick);
                let rows = g.matmul(&pick, &h);
                g.reshape(&rows, &[0, -1])
            }
            // Without a pad id, the last position.
            None => {
                let last = g.int(-1);
                g.gather(&h, &last, 1)
            }
        };
        let logits = self.score.onnx(g, &rows)?;
        let labels = self.score.weight().dim(0)?;
        g.output("logits", &logits, &[Axis::Batch, Axis::Fixed(labels)]);
        Ok(())
    }
}
