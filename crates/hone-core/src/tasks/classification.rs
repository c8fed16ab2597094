//! Text classification (single-label, multi-label) and regression on any sequence
//! classifier (BERT, GPT-2): labelled tables to batches, the loss, evaluation reports and
//! predictions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use hone_data::{read_table, train_validation_split, CleanOptions, Example, LabelMap, TableSpec};
use hone_metrics::{ClassificationReport, ZeroDivision};
use serde::{Deserialize, Serialize};

use super::distill::{DistillArgs, LogitsData};
use super::{FinetuneTask, ModelArgs, PeftArgs};
use crate::distributed::{self, Communicator};
use crate::model::{Head, Model, ProblemType, SequenceClassifier};
use crate::ops::CrossEntropyOptions;
use crate::tokenization::{pad_ids, TextTokenizer};
use crate::training::{Metrics, TrainingArguments, TrainingData};

/// The `[data]` section of a classification recipe (`run_glue.py` names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassificationDataArgs {
    pub train_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    /// Carve the validation set from the training file when no validation file is given.
    pub validation_split: f64,
    /// One column, or two for sentence pairs; empty: picked from the header.
    pub text_column_names: Vec<String>,
    pub label_column_name: String,
    pub max_seq_length: usize,
    pub max_train_samples: Option<usize>,
    pub max_eval_samples: Option<usize>,
    pub problem_type: ProblemType,
    /// For multi-label data: the separator between labels in the label column.
    pub label_separator: String,
    pub class_weights: Option<ClassWeights>,
    pub label_smoothing: f64,
    pub strip_html: bool,
    pub normalize_whitespace: bool,
    pub unicode_nfc: bool,
}

impl Default for ClassificationDataArgs {
    fn default() -> Self {
        Self {
            train_file: PathBuf::new(),
            validation_file: None,
            validation_split: 0.1,
            text_column_names: vec![],
            label_column_name: "label".into(),
            max_seq_length: 128,
            max_train_samples: None,
            max_eval_samples: None,
            problem_type: ProblemType::SingleLabel,
            label_separator: ",".into(),
            class_weights: None,
            label_smoothing: 0.0,
            strip_html: false,
            normalize_whitespace: false,
            unicode_nfc: false,
        }
    }
}

/// Per-class weights of the cross-entropy.
#[derive(Debug, Clone, PartialEq)]
pub enum ClassWeights {
    /// `n / (classes * count)`: every class weighs as much in total (scikit-learn's rule).
    Balanced,
    /// One weight per label, in label order.
    Explicit(Vec<f32>),
}

