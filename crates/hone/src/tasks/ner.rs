//! Named-entity recognition (token classification) on a BERT encoder: CoNLL sentences to
//! sub-word windows with word labels aligned to pieces, the loss, entity-level evaluation
//! (seqeval), and the merge of window predictions back to one tag per word.
//!
//! Sentences longer than the model's window are not cut: they are split into overlapping
//! windows (`stride` pieces of overlap, cut at word starts), and each word takes the
//! prediction of the window in which its first piece has the most context.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use hone_data::conll::{read_token_file, ConllOptions, Sentence, TagScheme};
use hone_metrics::seqeval::{accuracy_score, Mode, SeqevalReport};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::model::loading::{ModelDir, Task};
use crate::model::{BertForTokenClassification, LoadedModel, TaskModel};
use crate::ops::CrossEntropyOptions;
use crate::tasks::classification::{argmax, ModelArgs};
use crate::tokenization::{pad_ids, TextTokenizer};
use crate::training::{TrainingArguments, TrainingTask};

/// The recipe `task` value that selects this task.
pub const TASK_NAME: &str = "token-classification";

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
    /// IOB1, IOB2 or IOBES: tags of another form are errors naming file and line.
    pub tag_scheme: String,
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
            tag_scheme: "IOB2".into(),
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
    /// Always [`TASK_NAME`]; written back so a saved recipe runs the same task again.
    pub task: String,
    pub model: ModelArgs,
    pub data: NerDataArgs,
    pub training: TrainingArguments,
}

