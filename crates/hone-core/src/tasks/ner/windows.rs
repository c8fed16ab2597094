//! Alignment of words to sub-word pieces, overlapping windows over long sentences, and the
//! merge of window predictions back to one tag per word.

use anyhow::{anyhow, bail, Result};
use candle_core::{DType, Device, Tensor};
use hone_metrics::seqeval::{accuracy_score, Mode, SeqevalReport};

use super::*;
use crate::model::TokenClassifier;
use crate::tokenization::{pad_ids, TextTokenizer};

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

    /// The length of [`Self::input_ids`] of window `w`, without building them.
    pub fn window_len(&self, w: usize) -> usize {
        let (_, a, b) = self.windows[w];
        self.prefix.len() + (b - a) + self.suffix.len()
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
    head: &dyn TokenClassifier,
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
pub(super) fn label_tensor(rows: &[Vec<i64>], t: usize, device: &Device) -> Result<Tensor> {
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
