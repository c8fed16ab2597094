//! Entity-level sequence-labelling metrics with seqeval (1.2.2) semantics.
//!
//! Two ways of reading entities out of tag sequences:
//! * [`Mode::Default`]: `seqeval.metrics.sequence_labeling.get_entities`, the conlleval-like
//!   chunker that is lenient about ill-formed sequences (an `I-X` after `O` starts an entity);
//! * [`Mode::Strict`]: `seqeval.scheme.Tokens.entities` for an explicit [`Scheme`]; only tag
//!   sequences that fit the scheme form entities (an `I-X` after `O` is no entity in IOB2).

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Display};

use serde::Serialize;

use crate::{format, mean, weighted_mean};
pub use crate::{ClassMetrics, MetricsError, Result, ZeroDivision};

// ---------------------------------------------------------------------------------------------
// Default mode: conlleval-like chunking.
// ---------------------------------------------------------------------------------------------

/// An entity found by [`get_entities`]: type and inclusive token span (seqeval's
/// `(chunk_type, chunk_start, chunk_end)` tuple).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Chunk {
    /// Entity type, e.g. `PER` (`_` for a tag without type).
    pub tag: String,
    /// Index of the first token.
    pub start: usize,
    /// Index of the last token (inclusive).
    pub end: usize,
}

/// Splits a tag into (chunk tag char, type) as seqeval's `get_entities` does.
fn split_default(chunk: &str, suffix: bool) -> (char, String) {
    // Python would raise IndexError on an empty tag; treat it as "O" instead of panicking.
    if chunk.is_empty() {
        return ('O', "_".to_string());
    }
    if suffix {
        let tag = chunk.chars().last().unwrap_or('O');
        let head = &chunk[..chunk.len() - tag.len_utf8()];
        // chunk[:-1].rsplit('-', maxsplit=1)[0] or '_'
        let ty = match head.rfind('-') {
            Some(i) => &head[..i],
            None => head,
        };
        (tag, if ty.is_empty() { "_".into() } else { ty.into() })
    } else {
        let tag = chunk.chars().next().unwrap_or('O');
        let rest = &chunk[tag.len_utf8()..];
        // chunk[1:].split('-', maxsplit=1)[-1] or '_'
        let ty = match rest.find('-') {
            Some(i) => &rest[i + 1..],
            None => rest,
        };
        (tag, if ty.is_empty() { "_".into() } else { ty.into() })
    }
}

/// seqeval `end_of_chunk`: did a chunk end between the previous and the current token?
fn end_of_chunk(prev_tag: char, tag: char, prev_type: &str, type_: &str) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != type_)
}

/// seqeval `start_of_chunk`: did a chunk start between the previous and the current token?
/// Note `O -> I` starts a chunk: this is what makes the default mode lenient.
fn start_of_chunk(prev_tag: char, tag: char, prev_type: &str, type_: &str) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != type_)
}

/// seqeval's `get_entities(seq, suffix)` for one flat sequence of tags (spans inclusive).
pub fn get_entities<S: AsRef<str>>(seq: &[S], suffix: bool) -> Vec<Chunk> {
    let mut prev_tag = 'O';
    let mut prev_type = String::new();
    let mut begin = 0usize;
    let mut chunks = Vec::new();
    // A trailing "O" flushes the last open chunk.
    let tags = seq.iter().map(|s| s.as_ref()).chain(std::iter::once("O"));
    for (i, chunk) in tags.enumerate() {
        let (tag, type_) = split_default(chunk, suffix);
        if end_of_chunk(prev_tag, tag, &prev_type, &type_) {
            chunks.push(Chunk {
                tag: prev_type.clone(),
                start: begin,
                end: i - 1,
            });
        }
        if start_of_chunk(prev_tag, tag, &prev_type, &type_) {
            begin = i;
        }
        prev_tag = tag;
        prev_type = type_;
    }
    chunks
}

