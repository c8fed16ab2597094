//! Strict mode: entities of an explicit tagging scheme (`seqeval.scheme`).

use std::fmt::{self, Display};

use serde::Serialize;

use crate::{MetricsError, Result};

/// A tagging scheme for strict mode (`seqeval.scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Scheme {
    /// IOB1: `B-` only separates adjacent entities of the same type.
    IOB1,
    /// IOE1: `E-` only separates adjacent entities of the same type.
    IOE1,
    /// IOB2: every entity starts with `B-`.
    #[cfg_attr(feature = "clap", value(alias = "bio"))]
    IOB2,
    /// IOE2: every entity ends with `E-`.
    IOE2,
    /// IOBES: `B-`/`I-`/`E-` spans and `S-` singletons.
    #[cfg_attr(feature = "clap", value(alias = "bioes"))]
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
