//! Corpus and sentence chrF / chrF++ with sacrebleu (2.x) semantics (Popović 2015, 2017):
//! an F-beta score over character n-grams (orders 1..=6, spaces removed), plus word
//! n-grams for chrF++, with the statistics summed over the corpus before the score.

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;

use crate::bleu::is_py_space;

pub use crate::{MetricsError, Result};

/// `string.punctuation`, which chrF++ splits off the ends of words.
fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Settings of sacrebleu's `CHRF` class; the default is chrF2 (`chrF` in sacrebleu).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChrfConfig {
    /// Character n-gram orders 1..=char_order.
    pub char_order: usize,
    /// Word n-gram orders 1..=word_order (2 makes chrF++).
    pub word_order: usize,
    /// Recall weighs `beta` times as much as precision.
    pub beta: u32,
    /// Compare lowercased text.
    pub lowercase: bool,
    /// Keep spaces inside character n-grams.
    pub whitespace: bool,
    /// chrF++.py's epsilon smoothing: average the per-order F scores, instead of the
    /// precisions and recalls of the orders both sides have (sacrebleu's default).
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

/// A chrF result: `score` in [0, 100] and sacrebleu's name for the variant (`chrF2`, `chrF2++`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChrfScore {
    /// The name sacrebleu prints, `chrF{beta}` followed by one `+` per word order.
    pub name: String,
    /// The score in [0, 100].
    pub score: f64,
}

impl std::fmt::Display for ChrfScore {
    /// sacrebleu's format, e.g. `chrF2 = 55.07`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {:.2}", self.name, self.score)
    }
}

/// A configured chrF metric (sacrebleu's `CHRF`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Chrf {
    /// The settings.
    pub config: ChrfConfig,
}

/// n-gram counts of orders 1..=max_order, one map per order.
fn ngram_counts<T: Eq + Hash + Clone>(items: &[T], max_order: usize) -> Vec<HashMap<Vec<T>, u64>> {
    (1..=max_order)
        .map(|n| {
            let mut counts = HashMap::new();
            if n <= items.len() {
                for w in items.windows(n) {
                    *counts.entry(w.to_vec()).or_insert(0) += 1;
                }
            }
            counts
        })
        .collect()
}

/// `[hyp, ref, match]` counts of one order; hypothesis n-grams do not count where the
/// reference has none of that order (sacrebleu's `_get_match_statistics`).
fn match_stats<K: Eq + Hash>(hyp: &HashMap<K, u64>, reference: &HashMap<K, u64>) -> [u64; 3] {
    let (mut hyp_count, mut matched) = (0, 0);
    for (gram, &c) in hyp {
        hyp_count += c;
        if let Some(&rc) = reference.get(gram) {
            matched += c.min(rc);
        }
    }
    let ref_count = reference.values().sum();
    [
        if reference.is_empty() { 0 } else { hyp_count },
        ref_count,
        matched,
    ]
}

/// The n-grams of one segment: characters per order, then words per order.
struct SegmentNgrams {
    chars: Vec<HashMap<Vec<char>, u64>>,
    words: Vec<HashMap<Vec<String>, u64>>,
}

impl Chrf {
    /// A metric with the given settings.
    pub fn new(config: ChrfConfig) -> Self {
        Chrf { config }
    }

