//! Line-by-line reading shared by every reader: counts lines, checks UTF-8 per line so the
//! error can name it, and strips `\n`, `\r\n` and a leading byte-order mark.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

pub(crate) struct LineReader<R> {
    reader: R,
    path: PathBuf,
    /// 1-based number of the line most recently returned.
    line: usize,
    buf: Vec<u8>,
}

impl LineReader<BufReader<File>> {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        Ok(LineReader::new(BufReader::new(file), path))
    }
}

impl<R: BufRead> LineReader<R> {
    pub(crate) fn new(reader: R, path: &Path) -> Self {
        LineReader {
            reader,
            path: path.to_path_buf(),
            line: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next line; `None` at end of file. Returns the line's 1-based number with it.
    pub(crate) fn next_line(&mut self) -> Option<Result<(usize, String)>> {
        self.read(true)
    }

    /// Like [`Self::next_line`] but keeps the line ending, so concatenating the lines gives
    /// back the file's text (less a leading byte-order mark).
    pub(crate) fn next_line_with_ending(&mut self) -> Option<Result<(usize, String)>> {
        self.read(false)
    }

    fn read(&mut self, strip_ending: bool) -> Option<Result<(usize, String)>> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(DataError::io(&self.path, e))),
        }
        self.line += 1;
        let mut bytes: &[u8] = &self.buf;
        if strip_ending {
            if let Some(rest) = bytes.strip_suffix(b"\n") {
                bytes = rest;
            }
            if let Some(rest) = bytes.strip_suffix(b"\r") {
                bytes = rest;
            }
        }
        if self.line == 1 {
            // Editors on Windows (and Excel's "CSV UTF-8") prepend a BOM; it is not data.
            if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
                bytes = rest;
            }
        }
        Some(match std::str::from_utf8(bytes) {
            Ok(s) => Ok((self.line, s.to_owned())),
            Err(_) => Err(DataError::InvalidUtf8 {
                path: self.path.clone(),
                line: self.line,
            }),
        })
    }
}
