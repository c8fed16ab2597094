//! Sentence embeddings from an encoder: `[CLS]`, mean over real tokens, or the pooler.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};
use serde::Serialize;

use crate::model::{Encoder, Model};
use crate::tokenization::{length_batches, pad_batch, TextTokenizer};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Pooling {
    /// The first (`[CLS]`) hidden state.
    Cls,
    /// The mean of the hidden states of real (unpadded) tokens.
    Mean,
    /// BERT's pooler: tanh(W h_[CLS] + b).
    Pooler,
}

/// One embedded text.
#[derive(Debug, Clone, Serialize)]
pub struct Embedded {
    pub text: String,
    pub input_ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

/// Mean of `hidden` `[B, T, H]` over positions where `mask` `[B, T]` is 1.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    summed.broadcast_div(&counts)
}

/// Embed `texts` in batches of `batch_size` with `model` (an encoder). Batches hold texts
/// of similar length (sorted), so that they pad little; the output follows the input.
pub fn embed_texts(
    model: &Model<dyn Encoder>,
    tokenizer: &TextTokenizer,
    texts: &[String],
    pooling: Pooling,
    batch_size: usize,
) -> Result<Vec<Embedded>> {
    let pairs: Vec<(String, Option<String>)> = texts.iter().map(|t| (t.clone(), None)).collect();
    let encodings = tokenizer.encode_batch(&pairs)?;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| encodings[i].len());
    let mut out: Vec<Option<Embedded>> = vec![None; texts.len()];
    for chunk in length_batches(&order, |i| encodings[i].len(), batch_size) {
        let refs: Vec<_> = chunk.iter().map(|&i| &encodings[i]).collect();
        let batch = pad_batch(&refs, tokenizer.pad_id(), &model.device)?;
        let o = crate::runtime::on_thread_pool(|| {
            model.net.encode(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
            )
        })?;
        let pooled = match pooling {
            Pooling::Cls => o.sequence.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => mean_pool(&o.sequence, &batch.attention_mask)?,
            Pooling::Pooler => match o.pooled {
                Some(p) => p,
                None => bail!("this model has no pooler weights; use --pooling mean or cls"),
            },
        };
        for (&i, embedding) in chunk.iter().zip(pooled.to_vec2::<f32>()?) {
            out[i] = Some(Embedded {
                text: texts[i].clone(),
                input_ids: encodings[i].get_ids().to_vec(),
                embedding,
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|e| e.expect("every text embedded"))
        .collect())
}
