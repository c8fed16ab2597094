//! Token-level data for NER / chunking: CoNLL column files and JSON Lines, tag-scheme
//! validation and conversion, and a writer for predictions.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use crate::error::{DataError, Result};
use crate::lines::LineReader;
use crate::table::json_type;

/// A chunk tagging scheme. Read from text by [`FromStr`] (any case; `BIO`, `BIOES`
/// accepted), also when deserialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum TagScheme {
    /// `I-` everywhere inside a chunk; `B-` only starts a chunk that directly follows a chunk
    /// of the same type (original CoNLL-2003).
    IOB1,
    /// Every chunk starts with `B-` (a.k.a. BIO; what HF `conll2003` uses).
    IOB2,
    /// `S-` single-token chunk, `B-` begin, `I-` inside, `E-` end (a.k.a. BIOES).
    IOBES,
}

impl fmt::Display for TagScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TagScheme::IOB1 => "IOB1",
            TagScheme::IOB2 => "IOB2",
            TagScheme::IOBES => "IOBES",
        })
    }
}

impl<'de> serde::Deserialize<'de> for TagScheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TagScheme;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tag scheme: IOB1, IOB2 or IOBES")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<TagScheme, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl FromStr for TagScheme {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "iob1" => Ok(TagScheme::IOB1),
            "iob2" | "bio" | "iob" => Ok(TagScheme::IOB2),
            "iobes" | "bioes" => Ok(TagScheme::IOBES),
            _ => Err(DataError::Invalid(format!(
                "unknown tag scheme {s:?}; expected IOB1, IOB2 or IOBES"
            ))),
        }
    }
}

/// A parsed tag: `O`, or a prefix letter and a chunk type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag<'a> {
    O,
    Chunk(char, &'a str),
}

impl<'a> Tag<'a> {
    fn ty(self) -> Option<&'a str> {
        match self {
            Tag::O => None,
            Tag::Chunk(_, t) => Some(t),
        }
    }
}

/// Parses a tag if its form belongs to the scheme (`B_PER`, `X-PER`, `B-` are rejected).
fn parse_tag(tag: &str, scheme: TagScheme) -> Option<Tag<'_>> {
    if tag == "O" {
        return Some(Tag::O);
    }
    let (prefix, ty) = tag.split_once('-')?;
    let allowed: &[&str] = match scheme {
        TagScheme::IOB1 | TagScheme::IOB2 => &["B", "I"],
        TagScheme::IOBES => &["B", "I", "E", "S"],
    };
    if !allowed.contains(&prefix) || ty.is_empty() {
        return None;
    }
    Some(Tag::Chunk(prefix.chars().next().unwrap(), ty))
}

fn parse_all<S: AsRef<str>>(tags: &[S], scheme: TagScheme) -> Result<Vec<Tag<'_>>> {
    tags.iter()
        .enumerate()
        .map(|(index, t)| {
            parse_tag(t.as_ref(), scheme).ok_or_else(|| DataError::InvalidTag {
                index,
                tag: t.as_ref().to_owned(),
                scheme,
                reason: "expected O or a B-/I-".to_owned()
                    + if scheme == TagScheme::IOBES {
                        "/E-/S-"
                    } else {
                        ""
                    }
                    + " prefix and a type",
            })
        })
        .collect()
}

/// Checks that every tag has the form of the scheme (`O` or `PREFIX-TYPE` with an allowed
/// prefix). Sequence rules are left to [`validate_sequence`], because real data sets often
/// break them (an `I-` after `O` in IOB2) and readers should not reject such files.
pub fn validate<S: AsRef<str>>(tags: &[S], scheme: TagScheme) -> Result<()> {
    parse_all(tags, scheme).map(|_| ())
}

