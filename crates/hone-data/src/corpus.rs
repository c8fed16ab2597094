//! Plain-text corpora for pretraining, streamed line by line so a multi-gigabyte file is
//! never held in memory.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{DataError, Result};
use crate::lines::LineReader;

/// Where one document ends (a recipe's `document_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DocumentMode {
    /// Each file is one document.
    #[serde(rename = "one_per_file")]
    OnePerFile,
    /// Blank lines separate documents (BERT pretraining format); files also end documents.
    #[serde(rename = "blank_line")]
    BlankLineSeparated,
}

/// One document: its non-empty lines (sentences / segments), trimmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The file it came from.
    pub path: Arc<Path>,
    /// 1-based line of its first non-empty line.
    pub line: usize,
    /// The non-empty lines, trimmed; never empty.
    pub lines: Vec<String>,
}

/// Streams documents from a list of files, in order. Yields `Err` for a file that cannot be
/// opened or a line that is not UTF-8 (naming file:line) and then stops, since a trainer
/// should not silently train on part of its corpus.
pub struct DocumentReader {
    files: std::vec::IntoIter<PathBuf>,
    mode: DocumentMode,
    current: Option<(Arc<Path>, LineReader<BufReader<File>>)>,
    failed: bool,
}

impl DocumentReader {
    /// Files are opened lazily, one at a time.
    pub fn new<I, P>(files: I, mode: DocumentMode) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let files: Vec<PathBuf> = files.into_iter().map(Into::into).collect();
        DocumentReader {
            files: files.into_iter(),
            mode,
            current: None,
            failed: false,
        }
    }

    fn next_document(&mut self) -> Result<Option<Document>> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.next() else {
                    return Ok(None);
                };
                let reader = LineReader::open(&path)?;
                self.current = Some((Arc::from(path.as_path()), reader));
            }
            let (path, reader) = self.current.as_mut().unwrap();
            let mut doc = Document {
                path: Arc::clone(path),
                line: 0,
                lines: Vec::new(),
            };
            let mut file_done = true;
            while let Some(next) = reader.next_line() {
                let (line, text) = next?;
                let text = text.trim();
                if text.is_empty() {
                    if self.mode == DocumentMode::BlankLineSeparated && !doc.lines.is_empty() {
                        file_done = false;
                        break;
                    }
                    continue;
                }
                if doc.lines.is_empty() {
                    doc.line = line;
                }
                doc.lines.push(text.to_owned());
            }
            if file_done {
                self.current = None;
            }
            if !doc.lines.is_empty() {
                return Ok(Some(doc));
            }
        }
    }
}

impl Iterator for DocumentReader {
    type Item = Result<Document>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_document() {
            Ok(doc) => doc.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Streams the raw text of files, concatenated in order with line endings kept, as chunks of
/// whole lines of about `chunk_bytes` each: causal-LM tokenization reads a corpus this way
/// and never holds it whole. A line that is not UTF-8 is an error naming file:line, after
/// which the iterator stops.
pub struct TextChunks {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<LineReader<BufReader<File>>>,
    chunk_bytes: usize,
    failed: bool,
}

impl TextChunks {
    /// Files are opened lazily, one at a time.
    pub fn new<I, P>(files: I, chunk_bytes: usize) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        let files: Vec<PathBuf> = files.into_iter().map(Into::into).collect();
        TextChunks {
            files: files.into_iter(),
            current: None,
            chunk_bytes: chunk_bytes.max(1),
            failed: false,
        }
    }

    fn next_chunk(&mut self) -> Result<Option<Vec<String>>> {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        while bytes < self.chunk_bytes {
            if self.current.is_none() {
                let Some(path) = self.files.next() else {
                    break;
                };
                self.current = Some(LineReader::open(&path)?);
            }
            match self.current.as_mut().unwrap().next_line_with_ending() {
                Some(line) => {
                    let (_, text) = line?;
                    bytes += text.len();
                    chunk.push(text);
                }
                None => self.current = None,
            }
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }
}

impl Iterator for TextChunks {
    type Item = Result<Vec<String>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_chunk() {
            Ok(chunk) => chunk.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Every line of a file without its line ending, empty lines included (so line `i` of two
/// aligned files still correspond). Invalid UTF-8 is an error naming file:line.
pub fn read_lines(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let mut reader = LineReader::open(path.as_ref())?;
    let mut lines = Vec::new();
    while let Some(next) = reader.next_line() {
        lines.push(next?.1);
    }
    Ok(lines)
}

/// Line-aligned parallel text: (source, target) pairs and how many lines were skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelText {
    pub pairs: Vec<(String, String)>,
    /// Line numbers where either side was empty (not a pair).
    pub skipped: usize,
}

/// Line-aligned parallel text (e.g. Multi30k `train.de` / `train.en`). Fails when the line
/// counts differ, naming both files and the first line the shorter one lacks; a line empty
/// on either side is skipped and counted.
pub fn read_parallel(source: impl AsRef<Path>, target: impl AsRef<Path>) -> Result<ParallelText> {
    let (source, target) = (source.as_ref(), target.as_ref());
    let src = read_lines(source)?;
    let tgt = read_lines(target)?;
    if src.len() != tgt.len() {
        let shorter = if src.len() < tgt.len() {
            source
        } else {
            target
        };
        return Err(DataError::Invalid(format!(
            "{} has {} lines but {} has {}; parallel files must align line by line ({} has no line {})",
            source.display(),
            src.len(),
            target.display(),
            tgt.len(),
            shorter.display(),
            src.len().min(tgt.len()) + 1
        )));
    }
    let mut pairs = Vec::with_capacity(src.len());
    let mut skipped = 0;
    for (s, t) in src.into_iter().zip(tgt) {
        if s.trim().is_empty() || t.trim().is_empty() {
            skipped += 1;
            continue;
        }
        pairs.push((s, t));
    }
    Ok(ParallelText { pairs, skipped })
}