    /// sacrebleu's signature of these settings with `nrefs` references, e.g.
    /// `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:hone-0.1.0`.
    pub fn signature(&self, nrefs: usize) -> String {
        let c = &self.config;
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:hone-{}",
            if c.lowercase { "lc" } else { "mixed" },
            if c.eps_smoothing { "no" } else { "yes" },
            c.char_order,
            c.word_order,
            if c.whitespace { "yes" } else { "no" },
            env!("CARGO_PKG_VERSION")
        )
    }

    fn name(&self) -> String {
        format!(
            "chrF{}{}",
            self.config.beta,
            "+".repeat(self.config.word_order)
        )
    }

    /// chrF++'s word split: on whitespace, with one punctuation mark split off the end of a
    /// word, or else off its start (`(hi)` gives `(hi` and `)`, as in sacrebleu).
    fn words(sent: &str) -> Vec<String> {
        let mut words = Vec::new();
        for w in sent.split(is_py_space).filter(|w| !w.is_empty()) {
            let chars: Vec<char> = w.chars().collect();
            let (first, last) = (chars[0], chars[chars.len() - 1]);
            if chars.len() > 1 && is_punct(last) {
                words.push(chars[..chars.len() - 1].iter().collect());
                words.push(last.to_string());
            } else if chars.len() > 1 && is_punct(first) {
                words.push(first.to_string());
                words.push(chars[1..].iter().collect());
            } else {
                words.push(w.to_string());
            }
        }
        words
    }

    fn ngrams(&self, sent: &str) -> SegmentNgrams {
        let c = &self.config;
        let sent = if c.lowercase {
            sent.to_lowercase()
        } else {
            sent.to_string()
        };
        let chars: Vec<char> = if c.whitespace {
            sent.chars().collect()
        } else {
            sent.chars().filter(|&ch| !is_py_space(ch)).collect()
        };
        SegmentNgrams {
            chars: ngram_counts(&chars, c.char_order),
            words: if c.word_order > 0 {
                ngram_counts(&Self::words(&sent), c.word_order)
            } else {
                Vec::new()
            },
        }
    }

    /// `[hyp, ref, match]` per order (characters, then words), flattened.
    fn stats(hyp: &SegmentNgrams, reference: &SegmentNgrams) -> Vec<u64> {
        let chars = hyp
            .chars
            .iter()
            .zip(&reference.chars)
            .map(|(h, r)| match_stats(h, r));
        let words = hyp
            .words
            .iter()
            .zip(&reference.words)
            .map(|(h, r)| match_stats(h, r));
        chars.chain(words).flatten().collect()
    }

    /// `CHRF._compute_f_score`: the score from (corpus-summed) statistics.
    pub fn compute_from_stats(&self, stats: &[u64]) -> f64 {
        const EPS: f64 = 1e-16;
        let factor = (self.config.beta * self.config.beta) as f64;
        let orders = stats.len() / 3;
        let (mut f_sum, mut prec_sum, mut rec_sum, mut effective_order) = (0.0, 0.0, 0.0, 0usize);
        for s in stats.chunks_exact(3) {
            let (n_hyp, n_ref, n_match) = (s[0], s[1], s[2]);
            let prec = if n_hyp > 0 {
                n_match as f64 / n_hyp as f64
            } else {
                EPS
            };
            let rec = if n_ref > 0 {
                n_match as f64 / n_ref as f64
            } else {
                EPS
            };
            let denom = factor * prec + rec;
            f_sum += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                EPS
            };
            if n_hyp > 0 && n_ref > 0 {
                prec_sum += prec;
                rec_sum += rec;
                effective_order += 1;
            }
        }
        if self.config.eps_smoothing {
            return 100.0 * f_sum / orders as f64;
        }
        if effective_order == 0 {
            return 0.0;
        }
        let (prec, rec) = (
            prec_sum / effective_order as f64,
            rec_sum / effective_order as f64,
        );
        if prec + rec > 0.0 {
            100.0 * (1.0 + factor) * prec * rec / (factor * prec + rec)
        } else {
            0.0
        }
    }

    /// `CHRF.corpus_score(hyps, refs)`. `refs` are reference streams, as in sacrebleu:
    /// `refs[k][i]` is the k-th reference of hypothesis `i`. With several references a
    /// segment counts the statistics of the one it scores best against.
    pub fn corpus_score<H: AsRef<str>, R: AsRef<str>>(
        &self,
        hyps: &[H],
        refs: &[Vec<R>],
    ) -> Result<ChrfScore> {
        crate::check_reference_streams(hyps.len(), refs)?;
        let orders = self.config.char_order + self.config.word_order;
        let mut sums = vec![0u64; 3 * orders];
        for (i, hyp) in hyps.iter().enumerate() {
            let hyp = self.ngrams(hyp.as_ref());
            let mut best: Option<(f64, Vec<u64>)> = None;
            for stream in refs {
                let stats = Self::stats(&hyp, &self.ngrams(stream[i].as_ref()));
                let f = self.compute_from_stats(&stats);
                if best.as_ref().is_none_or(|(bf, _)| f > *bf) {
                    best = Some((f, stats));
                }
            }
            for (acc, v) in sums
                .iter_mut()
                .zip(best.map(|(_, s)| s).unwrap_or_default())
            {
                *acc += v;
            }
        }
        Ok(ChrfScore {
            name: self.name(),
            score: self.compute_from_stats(&sums),
        })
    }

    /// `CHRF.sentence_score(hyp, refs)`: one hypothesis against its references.
    pub fn sentence_score<R: AsRef<str>>(&self, hyp: &str, refs: &[R]) -> Result<ChrfScore> {
        let streams: Vec<Vec<&str>> = refs.iter().map(|r| vec![r.as_ref()]).collect();
        self.corpus_score(&[hyp], &streams)
    }
}

/// `sacrebleu.corpus_chrf(hyps, refs)` with its defaults (chrF2, character orders 1..=6).
pub fn corpus_chrf<H: AsRef<str>, R: AsRef<str>>(hyps: &[H], refs: &[Vec<R>]) -> Result<ChrfScore> {
    Chrf::default().corpus_score(hyps, refs)
}