/// seqeval's `get_entities` on a list of sentences: sentences are concatenated with an `"O"`
/// after each one, so spans are offsets in that concatenation.
pub fn get_entities_nested<S: AsRef<str>>(sentences: &[Vec<S>], suffix: bool) -> Vec<Chunk> {
    let flat: Vec<&str> = sentences
        .iter()
        .flat_map(|s| s.iter().map(|t| t.as_ref()).chain(std::iter::once("O")))
        .collect();
    get_entities(&flat, suffix)
}

// ---------------------------------------------------------------------------------------------
// Strict mode: seqeval.scheme.
// ---------------------------------------------------------------------------------------------

/// A tagging scheme for strict mode (`seqeval.scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Scheme {
    /// IOB1: `B-` only separates adjacent entities of the same type.
    IOB1,
    /// IOE1: `E-` only separates adjacent entities of the same type.
    IOE1,
    /// IOB2: every entity starts with `B-`.
    IOB2,
    /// IOE2: every entity ends with `E-`.
    IOE2,
    /// IOBES: `B-`/`I-`/`E-` spans and `S-` singletons.
    IOBES,
    /// BILOU: `B-`/`I-`/`L-` spans and `U-` singletons.
    BILOU,
}

impl std::str::FromStr for Scheme {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "IOB1" => Scheme::IOB1,
            "IOE1" => Scheme::IOE1,
            "IOB2" | "BIO" => Scheme::IOB2,
            "IOE2" => Scheme::IOE2,
            "IOBES" | "BIOES" => Scheme::IOBES,
            "BILOU" => Scheme::BILOU,
            other => {
                return Err(MetricsError::InvalidArgument(format!(
                    "unknown scheme {other:?} (IOB1, IOE1, IOB2, IOE2, IOBES, BILOU)"
                )))
            }
        })
    }
}

impl Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

// Prefix flags, a bitset like seqeval's `Prefix(enum.Flag)`.
const I: u8 = 1;
const O: u8 = 2;
const B: u8 = 4;
const E: u8 = 8;
const S: u8 = 16;
const L: u8 = 32;
const U: u8 = 64;
const ANY: u8 = I | O | B | E | S | L | U;

/// Tag condition between the previous and current token (seqeval's `Tag` flag).
#[derive(Clone, Copy)]
enum TagCond {
    Same,
    Diff,
    Any,
}
use TagCond::{Any as TAny, Diff, Same};

type Pattern = (u8, u8, TagCond);

struct SchemeRules {
    allowed: u8,
    start: &'static [Pattern],
    inside: &'static [Pattern],
    end: &'static [Pattern],
}

impl Scheme {
    /// The pattern tables of the corresponding seqeval.scheme class, copied verbatim.
    fn rules(self) -> SchemeRules {
        match self {
            Scheme::IOB1 => SchemeRules {
                allowed: I | O | B,
                start: &[
                    (O, I, TAny),
                    (I, I, Diff),
                    (B, I, TAny),
                    (I, B, Same),
                    (B, B, Same),
                ],
                inside: &[(B, I, Same), (I, I, Same)],
                end: &[
                    (I, I, Diff),
                    (I, O, TAny),
                    (I, B, TAny),
                    (B, O, TAny),
                    (B, I, Diff),
                    (B, B, Same),
                ],
            },
            Scheme::IOE1 => SchemeRules {
                allowed: I | O | E,
                start: &[(O, I, TAny), (I, I, Diff), (E, I, TAny), (E, E, Same)],
                inside: &[(I, I, Same), (I, E, Same)],
                end: &[
                    (I, I, Diff),
                    (I, O, TAny),
                    (I, E, Diff),
                    (E, I, Same),
                    (E, E, Same),
                ],
            },
            Scheme::IOB2 => SchemeRules {
                allowed: I | O | B,
                start: &[(ANY, B, TAny)],
                inside: &[(B, I, Same), (I, I, Same)],
                end: &[
                    (I, O, TAny),
                    (I, I, Diff),
                    (I, B, TAny),
                    (B, O, TAny),
                    (B, I, Diff),
                    (B, B, TAny),
                ],
            },
            Scheme::IOE2 => SchemeRules {
                allowed: I | O | E,
                start: &[
                    (O, I, TAny),
                    (O, E, TAny),
                    (E, I, TAny),
                    (E, E, TAny),
                    (I, I, Diff),
                    (I, E, Diff),
                ],
                inside: &[(I, E, Same), (I, I, Same)],
                end: &[(E, ANY, TAny)],
            },
            Scheme::IOBES => SchemeRules {
                allowed: I | O | B | E | S,
                start: &[(ANY, B, TAny), (ANY, S, TAny)],
                inside: &[(B, I, Same), (B, E, Same), (I, I, Same), (I, E, Same)],
                end: &[(S, ANY, TAny), (E, ANY, TAny)],
            },
            Scheme::BILOU => SchemeRules {
                allowed: B | I | L | O | U,
                start: &[(ANY, B, TAny), (ANY, U, TAny)],
                inside: &[(B, I, Same), (B, L, Same), (I, I, Same), (I, L, Same)],
                end: &[(U, ANY, TAny), (L, ANY, TAny)],
            },
        }
    }

