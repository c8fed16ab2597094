//! Entity-level sequence-labelling metrics with seqeval (1.2.2) semantics.
//!
//! Two ways of reading entities out of tag sequences:
//! * [`Mode::Default`]: `seqeval.metrics.sequence_labeling.get_entities`, the conlleval-like
//!   chunker that is lenient about ill-formed sequences (an `I-X` after `O` starts an entity);
//! * [`Mode::Strict`]: `seqeval.scheme.Tokens.entities` for an explicit [`Scheme`]; only tag
//!   sequences that fit the scheme form entities (an `I-X` after `O` is no entity in IOB2).
//!
//! Entity extraction lives in `chunks` (default mode) and `strict` (strict mode); this module
//! turns entities into reports.

mod chunks;
mod strict;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Display};

use serde::Serialize;

use crate::{format, mean, weighted_mean};
pub use crate::{ClassMetrics, MetricsError, Result, ZeroDivision};
pub use chunks::{get_entities, get_entities_nested, Chunk};
pub use strict::{strict_entities, Entity, Scheme};

/// How entities are extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// conlleval-compatible lenient chunking (`mode=None`).
    #[default]
    Default,
    /// `mode='strict'` with the given scheme.
    Strict(Scheme),
}

/// Options of [`SeqevalReport::compute_with`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SeqevalOptions {
    /// Entity extraction mode.
    pub mode: Mode,
    /// Tags are `PER-B` instead of `B-PER`.
    pub suffix: bool,
    /// Value for ill-defined ratios (seqeval maps anything but warn/0 to 1.0).
    pub zero_division: ZeroDivision,
}

fn check_consistent_length<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>]) -> Result<()> {
    let lt: Vec<usize> = gold.iter().map(|s| s.len()).collect();
    let lp: Vec<usize> = pred.iter().map(|s| s.len()).collect();
    if lt != lp {
        return Err(MetricsError::LengthMismatch(format!(
            "found input variables with inconsistent numbers of samples: {lt:?} vs {lp:?}"
        )));
    }
    Ok(())
}

/// Entity keys grouped by type: the span identity is the only thing compared.
type ByType = BTreeMap<String, HashSet<(usize, usize, usize)>>;

fn entities_by_type<S: AsRef<str>>(sentences: &[Vec<S>], opts: &SeqevalOptions) -> Result<ByType> {
    let mut map: ByType = BTreeMap::new();
    match opts.mode {
        Mode::Default => {
            for c in get_entities_nested(sentences, opts.suffix) {
                map.entry(c.tag).or_default().insert((0, c.start, c.end));
            }
        }
        Mode::Strict(scheme) => {
            for (sid, sent) in sentences.iter().enumerate() {
                for e in strict_entities(sent, scheme, opts.suffix, sid)? {
                    map.entry(e.tag)
                        .or_default()
                        .insert((e.sent_id, e.start, e.end));
                }
            }
        }
    }
    Ok(map)
}

/// Entity-level precision/recall/F1 per type plus micro/macro/weighted averages, exactly as
/// `seqeval.metrics.classification_report(..., output_dict=True)`.
#[derive(Debug, Clone, Serialize)]
pub struct SeqevalReport {
    /// Per entity type (sorted union of gold and predicted types).
    pub per_type: Vec<(String, ClassMetrics)>,
    /// Micro average (global entity counts).
    pub micro_avg: ClassMetrics,
    /// Unweighted mean over types.
    pub macro_avg: ClassMetrics,
    /// Mean over types weighted by gold support.
    pub weighted_avg: ClassMetrics,
}

/// seqeval's `_prf_divide` + F formula for one entry: F = 2PR/(P+R) with a zero denominator
/// replaced by 1 (so F is 0 there).
fn prf(tp: f64, pred: f64, truth: f64, zd: ZeroDivision) -> (f64, f64, f64) {
    let div = |n: f64, d: f64| if d == 0.0 { zd.seqeval_value() } else { n / d };
    let p = div(tp, pred);
    let r = div(tp, truth);
    let denom = p + r;
    let f = 2.0 * p * r / if denom == 0.0 { 1.0 } else { denom };
    (p, r, f)
}

impl SeqevalReport {
    /// Report with default options except the mode (zero_division "warn", prefix tags).
    pub fn compute<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<Self> {
        Self::compute_with(
            gold,
            pred,
            &SeqevalOptions {
                mode,
                ..Default::default()
            },
        )
    }