impl Default for NerRecipe {
    fn default() -> Self {
        Self {
            task: TASK_NAME.into(),
            model: ModelArgs::default(),
            data: NerDataArgs::default(),
            training: TrainingArguments::default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Alignment of words to pieces, and windows.
// ---------------------------------------------------------------------------------------------

/// A sentence's words as sub-word pieces, without special tokens.
#[derive(Debug, Clone, Default)]
pub struct WordPieces {
    pub ids: Vec<u32>,
    /// The word of every piece.
    pub word_of_piece: Vec<usize>,
    /// Per word, its first piece; `None` for a word the tokenizer turns into nothing.
    pub first_piece: Vec<Option<usize>>,
}

impl WordPieces {
    fn is_word_start(&self, p: usize) -> bool {
        p == 0 || self.word_of_piece[p] != self.word_of_piece[p - 1]
    }
}

/// Encode pre-tokenized `words` (each word goes through the tokenizer on its own, so piece
/// boundaries never cross words).
pub fn encode_words<S: AsRef<str>>(tok: &TextTokenizer, words: &[S]) -> Result<WordPieces> {
    let refs: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    let enc = tok
        .inner()
        .encode(refs.clone(), false)
        .map_err(|e| anyhow!("cannot tokenize {refs:?}: {e}"))?;
    let mut out = WordPieces {
        first_piece: vec![None; words.len()],
        ..Default::default()
    };
    for (&id, w) in enc.get_ids().iter().zip(enc.get_word_ids()) {
        // Without special tokens every piece belongs to a word.
        let Some(w) = *w else { continue };
        let w = w as usize;
        let p = out.ids.len();
        out.first_piece[w].get_or_insert(p);
        out.ids.push(id);
        out.word_of_piece.push(w);
    }
    Ok(out)
}

/// The special tokens the tokenizer puts before and after a single sequence.
pub fn special_tokens(tok: &TextTokenizer) -> Result<(Vec<u32>, Vec<u32>)> {
    let enc = tok
        .inner()
        .encode(vec!["a"], true)
        .map_err(|e| anyhow!("cannot tokenize a probe word: {e}"))?;
    let wids = enc.get_word_ids();
    let first = wids
        .iter()
        .position(Option::is_some)
        .ok_or_else(|| anyhow!("the tokenizer turns the word \"a\" into nothing"))?;
    let last = wids.iter().rposition(Option::is_some).unwrap_or(first);
    let ids = enc.get_ids();
    Ok((ids[..first].to_vec(), ids[last + 1..].to_vec()))
}

/// Piece ranges `[start, end)` covering all of a sentence's pieces, each at most `budget`
/// long. A window ends at a word start when it can (a word longer than a whole window is
/// cut), and the next one starts about `stride` pieces before the previous end, also at a
/// word start, so words near a cut are seen with context in a neighbouring window.
pub fn windows(pieces: &WordPieces, budget: usize, stride: usize) -> Vec<(usize, usize)> {
    let n = pieces.ids.len();
    let budget = budget.max(1);
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let mut s = 0;
    loop {
        let mut e = (s + budget).min(n);
        if e < n {
            let mut b = e;
            while b > s && !pieces.is_word_start(b) {
                b -= 1;
            }
            if b > s {
                e = b;
            }
        }
        out.push((s, e));
        if e == n {
            return out;
        }
        // Next start: `stride` pieces of overlap, moved back to a word start; forward to
        // one when the overlap holds none; mid-word only after a cut word.
        let target = e.saturating_sub(stride).max(s + 1);
        let mut ns = target;
        while ns > s && !pieces.is_word_start(ns) {
            ns -= 1;
        }
        if ns <= s {
            ns = (target..=e).find(|&p| pieces.is_word_start(p)).unwrap_or(e);
        }
        s = ns;
    }
}

/// Among `windows`, the one in which `piece` is farthest from the nearer window edge (the
/// most context on both sides); ties go to the earlier window.
pub fn best_window(piece: usize, windows: &[(usize, usize)]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, &(s, e)) in windows.iter().enumerate() {
        if piece < s || piece >= e {
            continue;
        }
        let margin = (piece - s).min(e - 1 - piece);
        if best.is_none_or(|(_, m)| margin > m) {
            best = Some((i, margin));
        }
    }
    best.map(|(i, _)| i)
}

/// Piece labels of window `[start, end)` (no special tokens): the word's label on its first
/// piece and [`IGNORE`] elsewhere, or, with `all_pieces = Some(b_to_i)`, a label on every
/// piece, later pieces taking `b_to_i[label]` (`B-X` -> `I-X`).
pub fn window_labels(
    pieces: &WordPieces,
    word_labels: &[usize],
    (start, end): (usize, usize),
    all_pieces: Option<&[usize]>,
) -> Vec<i64> {
    (start..end)
        .map(|p| {
            let w = pieces.word_of_piece[p];
            let label = word_labels[w];
            if pieces.first_piece[w] == Some(p) {
                label as i64
            } else {
                match all_pieces {
                    Some(b_to_i) => b_to_i[label] as i64,
                    None => IGNORE,
                }
            }
        })
        .collect()
}

/// Sentences cut into model windows.
#[derive(Debug, Clone)]
pub struct WindowedSentences {
    pub pieces: Vec<WordPieces>,
    /// Per window: sentence, first piece, one past the last piece.
    pub windows: Vec<(usize, usize, usize)>,
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

impl WindowedSentences {
    /// Tokenize `sentences` (lists of words) and cut them into windows of at most
    /// `max_length` ids, special tokens included, overlapping by `stride` pieces.
    pub fn new<S: AsRef<str> + Sync>(
        tok: &TextTokenizer,
        sentences: &[Vec<S>],
        max_length: usize,
        stride: usize,
    ) -> Result<Self> {
        use rayon::prelude::*;
        let (prefix, suffix) = special_tokens(tok)?;
        let specials = prefix.len() + suffix.len();
        if max_length <= specials {
            bail!("max_seq_length {max_length} leaves no room beside {specials} special tokens")
        }
        let budget = max_length - specials;
        if stride >= budget {
            bail!(
                "stride {stride} must be smaller than max_seq_length minus special tokens ({budget})"
            )
        }
        let pieces: Vec<WordPieces> = sentences
            .par_iter()
            .map(|s| encode_words(tok, s))
            .collect::<Result<_>>()?;
        let windows = pieces
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                windows(p, budget, stride)
                    .into_iter()
                    .map(move |(s, e)| (i, s, e))
            })
            .collect();
        Ok(Self {
            pieces,
            windows,
            prefix,
            suffix,
        })
    }

    /// Model input ids of window `w`: special tokens around its pieces.
    pub fn input_ids(&self, w: usize) -> Vec<u32> {
        let (s, a, b) = self.windows[w];
        let mut ids = self.prefix.clone();
        ids.extend_from_slice(&self.pieces[s].ids[a..b]);
        ids.extend_from_slice(&self.suffix);
        ids
    }

    /// Labels of window `w` aligned with [`Self::input_ids`] (special tokens ignored).
    pub fn labels(
        &self,
        w: usize,
        word_labels: &[usize],
        all_pieces: Option<&[usize]>,
    ) -> Vec<i64> {
        let (s, a, b) = self.windows[w];
        let mut out = vec![IGNORE; self.prefix.len()];
        out.extend(window_labels(
            &self.pieces[s],
            word_labels,
            (a, b),
            all_pieces,
        ));
        out.extend(std::iter::repeat_n(IGNORE, self.suffix.len()));
        out
    }

    /// Merge per-window logits (`window_logits[w]`: one row per input id of window `w`; an
    /// empty list for a window that was not run) into per-word logits of the sentences in
    /// `sentences`: each word takes its first piece's row from the window where that piece
    /// has the most context. `None` for a word without pieces.
    pub fn merge<'a>(
        &self,
        sentences: std::ops::Range<usize>,
        window_logits: &'a [Vec<Vec<f32>>],
    ) -> Vec<Vec<Option<&'a [f32]>>> {
        // Windows of a sentence are contiguous; index them once.
        let mut by_sentence: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (w, &(s, _, _)) in self.windows.iter().enumerate() {
            if sentences.contains(&s) {
                by_sentence.entry(s).or_default().push(w);
            }
        }
        sentences
            .map(|s| {
                let ws = by_sentence.get(&s).map(Vec::as_slice).unwrap_or(&[]);
                let ranges: Vec<(usize, usize)> = ws
                    .iter()
                    .map(|&w| (self.windows[w].1, self.windows[w].2))
                    .collect();
                self.pieces[s]
                    .first_piece
                    .iter()
                    .map(|fp| {
                        let p = (*fp)?;
                        let k = best_window(p, &ranges)?;
                        let row = self.prefix.len() + p - ranges[k].0;
                        window_logits[ws[k]].get(row).map(Vec::as_slice)
                    })
                    .collect()
            })
            .collect()
    }
}