    /// `seqeval.scheme.auto_detect`: IOB2, IOE2, IOBES or BILOU from the set of prefixes used.
    pub fn auto_detect<T: AsRef<str>>(sequences: &[Vec<T>], suffix: bool) -> Result<Scheme> {
        let mut prefixes = 0u8;
        for seq in sequences {
            for t in seq {
                prefixes |= parse_token(t.as_ref(), suffix)?.prefix;
            }
        }
        let sets = |v: &[u8]| v.contains(&prefixes);
        if sets(&[I | O | B, I | B, B | O, B]) {
            Ok(Scheme::IOB2)
        } else if sets(&[I | O | E, I | E, E | O, E]) {
            Ok(Scheme::IOE2)
        } else if sets(&[
            I | O | B | E | S,
            I | B | E | S,
            I | O | B | E,
            O | B | E | S,
            I | B | E,
            B | E | S,
            O | B | E,
            B | E,
            S,
        ]) {
            Ok(Scheme::IOBES)
        } else if sets(&[
            I | O | B | L | U,
            I | B | L | U,
            I | O | B | L,
            O | B | L | U,
            I | B | L,
            B | L | U,
            O | B | L,
            B | L,
            U,
        ]) {
            Ok(Scheme::BILOU)
        } else {
            Err(MetricsError::InvalidArgument(
                "this scheme is not supported (auto-detect found no matching scheme)".into(),
            ))
        }
    }
}

/// A parsed token of seqeval.scheme (`Token.prefix`, `Token.tag`).
#[derive(Clone)]
struct Tok {
    prefix: u8,
    tag: String,
}

fn parse_token(token: &str, suffix: bool) -> Result<Tok> {
    let c = if suffix {
        token.chars().last()
    } else {
        token.chars().next()
    };
    let Some(c) = c else {
        return Err(MetricsError::InvalidTag {
            tag: token.into(),
            reason: "empty tag".into(),
        });
    };
    let prefix = match c {
        'I' => I,
        'O' => O,
        'B' => B,
        'E' => E,
        'S' => S,
        'L' => L,
        'U' => U,
        _ => {
            return Err(MetricsError::InvalidTag {
                tag: token.into(),
                reason: format!("unknown prefix {c:?}"),
            })
        }
    };
    let rest = if suffix {
        &token[..token.len() - c.len_utf8()]
    } else {
        &token[c.len_utf8()..]
    };
    // tag.strip(delimiter) or '_'
    let tag = rest.trim_matches('-');
    Ok(Tok {
        prefix,
        tag: if tag.is_empty() {
            "_".into()
        } else {
            tag.into()
        },
    })
}

fn check_patterns(prev: &Tok, cur: &Tok, patterns: &[Pattern]) -> bool {
    patterns.iter().any(|&(pp, cp, cond)| {
        prev.prefix & pp != 0
            && cur.prefix & cp != 0
            && match cond {
                TAny => true,
                Same => prev.tag == cur.tag,
                Diff => prev.tag != cur.tag,
            }
    })
}

/// A strictly-extracted entity (`seqeval.scheme.Entity`): half-open span `[start, end)` within
/// sentence `sent_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Entity {
    /// Index of the sentence.
    pub sent_id: usize,
    /// Entity type.
    pub tag: String,
    /// First token index.
    pub start: usize,
    /// One past the last token index.
    pub end: usize,
}

