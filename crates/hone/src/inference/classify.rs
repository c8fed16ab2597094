//! Text classification inference: texts in, labels with probabilities out.

use std::path::Path;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use serde::Serialize;

use crate::model::{LoadedModel, ProblemType, TaskModel};
use crate::tokenization::{pad_batch, TextTokenizer};

/// A fine-tuned sequence-classification model with its tokenizer and labels.
pub struct TextClassifier {
    pub model: LoadedModel,
    pub tokenizer: TextTokenizer,
    pub labels: Vec<String>,
}

/// One prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_pair: Option<String>,
    /// The most probable label (single-label), or the labels over 0.5 joined by ','.
    pub label: String,
    /// Its probability (the value itself for regression).
    pub score: f32,
    /// Probability of every label (sigmoid per label for multi-label).
    pub probabilities: std::collections::BTreeMap<String, f32>,
    /// Raw logits in label order.
    #[serde(skip)]
    pub logits: Vec<f32>,
}

impl TextClassifier {
    /// Load a model directory saved by `hone finetune` (or any HF
    /// `BertForSequenceClassification` directory).
    pub fn load(dir: &Path, device: &Device, max_length: usize) -> Result<Self> {
        let model = LoadedModel::load(dir, device)?;
        if !matches!(model.model, TaskModel::SequenceClassification(_)) {
            bail!(
                "{} holds a {} model, not a sequence classifier",
                dir.display(),
                model.task.architecture_name()
            )
        }
        let mut tokenizer = TextTokenizer::from_dir(dir)?;
        tokenizer.set_max_length(Some(max_length))?;
        let labels: Vec<String> = model.config.id2label.values().cloned().collect();
        Ok(Self {
            model,
            tokenizer,
            labels,
        })
    }

    fn problem(&self) -> ProblemType {
        match &self.model.model {
            TaskModel::SequenceClassification(m) => m.problem,
            _ => unreachable!("checked at load"),
        }
    }

    /// Classify `(text, optional pair)` inputs in batches; output order follows the input.
    pub fn predict(
        &self,
        inputs: &[(String, Option<String>)],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        let TaskModel::SequenceClassification(head) = &self.model.model else {
            unreachable!()
        };
        let encodings = self.tokenizer.encode_batch(inputs)?;
        // Sort by length so each batch pads little; restore the order at the end.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut out: Vec<Option<Prediction>> = vec![None; inputs.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let refs: Vec<_> = chunk.iter().map(|&i| &encodings[i]).collect();
            let b = pad_batch(&refs, self.tokenizer.pad_id(), &self.model.device)?;
            let logits = head.forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
            for (&i, row) in chunk
                .iter()
                .zip(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
            {
                out[i] = Some(self.describe(&inputs[i], row));
            }
        }
        Ok(out
            .into_iter()
            .map(|p| p.expect("every input predicted"))
            .collect())
    }

    fn describe(&self, input: &(String, Option<String>), logits: Vec<f32>) -> Prediction {
        let (label, score, probs): (String, f32, Vec<f32>) = match self.problem() {
            ProblemType::SingleLabel => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                let probs: Vec<f32> = exp.iter().map(|e| e / sum).collect();
                let best = crate::tasks::classification::argmax(&probs);
                (self.labels[best].clone(), probs[best], probs)
            }
            ProblemType::MultiLabel => {
                let probs: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
                let on: Vec<&str> = probs
                    .iter()
                    .zip(&self.labels)
                    .filter(|(p, _)| **p > 0.5)
                    .map(|(_, l)| l.as_str())
                    .collect();
                let score = probs.iter().copied().fold(0.0, f32::max);
                (on.join(","), score, probs)
            }
            ProblemType::Regression => (format!("{}", logits[0]), logits[0], vec![logits[0]]),
        };
        Prediction {
            text: input.0.clone(),
            text_pair: input.1.clone(),
            label,
            score,
            probabilities: self.labels.iter().cloned().zip(probs).collect(),
            logits,
        }
    }
}