impl Serialize for ClassWeights {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ClassWeights::Balanced => s.serialize_str("balanced"),
            ClassWeights::Explicit(w) => w.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ClassWeights {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ClassWeights;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"balanced\" or a list of numbers, one per label")
            }
            fn visit_str<E: serde::de::Error>(
                self,
                v: &str,
            ) -> std::result::Result<Self::Value, E> {
                match v {
                    "balanced" => Ok(ClassWeights::Balanced),
                    other => Err(E::invalid_value(serde::de::Unexpected::Str(other), &self)),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut w = Vec::new();
                while let Some(x) = seq.next_element::<f32>()? {
                    w.push(x);
                }
                Ok(ClassWeights::Explicit(w))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A whole fine-tuning recipe for classification.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassificationRecipe {
    /// Always [`FinetuneTask::TextClassification`] (the default).
    pub task: FinetuneTask,
    pub model: ModelArgs,
    pub data: ClassificationDataArgs,
    pub training: TrainingArguments,
    /// Train a LoRA adapter instead of the whole model.
    pub peft: Option<PeftArgs>,
    /// Distil a fine-tuned teacher into this model (`hone distill`).
    pub distill: Option<DistillArgs>,
}

/// One tokenized example and its target.
#[derive(Debug, Clone)]
struct Encoded {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    /// Class id, regression target, or multi-hot row.
    target: Vec<f32>,
}

/// A classification dataset with its loss, ready for the trainer.
pub struct ClassificationData {
    pub tokenizer: TextTokenizer,
    pub labels: Vec<String>,
    pub problem: ProblemType,
    train: Vec<Encoded>,
    valid: Vec<Encoded>,
    loss_opts: CrossEntropyOptions,
    eval_batch_size: usize,
    device: Device,
}

fn table_spec(data: &ClassificationDataArgs, max_rows: Option<usize>) -> TableSpec {
    let mut spec = TableSpec::with_label(data.label_column_name.clone())
        .text_columns(data.text_column_names.clone())
        .clean(CleanOptions {
            strip_html: data.strip_html,
            normalize_whitespace: data.normalize_whitespace,
            unicode_nfc: data.unicode_nfc,
        });
    if let Some(n) = max_rows {
        spec = spec.max_rows(n);
    }
    spec
}

/// Targets of `examples` under `labels` (errors name file and line).
fn targets(
    examples: &[Example],
    file: &Path,
    labels: &LabelMap,
    problem: ProblemType,
    separator: &str,
) -> Result<Vec<Vec<f32>>> {
    examples
        .iter()
        .map(|ex| {
            let raw = ex
                .label
                .as_deref()
                .with_context(|| format!("{}:{}: missing label", file.display(), ex.line))?;
            let at = |e: anyhow::Error| e.context(format!("{}:{}", file.display(), ex.line));
            match problem {
                ProblemType::SingleLabel => {
                    Ok(vec![labels.id(raw).map_err(|e| at(e.into()))? as f32])
                }
                ProblemType::Regression => {
                    raw.trim().parse::<f32>().map(|v| vec![v]).map_err(|_| {
                        at(anyhow::anyhow!("regression label {raw:?} is not a number"))
                    })
                }
                ProblemType::MultiLabel => {
                    let mut row = vec![0f32; labels.len()];
                    for l in raw
                        .split(separator)
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                    {
                        row[labels.id(l).map_err(|e| at(e.into()))?] = 1.0;
                    }
                    Ok(row)
                }
            }
        })
        .collect()
}

fn encode_examples(
    tok: &TextTokenizer,
    examples: &[Example],
    targets: Vec<Vec<f32>>,
) -> Result<Vec<Encoded>> {
    let inputs: Vec<(String, Option<String>)> = examples
        .iter()
        .map(|e| (e.texts[0].clone(), e.texts.get(1).cloned()))
        .collect();
    let encodings = tok.encode_batch(&inputs)?;
    Ok(encodings
        .into_iter()
        .zip(targets)
        .map(|(e, target)| Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            target,
        })
        .collect())
}

impl ClassificationData {
    /// Read and tokenize the data of a recipe, and load the model with a fresh head.
    /// Nothing is written anywhere; every data error names its file and line.
    pub fn prepare(
        recipe: &ClassificationRecipe,
        device: &Device,
    ) -> Result<(Model<dyn SequenceClassifier>, Self)> {
        let data = &recipe.data;
        let problem = data.problem_type;
        let train_table = read_table(&data.train_file, &table_spec(data, data.max_train_samples))?;
        let (train_examples, valid_examples, valid_file) = match &data.validation_file {
            Some(v) => {
                let table = read_table(v, &table_spec(data, data.max_eval_samples))?;
                (train_table.examples, table.examples, v.clone())
            }
            None => {
                let (t, v) = train_validation_split(
                    train_table.examples,
                    data.validation_split,
                    recipe.training.seed,
                )?;
                (t, v, data.train_file.clone())
            }
        };
        let labels = match problem {
            ProblemType::Regression => LabelMap::new(vec!["score".into()])?,
            ProblemType::SingleLabel => LabelMap::from_examples(&train_examples),
            ProblemType::MultiLabel => LabelMap::from_labels(
                train_examples
                    .iter()
                    .filter_map(|e| e.label.as_deref())
                    .flat_map(|l| {
                        l.split(data.label_separator.as_str())
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    }),
            ),
        };
        if problem == ProblemType::SingleLabel && labels.len() < 2 {
            bail!(
                "{}: found {} distinct label(s); classification needs at least 2",
                data.train_file.display(),
                labels.len()
            )
        }
        let train_targets = targets(
            &train_examples,
            &data.train_file,
            &labels,
            problem,
            &data.label_separator,
        )?;
        let valid_targets = targets(
            &valid_examples,
            &valid_file,
            &labels,
            problem,
            &data.label_separator,
        )?;

        let mut tokenizer = recipe.model.tokenizer()?;
        let head = Head::SequenceClassification {
            id2label: labels.labels().to_vec(),
            problem,
        };
        let model = recipe.model.load(
            head,
            recipe.peft.as_ref(),
            &mut tokenizer,
            device,
            recipe.training.seed,
        )?;
        let max_positions = model.config.arch.max_positions();
        tokenizer.set_max_length(Some(data.max_seq_length.min(max_positions)))?;
        let train = encode_examples(&tokenizer, &train_examples, train_targets)?;
        let valid = encode_examples(&tokenizer, &valid_examples, valid_targets)?;

        let class_weights = match &data.class_weights {
            None => None,
            Some(ClassWeights::Balanced) => {
                let mut counts = vec![0usize; labels.len()];
                for e in &train {
                    counts[e.target[0] as usize] += 1;
                }
                let n = train.len() as f32;
                Some(
                    counts
                        .iter()
                        .map(|&c| n / (labels.len() as f32 * c.max(1) as f32))
                        .collect::<Vec<f32>>(),
                )
            }
            Some(ClassWeights::Explicit(w)) => {
                if w.len() != labels.len() {
                    bail!(
                        "class_weights has {} entries for {} labels {:?}",
                        w.len(),
                        labels.len(),
                        labels.labels()
                    )
                }
                Some(w.clone())
            }
        };
        let loss_opts = CrossEntropyOptions {
            ignore_index: None,
            class_weights: class_weights.map(|w| Tensor::new(w, device)).transpose()?,
            label_smoothing: data.label_smoothing,
        };
        let prepared = Self {
            tokenizer,
            labels: labels.labels().to_vec(),
            problem,
            train,
            valid,
            loss_opts,
            eval_batch_size: recipe.training.per_device_eval_batch_size,
            device: device.clone(),
        };
        Ok((model, prepared))
    }

    fn collate(&self, rows: &[&Encoded]) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let types: Vec<&[u32]> = rows.iter().map(|r| r.type_ids.as_slice()).collect();
        let b = pad_ids(&ids, &types, self.tokenizer.pad_id(), &self.device)?;
        let labels = match self.problem {
            ProblemType::SingleLabel => Tensor::new(
                rows.iter().map(|r| r.target[0] as i64).collect::<Vec<_>>(),
                &self.device,
            )?,
            ProblemType::Regression => Tensor::new(
                rows.iter().map(|r| r.target[0]).collect::<Vec<_>>(),
                &self.device,
            )?,
            ProblemType::MultiLabel => {
                let flat: Vec<f32> = rows.iter().flat_map(|r| r.target.iter().copied()).collect();
                Tensor::from_vec(flat, (rows.len(), self.labels.len()), &self.device)?
            }
        };
        Ok((b.input_ids, b.token_type_ids, b.attention_mask, labels))
    }

    /// Logits and mean loss over `rows`.
    fn logits_and_loss(
        &self,
        net: &dyn SequenceClassifier,
        rows: &[&Encoded],
    ) -> Result<(Tensor, Tensor)> {
        let (ids, types, mask, labels) = self.collate(rows)?;
        let logits = net.forward(&ids, &types, &mask)?;
        let loss = net.loss(&logits, &labels, &self.loss_opts)?;
        Ok((logits, loss))
    }

    /// Predictions for the validation set, in its order: (class id or value, probabilities).
    pub fn predict_validation(
        &self,
        net: &dyn SequenceClassifier,
        max_batches: Option<usize>,
    ) -> Result<(Vec<Vec<f32>>, f64)> {
        let rows = self.scored_rows(max_batches);
        let (logits, loss_sum) = self.predict_rows(net, &rows)?;
        Ok((logits, loss_sum / rows.len().max(1) as f64))
    }

    /// The validation rows an evaluation scores, shortest first (batches of similar
    /// length), the first `max_batches` batches of them when limited.
    fn scored_rows(&self, max_batches: Option<usize>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.valid.len()).collect();
        order.sort_by_key(|&i| self.valid[i].ids.len());
        if let Some(m) = max_batches {
            order.truncate(m * self.eval_batch_size.max(1));
        }
        order
    }

    /// Logits of validation `rows` (by row; empty for rows not scored) and the sum of their
    /// losses.
    fn predict_rows(
        &self,
        net: &dyn SequenceClassifier,
        rows: &[usize],
    ) -> Result<(Vec<Vec<f32>>, f64)> {
        let mut logits_by_row = vec![Vec::new(); self.valid.len()];
        let mut loss_sum = 0f64;
        for chunk in rows.chunks(self.eval_batch_size.max(1)) {
            let batch: Vec<&Encoded> = chunk.iter().map(|&i| &self.valid[i]).collect();
            let (logits, loss) = self.logits_and_loss(net, &batch)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            for (&i, row) in chunk
                .iter()
                .zip(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
            {
                logits_by_row[i] = row;
            }
        }
        Ok((logits_by_row, loss_sum))
    }

    /// The metrics of scored validation logits (rows left empty are skipped).
    fn metrics_of(&self, logits: Vec<Vec<f32>>, loss: f64) -> Result<Metrics> {
        let (logits, targets): (Vec<Vec<f32>>, Vec<Vec<f32>>) = logits
            .into_iter()
            .zip(self.valid.iter().map(|e| e.target.clone()))
            .filter(|(l, _)| !l.is_empty())
            .unzip();
        let (mut m, _) = classification_metrics(self.problem, &self.labels, &logits, &targets)?;
        m.insert("loss".into(), loss);
        Ok(m)
    }
}