/// Strict check: the form as in [`validate`] plus the scheme's sequence rules (IOB2: `I-X`
/// continues an `X` chunk; IOB1: `B-X` directly follows an `X` chunk; IOBES: chunks are
/// `S-X` or `B-X (I-X)* E-X`).
pub fn validate_sequence<S: AsRef<str>>(tags: &[S], scheme: TagScheme) -> Result<()> {
    let parsed = parse_all(tags, scheme)?;
    let bad = |index: usize, reason: &str| DataError::InvalidTag {
        index,
        tag: tags[index].as_ref().to_owned(),
        scheme,
        reason: reason.to_owned(),
    };
    let mut prev = Tag::O;
    for (i, &tag) in parsed.iter().enumerate() {
        match scheme {
            TagScheme::IOB2 => {
                if let Tag::Chunk('I', ty) = tag {
                    if prev.ty() != Some(ty) {
                        return Err(bad(i, "I- must follow B- or I- of the same type"));
                    }
                }
            }
            TagScheme::IOB1 => {
                if let Tag::Chunk('B', ty) = tag {
                    if prev.ty() != Some(ty) {
                        return Err(bad(i, "B- may only follow a chunk of the same type"));
                    }
                }
            }
            TagScheme::IOBES => {
                let open = matches!(prev, Tag::Chunk('B' | 'I', _));
                match tag {
                    Tag::Chunk('I' | 'E', ty) if !open || prev.ty() != Some(ty) => {
                        return Err(bad(i, "I-/E- must follow B- or I- of the same type"));
                    }
                    Tag::Chunk('I' | 'E', _) => {}
                    _ if open => return Err(bad(i, "the previous chunk was not closed with E-")),
                    _ => {}
                }
            }
        }
        prev = tag;
    }
    if scheme == TagScheme::IOBES && matches!(prev, Tag::Chunk('B' | 'I', _)) {
        let last = parsed.len() - 1;
        return Err(bad(last, "the last chunk is not closed with E-"));
    }
    Ok(())
}

/// Whether tag `i` starts a chunk, read leniently like seqeval: an `I-X` that does not
/// continue an `X` chunk starts one.
fn starts_chunk(tags: &[Tag], i: usize, scheme: TagScheme) -> bool {
    let prev = if i == 0 { Tag::O } else { tags[i - 1] };
    match tags[i] {
        Tag::O => false,
        Tag::Chunk(p, ty) => match scheme {
            TagScheme::IOB1 => p == 'B' || prev.ty() != Some(ty),
            TagScheme::IOB2 => p == 'B' || prev.ty() != Some(ty),
            TagScheme::IOBES => {
                p == 'B'
                    || p == 'S'
                    || prev.ty() != Some(ty)
                    || matches!(prev, Tag::Chunk('E' | 'S', _))
            }
        },
    }
}

/// Chunk id per token (`None` for `O`): the common representation every conversion goes
/// through, so ill-formed input is repaired the same way in every direction.
fn chunks(tags: &[Tag], scheme: TagScheme) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(tags.len());
    let mut id = 0usize;
    for i in 0..tags.len() {
        match tags[i] {
            Tag::O => out.push(None),
            Tag::Chunk(..) => {
                if starts_chunk(tags, i, scheme) {
                    id += 1;
                }
                out.push(Some(id));
            }
        }
    }
    out
}

fn render(tags: &[Tag], ids: &[Option<usize>], to: TagScheme) -> Vec<String> {
    let n = tags.len();
    (0..n)
        .map(|i| {
            let (Some(id), Some(ty)) = (ids[i], tags[i].ty()) else {
                return "O".to_owned();
            };
            let first = i == 0 || ids[i - 1] != Some(id);
            let last = i + 1 == n || ids[i + 1] != Some(id);
            let prefix = match to {
                TagScheme::IOB2 => {
                    if first {
                        "B"
                    } else {
                        "I"
                    }
                }
                TagScheme::IOB1 => {
                    // B- only where the previous token ends a chunk of the same type.
                    let touches_same =
                        i > 0 && ids[i - 1].is_some() && tags[i - 1].ty() == Some(ty);
                    if first && touches_same {
                        "B"
                    } else {
                        "I"
                    }
                }
                TagScheme::IOBES => match (first, last) {
                    (true, true) => "S",
                    (true, false) => "B",
                    (false, false) => "I",
                    (false, true) => "E",
                },
            };
            format!("{prefix}-{ty}")
        })
        .collect()
}