/// What [`run_windows`] computes.
#[derive(Debug, Clone, Default)]
pub struct WindowRun {
    /// Per window, one row of logits per input id (empty for windows not run).
    pub logits: Vec<Vec<Vec<f32>>>,
    /// Loss summed over labelled pieces (0 without labels).
    pub loss_sum: f64,
    /// Number of labelled pieces.
    pub n_labelled: usize,
}

/// Run the head over windows `which` in length-sorted batches: logits per window and, with
/// labels, the summed loss over the labelled pieces.
pub fn run_windows(
    head: &BertForTokenClassification,
    ws: &WindowedSentences,
    which: &[usize],
    labels: Option<&dyn Fn(usize) -> Vec<i64>>,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<WindowRun> {
    let mut ids: Vec<Vec<u32>> = vec![Vec::new(); ws.windows.len()];
    for &w in which {
        ids[w] = ws.input_ids(w);
    }
    let mut order = which.to_vec();
    order.sort_by_key(|&w| ids[w].len());
    let mut out = vec![Vec::new(); ws.windows.len()];
    let (mut loss_sum, mut n_labelled) = (0f64, 0usize);
    for chunk in order.chunks(batch_size.max(1)) {
        let rows: Vec<&[u32]> = chunk.iter().map(|&w| ids[w].as_slice()).collect();
        let b = pad_ids(&rows, &[], pad_id, device)?;
        let logits = head.forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
        if let Some(labels) = labels {
            let label_rows: Vec<Vec<i64>> = chunk.iter().map(|&w| labels(w)).collect();
            let n: usize = label_rows
                .iter()
                .flatten()
                .filter(|&&l| l != IGNORE)
                .count();
            if n > 0 {
                let t = logits.dim(1)?;
                let target = label_tensor(&label_rows, t, device)?;
                let loss = head.loss(&logits, &target, &CrossEntropyOptions::default())?;
                loss_sum += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 * n as f64;
                n_labelled += n;
            }
        }
        for (&w, rows) in chunk
            .iter()
            .zip(logits.to_dtype(DType::F32)?.to_vec3::<f32>()?)
        {
            out[w] = rows.into_iter().take(ids[w].len()).collect();
        }
    }
    Ok(WindowRun {
        logits: out,
        loss_sum,
        n_labelled,
    })
}

/// Labels padded with [`IGNORE`] to `[B, t]`.
fn label_tensor(rows: &[Vec<i64>], t: usize, device: &Device) -> Result<Tensor> {
    let mut flat = vec![IGNORE; rows.len() * t];
    for (i, r) in rows.iter().enumerate() {
        flat[i * t..i * t + r.len()].copy_from_slice(r);
    }
    Ok(Tensor::from_vec(flat, (rows.len(), t), device)?)
}

/// Softmax of one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// One word's prediction: label index and its probability at the word's first piece.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WordPrediction {
    pub label: usize,
    pub score: f32,
}