/// Named metrics, plus the per-class report for single-label problems.
pub type MetricsAndReport = (BTreeMap<String, f64>, Option<ClassificationReport<String>>);

/// Evaluation metrics from logits and targets of one problem type.
pub fn classification_metrics(
    problem: ProblemType,
    labels: &[String],
    logits: &[Vec<f32>],
    targets: &[Vec<f32>],
) -> Result<MetricsAndReport> {
    let mut m = BTreeMap::new();
    match problem {
        ProblemType::SingleLabel => {
            let pred: Vec<String> = logits.iter().map(|l| labels[argmax(l)].clone()).collect();
            let gold: Vec<String> = targets
                .iter()
                .map(|t| labels[t[0] as usize].clone())
                .collect();
            let report =
                ClassificationReport::compute(&gold, &pred, Some(labels), ZeroDivision::Zero)?;
            m.insert(
                "accuracy".into(),
                hone_metrics::classification::accuracy(&gold, &pred)?,
            );
            m.insert("f1".into(), report.macro_avg.f1);
            m.insert("precision".into(), report.macro_avg.precision);
            m.insert("recall".into(), report.macro_avg.recall);
            m.insert("f1_weighted".into(), report.weighted_avg.f1);
            Ok((m, Some(report)))
        }
        ProblemType::Regression => {
            let p: Vec<f64> = logits.iter().map(|l| l[0] as f64).collect();
            let t: Vec<f64> = targets.iter().map(|l| l[0] as f64).collect();
            let n = p.len().max(1) as f64;
            m.insert(
                "mse".into(),
                p.iter().zip(&t).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n,
            );
            m.insert("pearson".into(), pearson(&p, &t));
            Ok((m, None))
        }
        ProblemType::MultiLabel => {
            // Micro F1 over all (example, label) decisions at probability 0.5.
            let (mut tp, mut fp, mut fn_) = (0f64, 0f64, 0f64);
            let mut exact = 0usize;
            for (l, t) in logits.iter().zip(targets) {
                let mut all = true;
                for (x, y) in l.iter().zip(t) {
                    let p = *x > 0.0;
                    let g = *y > 0.5;
                    tp += (p && g) as u8 as f64;
                    fp += (p && !g) as u8 as f64;
                    fn_ += (!p && g) as u8 as f64;
                    all &= p == g;
                }
                exact += all as usize;
            }
            m.insert(
                "f1".into(),
                if tp == 0.0 {
                    0.0
                } else {
                    2.0 * tp / (2.0 * tp + fp + fn_)
                },
            );
            m.insert("accuracy".into(), exact as f64 / logits.len().max(1) as f64);
            Ok((m, None))
        }
    }
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt()).max(1e-12)
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