/// Converts tags between schemes. Every tag must have the form of `from`; ill-formed
/// sequences are read leniently (an `I-X` after `O` starts a chunk, as seqeval does).
pub fn convert<S: AsRef<str>>(tags: &[S], from: TagScheme, to: TagScheme) -> Result<Vec<String>> {
    let parsed = parse_all(tags, from)?;
    let ids = chunks(&parsed, from);
    Ok(render(&parsed, &ids, to))
}

/// IOB1 -> IOB2.
pub fn iob1_to_iob2<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>> {
    convert(tags, TagScheme::IOB1, TagScheme::IOB2)
}

/// IOB2 -> IOB1.
pub fn iob2_to_iob1<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>> {
    convert(tags, TagScheme::IOB2, TagScheme::IOB1)
}

/// IOB2 -> IOBES.
pub fn iob2_to_iobes<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>> {
    convert(tags, TagScheme::IOB2, TagScheme::IOBES)
}

/// IOBES -> IOB2.
pub fn iobes_to_iob2<S: AsRef<str>>(tags: &[S]) -> Result<Vec<String>> {
    convert(tags, TagScheme::IOBES, TagScheme::IOB2)
}

/// One sentence of a token file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sentence {
    /// 1-based line of the first token (JSONL: the line of the object).
    pub line: usize,
    /// The tokens.
    pub tokens: Vec<String>,
    /// One tag per token.
    pub tags: Vec<String>,
    /// Per token, the columns other than the token and the tag, in file order (e.g. POS and
    /// chunk tags of 4-column CoNLL-2003). Empty unless [`ConllOptions::keep_other_columns`].
    pub other_columns: Vec<Vec<String>>,
}

impl Sentence {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true for sentences read from a file.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// How to read a token file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConllOptions {
    /// 0-based column holding the tag; `None` = the last column. Column 0 is the token.
    pub tag_column: Option<usize>,
    /// Reject tags whose form is not of this scheme; `None` accepts any tag (POS tags...).
    /// Defaults to IOB2, whose form check also accepts IOB1 files.
    pub scheme: Option<TagScheme>,
    /// Fill [`Sentence::other_columns`].
    pub keep_other_columns: bool,
}

impl Default for ConllOptions {
    fn default() -> Self {
        ConllOptions {
            tag_column: None,
            scheme: Some(TagScheme::IOB2),
            keep_other_columns: false,
        }
    }
}

fn check_tag(tag: &str, opts: &ConllOptions, path: &Path, line: usize) -> Result<()> {
    if let Some(scheme) = opts.scheme {
        if parse_tag(tag, scheme).is_none() {
            return Err(DataError::InvalidTagAt {
                path: path.to_path_buf(),
                line,
                tag: tag.to_owned(),
                scheme,
            });
        }
    }
    Ok(())
}

/// Reads a token file: `.jsonl` / `.json` as JSON Lines, anything else as CoNLL columns.
pub fn read_token_file(path: impl AsRef<Path>, opts: &ConllOptions) -> Result<Vec<Sentence>> {
    let path = path.as_ref();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if matches!(ext.as_deref(), Some("jsonl" | "json")) {
        read_token_jsonl(path, opts)
    } else {
        read_conll(path, opts)
    }
}

/// Reads a CoNLL column file (see [`parse_conll`]).
pub fn read_conll(path: impl AsRef<Path>, opts: &ConllOptions) -> Result<Vec<Sentence>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    parse_conll(BufReader::new(file), path, opts)
}