/// `seqeval.scheme.Tokens(tokens, scheme).entities` for one sentence.
pub fn strict_entities<T: AsRef<str>>(
    tokens: &[T],
    scheme: Scheme,
    suffix: bool,
    sent_id: usize,
) -> Result<Vec<Entity>> {
    let rules = scheme.rules();
    let outside = parse_token("O", suffix)?;
    let mut ext = Vec::with_capacity(tokens.len() + 1);
    for t in tokens {
        let tok = parse_token(t.as_ref(), suffix)?;
        // seqeval validates every token it visits, which (since inside-tokens always carry an
        // allowed prefix) amounts to validating all of them.
        if tok.prefix & rules.allowed == 0 {
            return Err(MetricsError::InvalidTag {
                tag: t.as_ref().into(),
                reason: format!("prefix not allowed by scheme {scheme}"),
            });
        }
        ext.push(tok);
    }
    let n_tokens = ext.len();
    ext.push(outside.clone()); // sentinel

    let forward = |start: usize, mut prev: usize| -> usize {
        for i in start..ext.len() {
            if check_patterns(&ext[prev], &ext[i], rules.inside) {
                prev = i;
            } else {
                return i;
            }
        }
        n_tokens.saturating_sub(1)
    };

    let mut entities = Vec::new();
    let mut i = 0;
    let mut prev = outside;
    while i < ext.len() {
        let token = &ext[i];
        if check_patterns(&prev, token, rules.start) {
            let end = forward(i + 1, i);
            if check_patterns(&ext[end - 1], &ext[end], rules.end) {
                entities.push(Entity {
                    sent_id,
                    tag: token.tag.clone(),
                    start: i,
                    end,
                });
            }
            i = end;
        } else {
            i += 1;
        }
        prev = ext[i - 1].clone();
    }
    Ok(entities)
}