/// Per-word predictions from merged logits (`None` stays `None`: a word without pieces).
pub fn word_predictions(merged: &[Vec<Option<&[f32]>>]) -> Vec<Vec<Option<WordPrediction>>> {
    merged
        .iter()
        .map(|s| {
            s.iter()
                .map(|row| {
                    row.map(|r| {
                        let probs = softmax(r);
                        let label = argmax(&probs);
                        WordPrediction {
                            label,
                            score: probs[label],
                        }
                    })
                })
                .collect()
        })
        .collect()
}

/// Tags from predictions; a word without pieces is tagged `O`.
pub fn tags_of(preds: &[Vec<Option<WordPrediction>>], labels: &[String]) -> Vec<Vec<String>> {
    preds
        .iter()
        .map(|s| {
            s.iter()
                .map(|p| p.map_or_else(|| "O".to_string(), |p| labels[p.label].clone()))
                .collect()
        })
        .collect()
}

/// Entity-level report of `pred` against `gold` plus token accuracy.
pub fn entity_report<S: AsRef<str>>(
    gold: &[Vec<S>],
    pred: &[Vec<S>],
    mode: Mode,
) -> Result<(SeqevalReport, f64)> {
    let report = SeqevalReport::compute(gold, pred, mode)?;
    let accuracy = accuracy_score(gold, pred)?;
    Ok((report, accuracy))
}

/// seqeval's `output_dict` with the token accuracy added (as scikit-learn's report does).
pub fn report_json(report: &SeqevalReport, accuracy: f64) -> serde_json::Value {
    let mut j = report.to_json();
    j["accuracy"] = serde_json::json!(accuracy);
    j
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

/// An NER dataset ready for the trainer.
pub struct NerTask {
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

impl NerTask {
    /// Read and tokenize the data of a recipe, and load the model with a fresh head.
    /// Nothing is written anywhere; every data error names its file and line.
    pub fn prepare(recipe: &NerRecipe, device: &Device) -> Result<(LoadedModel, Self)> {
        if recipe.task != TASK_NAME {
            bail!(
                "recipe task is {:?}; this pipeline runs {TASK_NAME:?}",
                recipe.task
            )
        }
        let data = &recipe.data;
        let scheme: TagScheme = data.tag_scheme.parse()?;
        let mut train = read_sentences(&data.train_file, data.tag_column, scheme)?;
        let (valid, valid_file) = match &data.validation_file {
            Some(v) => (read_sentences(v, data.tag_column, scheme)?, v.clone()),
            None => {
                let mut order: Vec<usize> = (0..train.len()).collect();
                order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
                    recipe.training.seed,
                ));
                let n_valid = ((train.len() as f64) * data.validation_split).ceil() as usize;
                if n_valid == 0 || n_valid >= train.len() {
                    bail!(
                        "validation_split {} of {} sentences leaves no training or no validation data",
                        data.validation_split,
                        train.len()
                    )
                }
                let mut is_valid = vec![false; train.len()];
                for &i in &order[..n_valid] {
                    is_valid[i] = true;
                }
                let (v, t): (Vec<_>, Vec<_>) =
                    train.drain(..).enumerate().partition(|(i, _)| is_valid[*i]);
                train = t.into_iter().map(|(_, s)| s).collect();
                (
                    v.into_iter().map(|(_, s)| s).collect(),
                    data.train_file.clone(),
                )
            }
        };
        let mut valid = valid;
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

        let model_dir = ModelDir::open(&recipe.model.model_name_or_path)?;
        let tokenizer = TextTokenizer::from_dir(&model_dir.path)?;
        let words = |ss: &[Sentence]| ss.iter().map(|s| s.tokens.clone()).collect::<Vec<_>>();
        let train_ws =
            WindowedSentences::new(&tokenizer, &words(&train), data.max_seq_length, data.stride)?;
        let valid_ws =
            WindowedSentences::new(&tokenizer, &words(&valid), data.max_seq_length, data.stride)?;
        let b_to_i = data.label_all_tokens.then(|| b_to_i_map(&labels));
        let train_rows: Vec<TrainRow> = (0..train_ws.windows.len())
            .map(|w| TrainRow {
                ids: train_ws.input_ids(w),
                labels: train_ws.labels(w, &train_ids[train_ws.windows[w].0], b_to_i.as_deref()),
            })
            // A window inside one over-long word may hold no first piece: nothing to learn.
            .filter(|r| r.labels.iter().any(|&l| l != IGNORE))
            .collect();

        let mut config = model_dir.config.clone();
        if let (Some(p), crate::model::ArchConfig::Bert(c)) =
            (recipe.model.classifier_dropout, &mut config.arch)
        {
            c.classifier_dropout = Some(p);
        }
        let model_dir = ModelDir {
            config,
            ..model_dir
        };
        let model = LoadedModel::load_for_task(
            &model_dir,
            Task::TokenClassification {
                id2label: labels.clone(),
            },
            device,
            recipe.training.seed,
        )?;
        tracing::info!(
            "{} training sentences in {} windows, {} validation sentences, labels {:?}",
            train.len(),
            train_rows.len(),
            valid.len(),
            labels
        );
        let task = Self {
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
        Ok((model, task))
    }

    fn head<'m>(&self, model: &'m LoadedModel) -> Result<&'m BertForTokenClassification> {
        match &model.model {
            TaskModel::TokenClassification(m) => Ok(m),
            _ => bail!("expected a token-classification model"),
        }
    }

    /// Predicted tags of the first `max_sentences` validation sentences (all: None), with
    /// the mean loss over their labelled pieces.
    pub fn predict_validation(
        &self,
        model: &LoadedModel,
        max_sentences: Option<usize>,
    ) -> Result<(Vec<Vec<String>>, f64)> {
        let head = self.head(model)?;
        let n = max_sentences
            .unwrap_or(usize::MAX)
            .min(self.valid_gold.len());
        let which: Vec<usize> = (0..self.valid.windows.len())
            .filter(|&w| self.valid.windows[w].0 < n)
            .collect();
        let labels = |w: usize| {
            let s = self.valid.windows[w].0;
            self.valid
                .labels(w, &self.valid_label_ids[s], self.b_to_i.as_deref())
        };
        let run = run_windows(
            head,
            &self.valid,
            &which,
            Some(&labels),
            self.eval_batch_size,
            self.tokenizer.pad_id(),
            &self.device,
        )?;
        let merged = self.valid.merge(0..n, &run.logits);
        let preds = word_predictions(&merged);
        Ok((
            tags_of(&preds, &self.labels),
            run.loss_sum / run.n_labelled.max(1) as f64,
        ))
    }
}