/// Parses CoNLL columns: whitespace-separated, token first, tag in `opts.tag_column`. Blank
/// lines and `-DOCSTART-` lines end a sentence; no sentence is ever empty. Every token line
/// must have as many columns as the first one, which catches tokens containing spaces.
/// `name` is used in error messages.
pub fn parse_conll<R: BufRead>(
    reader: R,
    name: &Path,
    opts: &ConllOptions,
) -> Result<Vec<Sentence>> {
    if opts.tag_column == Some(0) {
        return Err(DataError::Invalid(
            "tag_column 0 is the token column; tags need a column >= 1".to_owned(),
        ));
    }
    let min_columns = opts.tag_column.map_or(2, |c| c + 1);
    let mut lines = LineReader::new(reader, name);
    let mut sentences = Vec::new();
    let mut current = Sentence::default();
    // (column count, line it was first seen on)
    let mut layout: Option<(usize, usize)> = None;
    while let Some(next) = lines.next_line() {
        let (line, text) = next?;
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.is_empty() || fields[0] == "-DOCSTART-" {
            if !current.tokens.is_empty() {
                sentences.push(std::mem::take(&mut current));
            }
            continue;
        }
        match layout {
            None => {
                if fields.len() < min_columns {
                    return Err(DataError::ColumnCount {
                        path: name.to_path_buf(),
                        line,
                        expected: format!("at least {min_columns} columns"),
                        found: fields.len(),
                    });
                }
                layout = Some((fields.len(), line));
            }
            Some((n, first)) if n != fields.len() => {
                return Err(DataError::ColumnCount {
                    path: name.to_path_buf(),
                    line,
                    expected: format!("{n} columns (as on line {first})"),
                    found: fields.len(),
                });
            }
            Some(_) => {}
        }
        let tag_idx = opts.tag_column.unwrap_or(fields.len() - 1);
        let tag = fields[tag_idx];
        check_tag(tag, opts, name, line)?;
        if current.tokens.is_empty() {
            current.line = line;
        }
        current.tokens.push(fields[0].to_owned());
        current.tags.push(tag.to_owned());
        if opts.keep_other_columns {
            let rest = fields
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != 0 && i != tag_idx)
                .map(|(_, f)| (*f).to_owned())
                .collect();
            current.other_columns.push(rest);
        }
    }
    if !current.tokens.is_empty() {
        sentences.push(current);
    }
    Ok(sentences)
}

/// Reads JSON Lines token data: `{"tokens": [...], "tags": [...]}` per line (`"ner_tags"`
/// with string values is accepted in place of `"tags"`). Objects with no tokens are skipped.
pub fn read_token_jsonl(path: impl AsRef<Path>, opts: &ConllOptions) -> Result<Vec<Sentence>> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    parse_token_jsonl(BufReader::new(file), path, opts)
}

/// [`read_token_jsonl`] on any reader; `name` is used in error messages.
pub fn parse_token_jsonl<R: BufRead>(
    reader: R,
    name: &Path,
    opts: &ConllOptions,
) -> Result<Vec<Sentence>> {
    let mut lines = LineReader::new(reader, name);
    let mut sentences = Vec::new();
    while let Some(next) = lines.next_line() {
        let (line, text) = next?;
        if text.trim().is_empty() {
            continue;
        }
        let err = |message: String| DataError::parse(name, line, message);
        let value: Value =
            serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(err(format!(
                "expected a JSON object per line, found {}",
                json_type(&value)
            )));
        };
        let strings = |key: &str| -> Result<Option<Vec<String>>> {
            let Some(v) = obj.get(key) else {
                return Ok(None);
            };
            let Value::Array(items) = v else {
                return Err(err(format!(
                    "{key:?} must be an array, found {}",
                    json_type(v)
                )));
            };
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(_) if key == "ner_tags" => Err(err(format!(
                        "\"ner_tags\"[{i}] is a number; give tag strings such as \"B-PER\" (integer ids need the label list)"
                    ))),
                    other => Err(err(format!(
                        "{key:?}[{i}] must be a string, found {}",
                        json_type(other)
                    ))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        };
        let tokens = strings("tokens")?.ok_or_else(|| err("missing \"tokens\"".to_owned()))?;
        let tags = match strings("tags")? {
            Some(t) => t,
            None => strings("ner_tags")?
                .ok_or_else(|| err("missing \"tags\" (or \"ner_tags\")".to_owned()))?,
        };
        if tokens.len() != tags.len() {
            return Err(DataError::LengthMismatch {
                path: name.to_path_buf(),
                line,
                tokens: tokens.len(),
                tags: tags.len(),
            });
        }
        for tag in &tags {
            check_tag(tag, opts, name, line)?;
        }
        if tokens.is_empty() {
            continue;
        }
        sentences.push(Sentence {
            line,
            tokens,
            tags,
            other_columns: Vec::new(),
        });
    }
    Ok(sentences)
}

