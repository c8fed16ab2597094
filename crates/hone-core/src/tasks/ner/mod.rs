//! Named-entity recognition (token classification) on any token classifier: CoNLL sentences to
//! sub-word windows with word labels aligned to pieces, the loss, entity-level evaluation
//! (seqeval), and the merge of window predictions back to one tag per word.
//!
//! Sentences longer than the model's window are not cut: they are split into overlapping
//! windows (`stride` pieces of overlap, cut at word starts), and each word takes the
//! prediction of the window in which its first piece has the most context.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use candle_core::{Device, Tensor};
use hone_data::conll::{read_token_file, ConllOptions, Sentence, TagScheme};
use hone_data::train_validation_split;
use hone_metrics::seqeval::Mode;
use serde::{Deserialize, Serialize};

use super::distill::{DistillArgs, LogitsData};
use super::{FinetuneTask, ModelArgs, PeftArgs};
use crate::distributed::{self, Communicator};
use crate::model::{Head, Model, TokenClassifier};
use crate::ops::CrossEntropyOptions;
use crate::tasks::classification::argmax;
use crate::tokenization::{pad_ids, TextTokenizer};
use crate::training::{Metrics, TrainingArguments, TrainingData};

mod windows;

pub use windows::*;

/// Label of ignored pieces (PyTorch's `ignore_index`).
pub const IGNORE: i64 = -100;

/// The `[data]` section of an NER recipe (`run_ner.py` names where one exists).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NerDataArgs {
    /// CoNLL columns (token first, tag last unless `tag_column`) or JSON Lines.
    pub train_file: PathBuf,
    pub validation_file: Option<PathBuf>,
    /// Carve the validation set from the training file when no validation file is given.
    pub validation_split: f64,
    /// 0-based column of the tag (None: the last column).
    pub tag_column: Option<usize>,
    /// Tags of another form than the scheme's are errors naming file and line.
    pub tag_scheme: TagScheme,
    /// Window length in pieces, special tokens included.
    pub max_seq_length: usize,
    /// Pieces shared by consecutive windows of a sentence longer than `max_seq_length`.
    pub stride: usize,
    /// Label every piece of a word (`B-X` becomes `I-X` after the first piece), not only the
    /// first one.
    pub label_all_tokens: bool,
    pub max_train_samples: Option<usize>,
    pub max_eval_samples: Option<usize>,
    /// Add per-type metrics (`PER_f1`, ...) to the evaluation.
    pub return_entity_level_metrics: bool,
}

impl Default for NerDataArgs {
    fn default() -> Self {
        Self {
            train_file: PathBuf::new(),
            validation_file: None,
            validation_split: 0.1,
            tag_column: None,
            tag_scheme: TagScheme::IOB2,
            max_seq_length: 128,
            stride: 32,
            label_all_tokens: false,
            max_train_samples: None,
            max_eval_samples: None,
            return_entity_level_metrics: false,
        }
    }
}

/// A whole fine-tuning recipe for token classification.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NerRecipe {
    /// Always [`FinetuneTask::TokenClassification`]; written back so a saved recipe runs
    /// the same task again.
    pub task: FinetuneTask,
    pub model: ModelArgs,
    pub data: NerDataArgs,
    pub training: TrainingArguments,
    /// Train a LoRA adapter instead of the whole model.
    pub peft: Option<PeftArgs>,
    /// Distil a fine-tuned teacher into this model (`hone distill`).
    pub distill: Option<DistillArgs>,
}

