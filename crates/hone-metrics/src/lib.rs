//! Evaluation metrics for hone with the exact semantics of the reference Python libraries:
//!
//! * [`classification`]: scikit-learn's `classification_report`, `accuracy_score` and
//!   `confusion_matrix`;
//! * [`seqeval`]: seqeval's entity-level NER metrics (default conlleval-like mode and strict
//!   scheme-aware mode);
//! * [`bleu`]: sacrebleu's BLEU with its `13a`, `intl` and `none` tokenizers;
//! * [`chrf`]: sacrebleu's chrF and chrF++;
//! * [`perplexity`](mod@perplexity): perplexity from token negative log-likelihoods.
//!
//! The goal is numerical parity (to ~1e-12) with the Python references so that numbers printed
//! by hone can be compared directly with numbers produced by Hugging Face tooling.

pub mod bleu;
pub mod chrf;
pub mod classification;
mod format;
pub mod perplexity;
pub mod seqeval;

use serde::Serialize;

pub use bleu::{corpus_bleu, sentence_bleu, Bleu, BleuConfig, BleuScore, SmoothMethod, Tokenize};
pub use chrf::{corpus_chrf, Chrf, ChrfConfig, ChrfScore};
pub use classification::{accuracy, confusion_matrix, ClassificationReport};
pub use perplexity::{perplexity, NllAccumulator};
pub use seqeval::{get_entities, Mode, Scheme, SeqevalOptions, SeqevalReport};

/// Errors raised by the metric functions (the cases where the Python references raise).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// Gold and predicted inputs do not have the same shape.
    #[error("inconsistent lengths: {0}")]
    LengthMismatch(String),
    /// Nothing to evaluate (e.g. no labels at all).
    #[error("empty input: {0}")]
    Empty(String),
    /// A tag that the selected tagging scheme does not allow, or that cannot be parsed.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag { tag: String, reason: String },
    /// The argument combination is invalid (mirrors a Python `ValueError`).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, MetricsError>;

/// Behaviour when a precision/recall/F denominator is zero (scikit-learn's `zero_division`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ZeroDivision {
    /// scikit-learn's default `"warn"`: acts like `0` (no warning is emitted here).
    #[default]
    Warn,
    /// Use 0.0.
    Zero,
    /// Use 1.0.
    One,
    /// Use NaN (scikit-learn >= 1.3; NaN entries are then skipped when averaging).
    NaN,
}

impl ZeroDivision {
    /// The value scikit-learn substitutes for an ill-defined ratio.
    pub fn sklearn_value(self) -> f64 {
        match self {
            ZeroDivision::Warn | ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::NaN => f64::NAN,
        }
    }

    /// The value seqeval substitutes: seqeval tests `zero_division in ['warn', 0]` and
    /// otherwise uses 1.0, so NaN maps to 1.0 there (faithfully reproduced).
    pub fn seqeval_value(self) -> f64 {
        match self {
            ZeroDivision::Warn | ZeroDivision::Zero => 0.0,
            ZeroDivision::One | ZeroDivision::NaN => 1.0,
        }
    }
}

impl std::str::FromStr for ZeroDivision {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "warn" => Ok(ZeroDivision::Warn),
            "0" | "0.0" => Ok(ZeroDivision::Zero),
            "1" | "1.0" => Ok(ZeroDivision::One),
            "nan" => Ok(ZeroDivision::NaN),
            other => Err(MetricsError::InvalidArgument(format!(
                "zero_division must be one of warn, 0, 1, nan; got {other:?}"
            ))),
        }
    }
}

/// One row of a classification report: precision, recall, F1 and support.
///
/// Serialises with the same field names as scikit-learn / seqeval `output_dict`
/// (`"f1-score"`); `support` is an integer here, `to_json` methods emit it as a float
/// like scikit-learn does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// tp / (tp + fp).
    pub precision: f64,
    /// tp / (tp + fn).
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    #[serde(rename = "f1-score")]
    pub f1: f64,
    /// Number of true instances (for average rows: summed over the reported classes).
    pub support: usize,
}

impl ClassMetrics {
    /// A row from the `(precision, recall, f1)` triple the `prf` helpers return.
    pub(crate) fn from_prf((precision, recall, f1): (f64, f64, f64), support: usize) -> Self {
        ClassMetrics {
            precision,
            recall,
            f1,
            support,
        }
    }

    /// JSON object shaped like a Python `output_dict` row (support as float, NaN as null).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "precision": self.precision,
            "recall": self.recall,
            "f1-score": self.f1,
            "support": self.support as f64,
        })
    }
}

/// Corpus metrics take reference *streams* (`refs[k][i]` is the k-th reference of
/// hypothesis `i`, as in sacrebleu): at least one, each as long as the hypotheses.
pub(crate) fn check_reference_streams<R>(hyps: usize, refs: &[Vec<R>]) -> Result<()> {
    if refs.is_empty() {
        return Err(MetricsError::Empty("no reference stream given".into()));
    }
    for (k, stream) in refs.iter().enumerate() {
        if stream.len() != hyps {
            return Err(MetricsError::LengthMismatch(format!(
                "reference stream {k} has {} lines but there are {hyps} hypotheses",
                stream.len()
            )));
        }
    }
    Ok(())
}

/// Plain mean; NaN for an empty slice (what `np.average([])` returns).
pub(crate) fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// `np.average(xs, weights=ws)`; `None` when the weights sum to zero (numpy raises there and
/// each caller has its own fallback).
pub(crate) fn weighted_mean(xs: &[f64], ws: &[f64]) -> Option<f64> {
    let wsum: f64 = ws.iter().sum();
    if wsum == 0.0 {
        return None;
    }
    Some(xs.iter().zip(ws).map(|(x, w)| x * w).sum::<f64>() / wsum)
}