/// Writes sentences in CoNLL / conlleval form, a blank line between sentences. Each line is
/// `token gold pred` when `predicted` is given and the sentence has gold tags, `token pred`
/// when it has none, and `token gold` without predictions.
pub fn write_conll<W: Write>(
    mut writer: W,
    sentences: &[Sentence],
    predicted: Option<&[Vec<String>]>,
) -> Result<()> {
    let out = Path::new("<output>");
    write_conll_inner(&mut writer, sentences, predicted).map_err(|e| match e {
        WriteError::Io(e) => DataError::io(out, e),
        WriteError::Data(e) => e,
    })
}

/// [`write_conll`] to a file (created or truncated).
pub fn write_conll_file(
    path: impl AsRef<Path>,
    sentences: &[Sentence],
    predicted: Option<&[Vec<String>]>,
) -> Result<()> {
    let path: PathBuf = path.as_ref().to_path_buf();
    let file = File::create(&path).map_err(|e| DataError::io(&path, e))?;
    let mut writer = BufWriter::new(file);
    write_conll_inner(&mut writer, sentences, predicted)
        .and_then(|()| writer.flush().map_err(WriteError::Io))
        .map_err(|e| match e {
            WriteError::Io(e) => DataError::io(&path, e),
            WriteError::Data(e) => e,
        })
}

enum WriteError {
    Io(std::io::Error),
    Data(DataError),
}

fn write_conll_inner<W: Write>(
    writer: &mut W,
    sentences: &[Sentence],
    predicted: Option<&[Vec<String>]>,
) -> std::result::Result<(), WriteError> {
    if let Some(pred) = predicted {
        if pred.len() != sentences.len() {
            return Err(WriteError::Data(DataError::Invalid(format!(
                "{} sentences but {} predicted tag sequences",
                sentences.len(),
                pred.len()
            ))));
        }
    }
    for (i, s) in sentences.iter().enumerate() {
        let pred = predicted.map(|p| &p[i]);
        let has_gold = !s.tags.is_empty();
        if has_gold && s.tags.len() != s.tokens.len() {
            return Err(WriteError::Data(DataError::Invalid(format!(
                "sentence {} (line {}): {} tokens but {} gold tags",
                i + 1,
                s.line,
                s.tokens.len(),
                s.tags.len()
            ))));
        }
        if let Some(p) = pred {
            if p.len() != s.tokens.len() {
                return Err(WriteError::Data(DataError::Invalid(format!(
                    "sentence {} (line {}): {} tokens but {} predicted tags",
                    i + 1,
                    s.line,
                    s.tokens.len(),
                    p.len()
                ))));
            }
        }
        if i > 0 {
            writeln!(writer).map_err(WriteError::Io)?;
        }
        for (t, token) in s.tokens.iter().enumerate() {
            let r = match (has_gold, pred) {
                (true, Some(p)) => writeln!(writer, "{token} {} {}", s.tags[t], p[t]),
                (false, Some(p)) => writeln!(writer, "{token} {}", p[t]),
                (true, None) => writeln!(writer, "{token} {}", s.tags[t]),
                (false, None) => writeln!(writer, "{token}"),
            };
            r.map_err(WriteError::Io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