impl Default for NerRecipe {
    fn default() -> Self {
        Self {
            task: FinetuneTask::TokenClassification,
            model: ModelArgs::default(),
            data: NerDataArgs::default(),
            training: TrainingArguments::default(),
            peft: None,
            distill: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The training task.
// ---------------------------------------------------------------------------------------------

/// One training window: input ids and piece labels.
#[derive(Debug, Clone)]
struct TrainRow {
    ids: Vec<u32>,
    labels: Vec<i64>,
}

/// An NER dataset with its loss, ready for the trainer.
pub struct NerData {
    pub tokenizer: TextTokenizer,
    pub labels: Vec<String>,
    train: Vec<TrainRow>,
    valid: WindowedSentences,
    valid_gold: Vec<Vec<String>>,
    valid_label_ids: Vec<Vec<usize>>,
    b_to_i: Option<Vec<usize>>,
    entity_level_metrics: bool,
    eval_batch_size: usize,
    device: Device,
}

/// 1-based line of token `i` of sentence `s` (CoNLL: one token per line; JSONL: the object).
fn token_line(path: &Path, s: &Sentence, i: usize) -> usize {
    let jsonl = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json"));
    if jsonl {
        s.line
    } else {
        s.line + i
    }
}

/// Read a token file with the recipe's column and scheme; errors name file and line.
pub fn read_sentences(
    path: &Path,
    tag_column: Option<usize>,
    scheme: TagScheme,
) -> Result<Vec<Sentence>> {
    let opts = ConllOptions {
        tag_column,
        scheme: Some(scheme),
        keep_other_columns: false,
    };
    let sentences = read_token_file(path, &opts)?;
    if sentences.is_empty() {
        bail!("{}: no sentences", path.display())
    }
    Ok(sentences)
}

/// Label ids of every sentence's tags; a tag outside `labels` is an error at its line.
fn label_ids(path: &Path, sentences: &[Sentence], labels: &[String]) -> Result<Vec<Vec<usize>>> {
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    sentences
        .iter()
        .map(|s| {
            if s.tags.len() != s.tokens.len() {
                bail!(
                    "{}:{}: {} tokens but {} tags",
                    path.display(),
                    s.line,
                    s.tokens.len(),
                    s.tags.len()
                )
            }
            s.tags
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    index.get(t.as_str()).copied().ok_or_else(|| {
                        anyhow!(
                            "{}:{}: tag {t:?} does not occur in the training data (labels: {})",
                            path.display(),
                            token_line(path, s, i),
                            labels.join(", ")
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// For every label, the label later pieces of a word take with `label_all_tokens`.
pub fn b_to_i_map(labels: &[String]) -> Vec<usize> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.strip_prefix("B-")
                .and_then(|ty| labels.iter().position(|x| *x == format!("I-{ty}")))
                .unwrap_or(i)
        })
        .collect()
}

impl NerData {
    /// Read and tokenize the data of a recipe, and load the model with a fresh head.
    /// Nothing is written anywhere; every data error names its file and line.
    pub fn prepare(
        recipe: &NerRecipe,
        device: &Device,
    ) -> Result<(Model<dyn TokenClassifier>, Self)> {
        let data = &recipe.data;
        let scheme = data.tag_scheme;
        let train = read_sentences(&data.train_file, data.tag_column, scheme)?;
        let (mut train, mut valid, valid_file) = match &data.validation_file {
            Some(v) => (
                train,
                read_sentences(v, data.tag_column, scheme)?,
                v.clone(),
            ),
            None => {
                let (t, v) =
                    train_validation_split(train, data.validation_split, recipe.training.seed)?;
                (t, v, data.train_file.clone())
            }
        };
        if let Some(n) = data.max_train_samples {
            train.truncate(n);
        }
        if let Some(n) = data.max_eval_samples {
            valid.truncate(n);
        }
        // Hugging Face's run_ner: the sorted set of training tags.
        let labels: Vec<String> = train
            .iter()
            .flat_map(|s| s.tags.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if labels.len() < 2 {
            bail!(
                "{}: found {} distinct tag(s); token classification needs at least 2",
                data.train_file.display(),
                labels.len()
            )
        }
        let train_ids = label_ids(&data.train_file, &train, &labels)?;
        let valid_ids = label_ids(&valid_file, &valid, &labels)?;

        let mut tokenizer = recipe.model.tokenizer()?;
        let head = Head::TokenClassification {
            id2label: labels.clone(),
        };
        let model = recipe.model.load(
            head,
            recipe.peft.as_ref(),
            &mut tokenizer,
            device,
            recipe.training.seed,
        )?;
        let window = data.max_seq_length.min(model.config.arch.max_positions());
        let words = |ss: &[Sentence]| ss.iter().map(|s| s.tokens.clone()).collect::<Vec<_>>();
        let train_ws = WindowedSentences::new(&tokenizer, &words(&train), window, data.stride)?;
        let valid_ws = WindowedSentences::new(&tokenizer, &words(&valid), window, data.stride)?;
        let b_to_i = data.label_all_tokens.then(|| b_to_i_map(&labels));
        let train_rows: Vec<TrainRow> = (0..train_ws.windows.len())
            .map(|w| TrainRow {
                ids: train_ws.input_ids(w),
                labels: train_ws.labels(w, &train_ids[train_ws.windows[w].0], b_to_i.as_deref()),
            })
            // A window inside one over-long word may hold no first piece: nothing to learn.
            .filter(|r| r.labels.iter().any(|&l| l != IGNORE))
            .collect();

        tracing::info!(
            "{} training sentences in {} windows, {} validation sentences, labels {:?}",
            train.len(),
            train_rows.len(),
            valid.len(),
            labels
        );
        let prepared = Self {
            tokenizer,
            labels,
            train: train_rows,
            valid: valid_ws,
            valid_gold: valid.into_iter().map(|s| s.tags).collect(),
            valid_label_ids: valid_ids,
            b_to_i,
            entity_level_metrics: data.return_entity_level_metrics,
            eval_batch_size: recipe.training.per_device_eval_batch_size,
            device: device.clone(),
        };
        Ok((model, prepared))
    }

    /// Predicted tags of the first `max_sentences` validation sentences (all: None), with
    /// the mean loss over their labelled pieces.
    pub fn predict_validation(
        &self,
        net: &dyn TokenClassifier,
        max_sentences: Option<usize>,
    ) -> Result<(Vec<Vec<String>>, f64)> {
        let n = self.scored_sentences(max_sentences);
        let which: Vec<usize> = (0..self.valid.windows.len())
            .filter(|&w| self.valid.windows[w].0 < n)
            .collect();
        let run = self.run_validation_windows(net, &which)?;
        Ok(self.decode(n, &run))
    }

    /// How many validation sentences an evaluation limited to `max_sentences` scores.
    fn scored_sentences(&self, max_sentences: Option<usize>) -> usize {
        max_sentences
            .unwrap_or(usize::MAX)
            .min(self.valid_gold.len())
    }

    fn run_validation_windows(
        &self,
        net: &dyn TokenClassifier,
        which: &[usize],
    ) -> Result<WindowRun> {
        let labels = |w: usize| {
            let s = self.valid.windows[w].0;
            self.valid
                .labels(w, &self.valid_label_ids[s], self.b_to_i.as_deref())
        };
        run_windows(
            net,
            &self.valid,
            which,
            Some(&labels),
            self.eval_batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )
    }

    /// The first `n` sentences' tags from their windows' logits, and the mean loss.
    fn decode(&self, n: usize, run: &WindowRun) -> (Vec<Vec<String>>, f64) {
        let merged = self.valid.merge(0..n, &run.logits);
        let preds = word_predictions(&merged);
        (
            tags_of(&preds, &self.labels),
            run.loss_sum / run.n_labelled.max(1) as f64,
        )
    }

    /// seqeval's entity-level scores of `pred` (the first sentences) and the loss.
    fn metrics_of(&self, pred: &[Vec<String>], loss: f64) -> Result<Metrics> {
        let gold = &self.valid_gold[..pred.len()];
        let (report, accuracy) = entity_report(gold, pred, Mode::Default)?;
        let mut m = Metrics::new();
        m.insert("f1".into(), report.micro_avg.f1);
        m.insert("precision".into(), report.micro_avg.precision);
        m.insert("recall".into(), report.micro_avg.recall);
        m.insert("accuracy".into(), accuracy);
        m.insert("loss".into(), loss);
        if self.entity_level_metrics {
            for (ty, r) in &report.per_type {
                m.insert(format!("{ty}_precision"), r.precision);
                m.insert(format!("{ty}_recall"), r.recall);
                m.insert(format!("{ty}_f1"), r.f1);
                m.insert(format!("{ty}_number"), r.support as f64);
            }
        }
        Ok(m)
    }
}

impl NerData {
    /// Logits `[B, T, C]` of training windows `indices` (padded to the longest), their loss
    /// and their padded labels `[B, T]` (-100 where unlabelled).
    fn forward_train(
        &self,
        net: &dyn TokenClassifier,
        indices: &[usize],
    ) -> Result<(Tensor, Tensor, Vec<Vec<i64>>)> {
        let rows: Vec<&TrainRow> = indices.iter().map(|&i| &self.train[i]).collect();
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let b = pad_ids(&ids, &[], self.tokenizer.pad_id(), &self.device)?;
        let t = b.input_ids.dim(1)?;
        let labels: Vec<Vec<i64>> = rows.iter().map(|r| r.labels.clone()).collect();
        let target = label_tensor(&labels, t, &self.device)?;
        let logits = net.forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
        let loss = net.loss(&logits, &target, &CrossEntropyOptions::default())?;
        Ok((logits, loss, labels))
    }
}

/// Distillation scores the labelled pieces: the rows the task's loss averages over.
impl LogitsData for NerData {
    fn train_logits_and_loss(
        &self,
        net: &dyn TokenClassifier,
        indices: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let (logits, loss, labels) = self.forward_train(net, indices)?;
        let (b, t, c) = logits.dims3()?;
        // Flat positions of the labelled pieces, window after window.
        let at: Vec<u32> = labels
            .iter()
            .enumerate()
            .flat_map(|(w, l)| {
                l.iter()
                    .enumerate()
                    .filter(|(_, &x)| x != IGNORE)
                    .map(move |(j, _)| (w * t + j) as u32)
            })
            .collect();
        let at = Tensor::new(at, logits.device())?;
        Ok((logits.reshape((b * t, c))?.index_select(&at, 0)?, loss))
    }

    fn rows_of(&self, i: usize) -> usize {
        self.train[i]
            .labels
            .iter()
            .filter(|&&l| l != IGNORE)
            .count()
    }

    fn train_fingerprint(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for r in &self.train {
            for id in &r.ids {
                h.update(&id.to_le_bytes());
            }
            for l in &r.labels {
                h.update(&l.to_le_bytes());
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

impl TrainingData for NerData {
    type Net = dyn TokenClassifier;

    fn num_train_examples(&self) -> usize {
        self.train.len()
    }

    fn train_example_length(&self, i: usize) -> usize {
        self.train[i].ids.len()
    }

    /// The loss is a mean over labelled pieces.
    fn loss_weight(&self, indices: &[usize]) -> f64 {
        indices
            .iter()
            .map(|&i| {
                self.train[i]
                    .labels
                    .iter()
                    .filter(|&&l| l != IGNORE)
                    .count()
            })
            .sum::<usize>() as f64
    }

    fn training_loss(&self, net: &Self::Net, indices: &[usize]) -> Result<Tensor> {
        Ok(self.forward_train(net, indices)?.1)
    }

    fn evaluate(&self, net: &Self::Net, max_batches: Option<usize>) -> Result<Metrics> {
        // A batch limit counts sentences, so every scored sentence is scored whole.
        let max_sentences = max_batches.map(|m| m * self.eval_batch_size.max(1));
        let (pred, loss) = self.predict_validation(net, max_sentences)?;
        self.metrics_of(&pred, loss)
    }

    /// Each rank runs the windows of every `world_size`-th sentence; the windows' logits
    /// (zeros where a rank did not run them) and the loss sums are summed across ranks, so
    /// every rank decodes and scores the whole set.
    fn evaluate_sharded(
        &self,
        net: &Self::Net,
        max_batches: Option<usize>,
        comm: &dyn Communicator,
    ) -> Result<Metrics> {
        if distributed::alone(comm) {
            return self.evaluate(net, max_batches);
        }
        let n = self.scored_sentences(max_batches.map(|m| m * self.eval_batch_size.max(1)));
        let windows = &self.valid.windows;
        let mine: Vec<usize> = (0..windows.len())
            .filter(|&w| windows[w].0 < n && windows[w].0 % comm.world_size() == comm.rank())
            .collect();
        let run = self.run_validation_windows(net, &mine)?;
        // Window w's rows start at offsets[w] (rows: its input ids; none past sentence n).
        let c = self.labels.len();
        let mut offsets = vec![0usize; windows.len() + 1];
        for w in 0..windows.len() {
            let rows = if windows[w].0 < n {
                self.valid.window_len(w)
            } else {
                0
            };
            offsets[w + 1] = offsets[w] + rows;
        }
        let total = offsets[windows.len()] * c;
        let mut flat = vec![0f64; total + 2];
        for &w in &mine {
            for (r, row) in run.logits[w].iter().enumerate() {
                for (j, &x) in row.iter().enumerate() {
                    flat[(offsets[w] + r) * c + j] = x as f64;
                }
            }
        }
        (flat[total], flat[total + 1]) = (run.loss_sum, run.n_labelled as f64);
        distributed::all_reduce_f64(comm, &mut flat)?;
        let logits: Vec<Vec<Vec<f32>>> = (0..windows.len())
            .map(|w| {
                (offsets[w]..offsets[w + 1])
                    .map(|r| flat[r * c..(r + 1) * c].iter().map(|&x| x as f32).collect())
                    .collect()
            })
            .collect();
        let all = WindowRun {
            logits,
            loss_sum: flat[total],
            n_labelled: flat[total + 1].round() as usize,
        };
        let (pred, loss) = self.decode(n, &all);
        self.metrics_of(&pred, loss)
    }

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }
}