impl TrainingData for ClassificationData {
    type Net = dyn SequenceClassifier;

    fn num_train_examples(&self) -> usize {
        self.train.len()
    }

    fn train_example_length(&self, i: usize) -> usize {
        self.train[i].ids.len()
    }

    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor> {
        let rows: Vec<&Encoded> = indices.iter().map(|&i| &self.train[i]).collect();
        Ok(self.logits_and_loss(net, &rows)?.1)
    }

    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics> {
        // With a batch limit only the scored rows count.
        let (logits, loss) = self.predict_validation(net, max_batches)?;
        self.metrics_of(logits, loss)
    }

    /// Each rank scores every `world_size`-th row of the length-sorted order; the logits
    /// (zeros where a rank did not score) and loss sums are summed across ranks, so every
    /// rank computes the metrics of the whole set.
    fn evaluate_sharded(
        &self,
        net: &Self::Net,
        max_batches: Option<usize>,
        comm: &dyn Communicator,
    ) -> Result<Metrics> {
        if distributed::alone(comm) {
            return self.evaluate(net, max_batches);
        }
        let rows = self.scored_rows(max_batches);
        let mine = distributed::strided(&rows, comm.rank(), comm.world_size());
        let (logits, loss_sum) = self.predict_rows(net, &mine)?;
        // The logits' width, from the ranks that scored something (all, unless the set
        // is smaller than the ranks).
        let mut width = match logits.iter().find(|l| !l.is_empty()) {
            Some(l) => [l.len() as f64, 1.0],
            None => [0.0, 0.0],
        };
        distributed::all_reduce_f64(comm, &mut width)?;
        let k = (width[0] / width[1].max(1.0)) as usize;
        let n = self.valid.len();
        // Per row: its k logits and a 1 where scored; then the loss sum.
        let mut flat = vec![0f64; n * (k + 1) + 1];
        for (i, l) in logits.iter().enumerate() {
            if !l.is_empty() {
                for (j, &x) in l.iter().enumerate() {
                    flat[i * (k + 1) + j] = x as f64;
                }
                flat[i * (k + 1) + k] = 1.0;
            }
        }
        flat[n * (k + 1)] = loss_sum;
        distributed::all_reduce_f64(comm, &mut flat)?;
        let logits: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let row = &flat[i * (k + 1)..(i + 1) * (k + 1)];
                match row[k] > 0.0 {
                    true => row[..k].iter().map(|&x| x as f32).collect(),
                    false => Vec::new(),
                }
            })
            .collect();
        self.metrics_of(logits, flat[n * (k + 1)] / rows.len().max(1) as f64)
    }

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }
}

impl LogitsData for ClassificationData {
    fn train_logits_and_loss(
        &self,
        net: &dyn SequenceClassifier,
        indices: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let rows: Vec<&Encoded> = indices.iter().map(|&i| &self.train[i]).collect();
        self.logits_and_loss(net, &rows)
    }

    fn rows_of(&self, _i: usize) -> usize {
        1
    }

    fn train_fingerprint(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for e in &self.train {
            for id in e.ids.iter().chain(&e.type_ids) {
                h.update(&id.to_le_bytes());
            }
            for t in &e.target {
                h.update(&t.to_le_bytes());
            }
            h.update(b"|");
        }
        h.finalize()
    }

    fn label_names(&self) -> &[String] {
        &self.labels
    }

    fn scoring_batch_size(&self) -> usize {
        self.eval_batch_size
    }
}
