//! Default mode: seqeval's conlleval-like chunker (`seqeval.metrics.sequence_labeling`).

use serde::Serialize;

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
