//! A tiny synthetic training task and model shared by the trainer's integration tests.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{Device, Tensor};
use hone_core::model::{Head, Model, ModelConfig, ProblemType, SequenceClassifier};
use hone_core::ops::CrossEntropyOptions;
use hone_core::training::{EvalStrategy, Metrics, TrainingArguments, TrainingData};

/// Sequences of 6 ids; the label says whether id 7 occurs.
pub struct Synthetic {
    pub rows: Vec<(Vec<u32>, i64)>,
    /// Scripted evaluation scores (for early stopping), consumed in order.
    pub scripted_scores: Vec<f64>,
    pub evals: Cell<usize>,
    /// Return a NaN loss from this training call on (counting from 1).
    pub nan_from_call: Option<usize>,
    pub calls: Cell<usize>,
    /// Training losses are multiplied by this (1 normally; large to force fp16 overflow).
    pub loss_multiplier: f64,
}

impl Synthetic {
    pub fn new(n: usize) -> Self {
        let rows = (0..n)
            .map(|i| {
                let ids: Vec<u32> = (0..6).map(|j| ((i * 7 + j * 13) % 20 + 1) as u32).collect();
                let label = ids.contains(&7) as i64;
                (ids, label)
            })
            .collect();
        Self {
            rows,
            scripted_scores: vec![],
            evals: Cell::new(0),
            nan_from_call: None,
            calls: Cell::new(0),
            loss_multiplier: 1.0,
        }
    }

    pub fn loss(&self, m: &dyn SequenceClassifier, idx: &[usize]) -> Result<Tensor> {
        let ids: Vec<u32> = idx.iter().flat_map(|&i| self.rows[i].0.clone()).collect();
        let ids = Tensor::from_vec(ids, (idx.len(), 6), &Device::Cpu)?;
        let labels = Tensor::new(
            idx.iter().map(|&i| self.rows[i].1).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        let logits = m.forward(&ids, &ids.zeros_like()?, &ids.ones_like()?)?;
        Ok(m.loss(&logits, &labels, &CrossEntropyOptions::default())?)
    }
}

impl TrainingData for Synthetic {
    type Net = dyn SequenceClassifier;

    fn num_train_examples(&self) -> usize {
        self.rows.len()
    }
    fn train_example_length(&self, _: usize) -> usize {
        6
    }
    fn training_loss(&self, net: &Self::Net, idx: &[usize]) -> Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        let loss = (self.loss(net, idx)? * self.loss_multiplier)?;
        match self.nan_from_call {
            Some(k) if self.calls.get() >= k => Ok((loss * f64::NAN)?),
            _ => Ok(loss),
        }
    }
    fn evaluate(&self, net: &Self::Net, _: Option<usize>) -> Result<Metrics> {
        let all: Vec<usize> = (0..self.rows.len()).collect();
        let loss: f32 = self.loss(net, &all)?.to_scalar()?;
        let k = self.evals.get();
        self.evals.set(k + 1);
        let score = self.scripted_scores.get(k).copied().unwrap_or(0.0);
        Ok(Metrics::from([
            ("loss".to_string(), loss as f64),
            ("score".to_string(), score),
        ]))
    }
    fn save_extras(&self, dir: &Path) -> Result<()> {
        std::fs::write(dir.join("extra.txt"), "saved by the task")?;
        Ok(())
    }
}

pub fn tiny_model(seed: u64) -> Model<dyn SequenceClassifier> {
    tiny_model_of_width(seed, 16)
}

/// The tiny model with another hidden size (for "a checkpoint of another model").
pub fn tiny_model_of_width(seed: u64, hidden_size: usize) -> Model<dyn SequenceClassifier> {
    let config = ModelConfig::parse(&format!(
        r#"{{"model_type": "bert", "vocab_size": 24, "hidden_size": {hidden_size}, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 16,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}}"#
    ))
    .unwrap();
    let head = Head::SequenceClassification {
        id2label: vec!["no".into(), "yes".into()],
        problem: ProblemType::SingleLabel,
    };
    Model::from_scratch(config, head, &Device::Cpu, seed).unwrap()
}

pub fn args(name: &str) -> TrainingArguments {
    let out: PathBuf =
        std::env::temp_dir().join(format!("hone-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    TrainingArguments {
        output_dir: out,
        progress: false,
        num_train_epochs: 2.0,
        per_device_train_batch_size: 8,
        learning_rate: 1e-2,
        eval_strategy: EvalStrategy::No,
        seed: 3,
        ..Default::default()
    }
}

pub fn weights<N: ?Sized>(model: &Model<N>) -> Vec<(String, Vec<f32>)> {
    model
        .params
        .params()
        .into_iter()
        .map(|(n, v)| (n, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
