//! Text classification inference: texts in, labels with probabilities out.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device};
use serde::Serialize;

use crate::model::{Model, ModelDir, ProblemType, SequenceClassifier};
use crate::tokenization::{length_batches, pad_batch, TextTokenizer};

/// A fine-tuned sequence classifier (any architecture) with its tokenizer and labels.
pub struct TextClassificationPipeline {
    pub model: Model<dyn SequenceClassifier>,
    pub tokenizer: TextTokenizer,
    pub labels: Vec<String>,
    /// Each adapter's labels, by slot, for a model with several adapters (empty otherwise).
    pub adapter_labels: Vec<Vec<String>>,
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

impl TextClassificationPipeline {
    /// Load a model directory saved by `hone finetune` (or any Hugging Face
    /// `BertForSequenceClassification` / `GPT2ForSequenceClassification` directory).
    pub fn load(dir: &Path, device: &Device, max_length: usize) -> Result<Self> {
        Self::open(&ModelDir::open(dir)?, device, max_length)
    }

    /// [`Self::load`] on a directory already opened (an adapter with a given base, say).
    pub fn open(dir: &ModelDir, device: &Device, max_length: usize) -> Result<Self> {
        let model = Model::open(dir, device)?
            .into_kind::<dyn SequenceClassifier>()
            .map_err(|e| e.context(dir.path.display().to_string()))?;
        let mut tokenizer = dir.tokenizer()?;
        tokenizer.set_max_length(Some(max_length))?;
        Self::new(model, tokenizer)
    }

    /// A classifier over several adapters that share a base model
    /// ([`Model::open_with_adapters`]): [`Self::predict_routed`] runs each input through
    /// the adapter it names, inputs of all adapters in the same batches.
    pub fn open_with_adapters(
        adapters: &[(String, ModelDir)],
        device: &Device,
        max_length: usize,
    ) -> Result<Self> {
        let model =
            Model::open_with_adapters(adapters, device)?.into_kind::<dyn SequenceClassifier>()?;
        let (_, first) = &adapters[0];
        let mut tokenizer = first.tokenizer()?;
        tokenizer.set_max_length(Some(max_length))?;
        let mut pipeline = Self::new(model, tokenizer)?;
        pipeline.adapter_labels = adapters
            .iter()
            .map(|(_, dir)| {
                crate::model::Head::from_config(&dir.config)
                    .labels()
                    .to_vec()
            })
            .collect();
        Ok(pipeline)
    }

    /// Wrap a model and its tokenizer (labels from the model's config). The tokenizer pads
    /// with the model's pad id and truncates at the model's positions at most.
    pub fn new(model: Model<dyn SequenceClassifier>, mut tokenizer: TextTokenizer) -> Result<Self> {
        let arch = &model.config.arch;
        if let Some(pad) = arch.pad_token_id() {
            tokenizer.set_pad_id(pad);
        }
        let limit = arch.max_positions();
        tokenizer.set_max_length(Some(tokenizer.max_length().map_or(limit, |m| m.min(limit))))?;
        let labels = model.head.labels().to_vec();
        let model = model.frozen();
        Ok(Self {
            model,
            tokenizer,
            labels,
            adapter_labels: Vec::new(),
        })
    }

    /// Classify `(text, optional pair)` inputs in batches; output order follows the input.
    pub fn predict(
        &self,
        inputs: &[(String, Option<String>)],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        self.predict_through(inputs, None, batch_size)
    }

    /// [`Self::predict`] on a model with several adapters: input `i` through adapter slot
    /// `slots[i]`, with that adapter's labels.
    pub fn predict_routed(
        &self,
        inputs: &[(String, Option<String>)],
        slots: &[u32],
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        anyhow::ensure!(slots.len() == inputs.len(), "one adapter slot per input");
        if let Some(&bad) = slots
            .iter()
            .find(|&&s| s as usize >= self.adapter_labels.len())
        {
            anyhow::bail!("adapter slot {bad} of {}", self.adapter_labels.len())
        }
        self.predict_through(inputs, Some(slots), batch_size)
    }

    fn predict_through(
        &self,
        inputs: &[(String, Option<String>)],
        slots: Option<&[u32]>,
        batch_size: usize,
    ) -> Result<Vec<Prediction>> {
        let net = &self.model.net;
        let encodings = self.tokenizer.encode_batch(inputs)?;
        // Sort by length so each batch pads little; restore the order at the end.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut out: Vec<Option<Prediction>> = vec![None; inputs.len()];
        for chunk in length_batches(&order, |i| encodings[i].len(), batch_size) {
            let refs: Vec<_> = chunk.iter().map(|&i| &encodings[i]).collect();
            let b = pad_batch(&refs, self.tokenizer.pad_id(), &self.model.device)?;
            // Each row's adapter, for this batch's forward pass.
            let _route =
                slots.map(|s| self.model.mode.route(chunk.iter().map(|&i| s[i]).collect()));
            let logits = crate::runtime::on_thread_pool(|| {
                net.forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)
            })?;
            for (&i, row) in chunk
                .iter()
                .zip(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
            {
                let labels = match slots {
                    Some(s) => &self.adapter_labels[s[i] as usize],
                    None => &self.labels,
                };
                out[i] = Some(self.describe(&inputs[i], row, labels));
            }
        }
        Ok(out
            .into_iter()
            .map(|p| p.expect("every input predicted"))
            .collect())
    }

    fn describe(
        &self,
        input: &(String, Option<String>),
        logits: Vec<f32>,
        labels: &[String],
    ) -> Prediction {
        let (label, score, probs): (String, f32, Vec<f32>) = match self.model.net.problem() {
            ProblemType::SingleLabel => {
                let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                let sum: f32 = exp.iter().sum();
                let probs: Vec<f32> = exp.iter().map(|e| e / sum).collect();
                let best = crate::tasks::classification::argmax(&probs);
                (labels[best].clone(), probs[best], probs)
            }
            ProblemType::MultiLabel => {
                let probs: Vec<f32> = logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect();
                let on: Vec<&str> = probs
                    .iter()
                    .zip(labels)
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
            probabilities: labels.iter().cloned().zip(probs).collect(),
            logits,
        }
    }
}
