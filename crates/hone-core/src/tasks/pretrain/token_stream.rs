//! The causal-LM token stream: a corpus tokenized once, chunk by chunk, and kept either in
//! memory or, for a corpus larger than memory, in a flat file of little-endian `u32` ids
//! (nanoGPT's `train.bin`) that training reads back one window at a time.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::tokenization::TextTokenizer;

/// Text is read and tokenized this many bytes at a time (whole lines).
const CHUNK_BYTES: usize = 4 << 20;

#[derive(Clone)]
enum Storage {
    Memory(Arc<Vec<u32>>),
    File {
        path: Arc<Path>,
        file: Arc<Mutex<File>>,
    },
}

/// A contiguous range of token ids: all of a tokenized corpus, or a split of it.
#[derive(Clone)]
pub struct TokenStream {
    storage: Storage,
    offset: usize,
    len: usize,
}

impl TokenStream {
    /// A stream held in memory.
    pub fn from_vec(ids: Vec<u32>) -> Self {
        let len = ids.len();
        TokenStream {
            storage: Storage::Memory(Arc::new(ids)),
            offset: 0,
            len,
        }
    }

    /// Tokenizes the text of `files` (concatenated, line endings kept), reading and encoding
    /// a few megabytes at a time, so the text is never held whole. `max_chars` keeps only the
    /// first characters. With `cache`, the ids are written to that file (atomically) and read
    /// back from it on demand; without it they stay in memory.
    pub fn tokenize(
        tokenizer: &TextTokenizer,
        files: &[PathBuf],
        max_chars: Option<usize>,
        cache: Option<&Path>,
    ) -> Result<Self> {
        let Some(path) = cache else {
            let mut ids = Vec::new();
            encode_chunks(tokenizer, files, max_chars, |chunk| {
                ids.extend_from_slice(chunk);
                Ok(())
            })?;
            return Ok(Self::from_vec(ids));
        };
        let mut len = 0;
        crate::io::write_atomically(path, |tmp| {
            let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
            encode_chunks(tokenizer, files, max_chars, |chunk| {
                let bytes: Vec<u8> = chunk.iter().flat_map(|i| i.to_le_bytes()).collect();
                len += chunk.len();
                Ok(out.write_all(&bytes)?)
            })?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            Ok(())
        })?;
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(TokenStream {
            storage: Storage::File {
                path: Arc::from(path),
                file: Arc::new(Mutex::new(file)),
            },
            offset: 0,
            len,
        })
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the stream has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the ids live in a file rather than in memory.
    pub fn is_file_backed(&self) -> bool {
        matches!(self.storage, Storage::File { .. })
    }

    /// Tokens `[0, at)` and `[at, len)`.
    pub fn split_at(&self, at: usize) -> (Self, Self) {
        let at = at.min(self.len);
        let head = TokenStream {
            len: at,
            ..self.clone()
        };
        let tail = TokenStream {
            offset: self.offset + at,
            len: self.len - at,
            ..self.clone()
        };
        (head, tail)
    }

    /// Tokens `[start, start + len)` of this stream.
    pub fn window(&self, start: usize, len: usize) -> Result<Vec<u32>> {
        if start + len > self.len {
            bail!(
                "token window {start}..{} is outside the stream of {} tokens",
                start + len,
                self.len
            )
        }
        let begin = self.offset + start;
        match &self.storage {
            Storage::Memory(ids) => Ok(ids[begin..begin + len].to_vec()),
            Storage::File { path, file } => {
                let mut bytes = vec![0u8; len * 4];
                let mut f = file.lock().expect("token cache lock");
                f.seek(SeekFrom::Start(begin as u64 * 4))
                    .and_then(|_| f.read_exact(&mut bytes))
                    .with_context(|| format!("cannot read tokens from {}", path.display()))?;
                Ok(bytes
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            }
        }
    }
}

/// Keeps at most `left` characters of `lines`, counting them down.
fn truncate_chars(lines: &mut Vec<String>, left: &mut usize) {
    for (i, line) in lines.iter_mut().enumerate() {
        let n = line.chars().count();
        if n >= *left {
            let cut = line
                .char_indices()
                .nth(*left)
                .map_or(line.len(), |(b, _)| b);
            line.truncate(cut);
            *left = 0;
            lines.truncate(i + 1);
            return;
        }
        *left -= n;
    }
}

/// Reads `files` a chunk at a time and hands the ids of each chunk, in order, to `emit`.
fn encode_chunks(
    tokenizer: &TextTokenizer,
    files: &[PathBuf],
    max_chars: Option<usize>,
    mut emit: impl FnMut(&[u32]) -> Result<()>,
) -> Result<()> {
    let mut tok = tokenizer.clone();
    tok.set_max_length(None)?;
    let encoder = tok.inner();
    let mut chars_left = max_chars.unwrap_or(usize::MAX);
    for chunk in hone_data::TextChunks::new(files.iter().cloned(), CHUNK_BYTES) {
        let mut lines = chunk?;
        if chars_left < usize::MAX {
            truncate_chars(&mut lines, &mut chars_left);
        }
        // Line by line, in parallel: one huge encode call is slow and memory-hungry.
        let ids = lines
            .par_iter()
            .map(|line| {
                encoder
                    .encode(line.as_str(), false)
                    .map(|e| e.get_ids().to_vec())
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("cannot tokenize the corpus: {e}"))?;
        emit(&ids.concat())?;
        if chars_left == 0 {
            break;
        }
    }
    Ok(())
}