impl TrainingTask for NerTask {
    fn num_train_examples(&self) -> usize {
        self.train.len()
    }

    fn train_example_length(&self, i: usize) -> usize {
        self.train[i].ids.len()
    }

    fn training_loss(&self, model: &LoadedModel, indices: &[usize]) -> Result<Tensor> {
        let head = self.head(model)?;
        let rows: Vec<&TrainRow> = indices.iter().map(|&i| &self.train[i]).collect();
        let ids: Vec<&[u32]> = rows.iter().map(|r| r.ids.as_slice()).collect();
        let b = pad_ids(&ids, &[], self.tokenizer.pad_id(), &self.device)?;
        let t = b.input_ids.dim(1)?;
        let labels: Vec<Vec<i64>> = rows.iter().map(|r| r.labels.clone()).collect();
        let target = label_tensor(&labels, t, &self.device)?;
        let logits = head.forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)?;
        Ok(head.loss(&logits, &target, &CrossEntropyOptions::default())?)
    }

    fn evaluate(
        &self,
        model: &LoadedModel,
        max_batches: Option<usize>,
    ) -> Result<BTreeMap<String, f64>> {
        // A batch limit counts sentences, so every scored sentence is scored whole.
        let max_sentences = max_batches.map(|m| m * self.eval_batch_size.max(1));
        let (pred, loss) = self.predict_validation(model, max_sentences)?;
        let gold = &self.valid_gold[..pred.len()];
        let (report, accuracy) = entity_report(gold, &pred, Mode::Default)?;
        let mut m = BTreeMap::new();
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

    fn save_extras(&self, dir: &Path) -> Result<()> {
        self.tokenizer.save(&dir.join("tokenizer.json"))
    }
}