    /// Report with explicit options.
    pub fn compute_with<S: AsRef<str>>(
        gold: &[Vec<S>],
        pred: &[Vec<S>],
        opts: &SeqevalOptions,
    ) -> Result<Self> {
        check_consistent_length(gold, pred)?;
        let t = entities_by_type(gold, opts)?;
        let p = entities_by_type(pred, opts)?;
        let empty = HashSet::new();
        let names: std::collections::BTreeSet<&String> = t.keys().chain(p.keys()).collect();
        let zd = opts.zero_division;

        let mut per_type = Vec::with_capacity(names.len());
        let (mut tps, mut preds, mut trues) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ps, mut rs, mut fs) = (Vec::new(), Vec::new(), Vec::new());
        for name in names {
            let te = t.get(name).unwrap_or(&empty);
            let pe = p.get(name).unwrap_or(&empty);
            let tp = te.intersection(pe).count() as f64;
            let (np, nt) = (pe.len() as f64, te.len() as f64);
            let m = ClassMetrics::from_prf(prf(tp, np, nt, zd), te.len());
            tps.push(tp);
            preds.push(np);
            trues.push(nt);
            ps.push(m.precision);
            rs.push(m.recall);
            fs.push(m.f1);
            per_type.push((name.clone(), m));
        }
        let support: usize = per_type.iter().map(|(_, m)| m.support).sum();
        let pred_total: f64 = preds.iter().sum();
        let micro_avg = ClassMetrics::from_prf(
            prf(tps.iter().sum(), pred_total, trues.iter().sum(), zd),
            support,
        );
        let macro_avg = ClassMetrics {
            precision: mean(&ps),
            recall: mean(&rs),
            f1: mean(&fs),
            support,
        };
        let weighted_avg = match (
            weighted_mean(&ps, &trues),
            weighted_mean(&rs, &trues),
            weighted_mean(&fs, &trues),
        ) {
            (Some(p), Some(r), Some(f)) => ClassMetrics::from_prf((p, r, f), support),
            // No gold entities at all: seqeval's explicit fallback.
            _ => {
                let z = zd.seqeval_value();
                let pf = if pred_total == 0.0 { z } else { 0.0 };
                ClassMetrics {
                    precision: pf,
                    recall: z,
                    f1: pf,
                    support,
                }
            }
        };
        Ok(SeqevalReport {
            per_type,
            micro_avg,
            macro_avg,
            weighted_avg,
        })
    }

    /// Metrics of one entity type.
    pub fn get(&self, type_name: &str) -> Option<&ClassMetrics> {
        self.per_type
            .iter()
            .find(|(n, _)| n == type_name)
            .map(|(_, m)| m)
    }

    /// seqeval's `output_dict=True` structure (supports as floats, NaN as null).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (n, m) in &self.per_type {
            map.insert(n.clone(), m.to_json());
        }
        map.insert("micro avg".into(), self.micro_avg.to_json());
        map.insert("macro avg".into(), self.macro_avg.to_json());
        map.insert("weighted avg".into(), self.weighted_avg.to_json());
        serde_json::Value::Object(map)
    }

    /// seqeval's text report with `digits` decimals (header, rows, blank, averages, blank).
    pub fn to_text(&self, digits: usize) -> String {
        let width = format::name_width(self.per_type.iter().map(|(n, _)| n.as_str()), digits);
        let mut lines = Vec::new();
        for (n, m) in &self.per_type {
            lines.push(format::row(n, m, width, digits));
        }
        lines.push(String::new());
        for (n, m) in [
            ("micro avg", &self.micro_avg),
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            lines.push(format::row(n, m, width, digits));
        }
        lines.push(String::new());
        format::header(width) + &lines.join("\n")
    }
}

impl Display for SeqevalReport {
    /// Renders with seqeval's default of 2 digits (`{:.4}` selects 4 digits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text(f.precision().unwrap_or(2)))
    }
}

/// Token-level accuracy over all sentences (`seqeval.metrics.accuracy_score`).
pub fn accuracy_score<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>]) -> Result<f64> {
    check_consistent_length(gold, pred)?;
    let total: usize = gold.iter().map(|s| s.len()).sum();
    if total == 0 {
        return Err(MetricsError::Empty("accuracy of zero tokens".into()));
    }
    let correct: usize = gold
        .iter()
        .zip(pred)
        .map(|(g, p)| {
            g.iter()
                .zip(p)
                .filter(|(a, b)| a.as_ref() == b.as_ref())
                .count()
        })
        .sum();
    Ok(correct as f64 / total as f64)
}

/// Micro-averaged entity precision (`seqeval.metrics.precision_score`, average='micro').
pub fn precision_score<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<f64> {
    Ok(SeqevalReport::compute(gold, pred, mode)?
        .micro_avg
        .precision)
}

/// Micro-averaged entity recall (`seqeval.metrics.recall_score`, average='micro').
pub fn recall_score<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<f64> {
    Ok(SeqevalReport::compute(gold, pred, mode)?.micro_avg.recall)
}

/// Micro-averaged entity F1 (`seqeval.metrics.f1_score`, average='micro').
pub fn f1_score<S: AsRef<str>>(gold: &[Vec<S>], pred: &[Vec<S>], mode: Mode) -> Result<f64> {
    Ok(SeqevalReport::compute(gold, pred, mode)?.micro_avg.f1)
}