// ---------------------------------------------------------------------------------------------
// Reports.
// ---------------------------------------------------------------------------------------------

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
            let (pr, rc, f) = prf(tp, np, nt, zd);
            tps.push(tp);
            preds.push(np);
            trues.push(nt);
            ps.push(pr);
            rs.push(rc);
            fs.push(f);
            per_type.push((
                name.clone(),
                ClassMetrics {
                    precision: pr,
                    recall: rc,
                    f1: f,
                    support: te.len(),
                },
            ));
        }
        let support: usize = per_type.iter().map(|(_, m)| m.support).sum();
        let pred_total: f64 = preds.iter().sum();
        let (mp, mr, mf) = prf(tps.iter().sum(), pred_total, trues.iter().sum(), zd);
        let micro_avg = ClassMetrics {
            precision: mp,
            recall: mr,
            f1: mf,
            support,
        };
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
            (Some(precision), Some(recall), Some(f1)) => ClassMetrics {
                precision,
                recall,
                f1,
                support,
            },
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
        let name_width = self
            .per_type
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let width = name_width.max("weighted avg".len()).max(digits);
        let mut lines = Vec::new();
        for (n, m) in &self.per_type {
            lines.push(format::row(
                n,
                m.precision,
                m.recall,
                m.f1,
                m.support,
                width,
                digits,
            ));
        }
        lines.push(String::new());
        for (n, m) in [
            ("micro avg", &self.micro_avg),
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            lines.push(format::row(
                n,
                m.precision,
                m.recall,
                m.f1,
                m.support,
                width,
                digits,
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn chunk(tag: &str, start: usize, end: usize) -> Chunk {
        Chunk {
            tag: tag.into(),
            start,
            end,
        }
    }

    #[test]
    fn default_chunker_docstring_example() {
        // seqeval docstring: get_entities(['B-PER', 'I-PER', 'O', 'B-LOC']) == [('PER', 0, 1), ('LOC', 3, 3)]
        assert_eq!(
            get_entities(&sent("B-PER I-PER O B-LOC"), false),
            vec![chunk("PER", 0, 1), chunk("LOC", 3, 3)]
        );
    }

    #[test]
    fn default_i_after_o_starts_entity_and_type_change_splits() {
        assert_eq!(
            get_entities(&sent("O I-PER I-PER I-LOC"), false),
            vec![chunk("PER", 1, 2), chunk("LOC", 3, 3)]
        );
        // B-PER B-PER: two single-token entities.
        assert_eq!(
            get_entities(&sent("B-PER B-PER"), false),
            vec![chunk("PER", 0, 0), chunk("PER", 1, 1)]
        );
        // Suffix-less tags: type '_'.
        assert_eq!(
            get_entities(&sent("B I O I"), false),
            vec![chunk("_", 0, 1), chunk("_", 3, 3)]
        );
        // Suffix style.
        assert_eq!(
            get_entities(&sent("PER-B PER-I O"), true),
            vec![chunk("PER", 0, 1)]
        );
        // IOBES tags in default mode.
        assert_eq!(
            get_entities(&sent("S-PER B-LOC E-LOC"), false),
            vec![chunk("PER", 0, 0), chunk("LOC", 1, 2)]
        );
    }

    #[test]
    fn strict_iob2_rejects_i_after_o() {
        let e = strict_entities(&sent("O I-PER I-PER B-LOC"), Scheme::IOB2, false, 0).unwrap();
        assert_eq!(
            e,
            vec![Entity {
                sent_id: 0,
                tag: "LOC".into(),
                start: 3,
                end: 4
            }]
        );
        // B-PER I-LOC: the B-PER is complete (B->I with a different tag ends it); I-LOC is no entity.
        let e = strict_entities(&sent("B-PER I-LOC"), Scheme::IOB2, false, 0).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].start, e[0].end), (0, 1));
        assert!(strict_entities(&sent("B-PER E-PER"), Scheme::IOB2, false, 0).is_err());
    }

    #[test]
    fn strict_iobes() {
        let tags = sent("B-PER I-PER E-PER S-LOC O B-ORG I-ORG O I-MISC E-MISC");
        let e = strict_entities(&tags, Scheme::IOBES, false, 2).unwrap();
        let got: Vec<(&str, usize, usize)> =
            e.iter().map(|e| (e.tag.as_str(), e.start, e.end)).collect();
        // B-ORG I-ORG followed by O never ends (no E-): dropped; I-MISC E-MISC lacks B-: dropped.
        assert_eq!(got, vec![("PER", 0, 3), ("LOC", 3, 4)]);
        assert!(e.iter().all(|e| e.sent_id == 2));
    }

    #[test]
    fn strict_bilou_and_iob1() {
        let e = strict_entities(&sent("B-PER L-PER U-LOC B-ORG"), Scheme::BILOU, false, 0).unwrap();
        let got: Vec<(&str, usize, usize)> =
            e.iter().map(|e| (e.tag.as_str(), e.start, e.end)).collect();
        assert_eq!(got, vec![("PER", 0, 2), ("LOC", 2, 3)]);
        // IOB1: I- starts entities, B- only separates same-type neighbours.
        let e =
            strict_entities(&sent("I-PER I-PER B-PER O I-LOC"), Scheme::IOB1, false, 0).unwrap();
        let got: Vec<(&str, usize, usize)> =
            e.iter().map(|e| (e.tag.as_str(), e.start, e.end)).collect();
        assert_eq!(got, vec![("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]);
    }

    #[test]
    fn b_per_i_per_vs_b_per_b_per() {
        let gold = vec![sent("B-PER I-PER")];
        let pred = vec![sent("B-PER B-PER")];
        for mode in [Mode::Default, Mode::Strict(Scheme::IOB2)] {
            let r = SeqevalReport::compute(&gold, &pred, mode).unwrap();
            let m = r.get("PER").unwrap();
            // Gold: one 2-token entity; pred: two 1-token entities; no match.
            assert_eq!((m.precision, m.recall, m.f1, m.support), (0.0, 0.0, 0.0, 1));
        }
    }

    #[test]
    fn i_start_differs_between_modes() {
        let gold = vec![sent("B-PER I-PER O")];
        let pred = vec![sent("I-PER I-PER O")];
        assert_eq!(f1_score(&gold, &pred, Mode::Default).unwrap(), 1.0);
        assert_eq!(
            f1_score(&gold, &pred, Mode::Strict(Scheme::IOB2)).unwrap(),
            0.0
        );
        let r = SeqevalReport::compute(&gold, &pred, Mode::Strict(Scheme::IOB2)).unwrap();
        assert_eq!(r.micro_avg.recall, 0.0);
    }

    #[test]
    fn docstring_report_and_text() {
        // seqeval docstring example of classification_report.
        let gold = vec![sent("O O O B-MISC I-MISC I-MISC O"), sent("B-PER I-PER O")];
        let pred = vec![
            sent("O O B-MISC I-MISC I-MISC I-MISC O"),
            sent("B-PER I-PER O"),
        ];
        let r = SeqevalReport::compute(&gold, &pred, Mode::Default).unwrap();
        let expected = [
            "              precision    recall  f1-score   support",
            "",
            "        MISC       0.00      0.00      0.00         1",
            "         PER       1.00      1.00      1.00         1",
            "",
            "   micro avg       0.50      0.50      0.50         2",
            "   macro avg       0.50      0.50      0.50         2",
            "weighted avg       0.50      0.50      0.50         2",
            "",
        ]
        .join("\n");
        assert_eq!(r.to_text(2), expected);
        assert_eq!(accuracy_score(&gold, &pred).unwrap(), 0.8);
        assert_eq!(precision_score(&gold, &pred, Mode::Default).unwrap(), 0.5);
        assert_eq!(recall_score(&gold, &pred, Mode::Default).unwrap(), 0.5);
    }

    #[test]
    fn predicted_only_type_is_reported_and_zero_division() {
        let gold = vec![sent("B-PER O")];
        let pred = vec![sent("B-PER B-LOC")];
        let r = SeqevalReport::compute(&gold, &pred, Mode::Default).unwrap();
        let loc = r.get("LOC").unwrap();
        assert_eq!((loc.precision, loc.recall, loc.support), (0.0, 0.0, 0));
        // Macro over {LOC, PER}.
        assert_eq!(r.macro_avg.precision, 0.5);
        let opts = SeqevalOptions {
            zero_division: ZeroDivision::One,
            ..Default::default()
        };
        let r = SeqevalReport::compute_with(&gold, &pred, &opts).unwrap();
        assert_eq!(r.get("LOC").unwrap().recall, 1.0);
        // No gold entities at all: seqeval's weighted fallback.
        let r = SeqevalReport::compute(&[sent("O")], &[sent("B-X")], Mode::Default).unwrap();
        assert_eq!(
            (
                r.weighted_avg.precision,
                r.weighted_avg.recall,
                r.weighted_avg.f1
            ),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn errors_and_auto_detect() {
        assert!(SeqevalReport::compute(&[sent("O O")], &[sent("O")], Mode::Default).is_err());
        assert!(matches!(
            SeqevalReport::compute(&[sent("X-PER")], &[sent("O")], Mode::Strict(Scheme::IOB2)),
            Err(MetricsError::InvalidTag { .. })
        ));
        assert_eq!(
            Scheme::auto_detect(&[sent("B-A I-A O")], false).unwrap(),
            Scheme::IOB2
        );
        assert_eq!(
            Scheme::auto_detect(&[sent("S-A B-A E-A")], false).unwrap(),
            Scheme::IOBES
        );
        assert_eq!(
            Scheme::auto_detect(&[sent("B-A L-A U-B O")], false).unwrap(),
            Scheme::BILOU
        );
        // seqeval's allowed prefix sets are explicit lists: {U, O} is in none of them.
        assert!(Scheme::auto_detect(&[sent("U-A O")], false).is_err());
        assert!(Scheme::auto_detect(&[sent("B-A E-A O")], false).is_ok());
        assert!(Scheme::auto_detect(&[sent("B-A L-A S-A")], false).is_err());
        assert_eq!("iobes".parse::<Scheme>().unwrap(), Scheme::IOBES);
    }
}
