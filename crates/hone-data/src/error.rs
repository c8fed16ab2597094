//! The crate-wide error type.
//!
//! Every variant that comes from a file carries the path and the 1-based line number, so the
//! message alone is enough for a user to open the file and find the bad row.

use std::path::PathBuf;

use crate::conll::TagScheme;

/// Shorthand for results in this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading or writing a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not valid UTF-8.
    #[error("{}:{line}: invalid UTF-8", path.display())]
    InvalidUtf8 { path: PathBuf, line: usize },
    /// The file has no header row (or, for JSONL, no object at all).
    #[error("{}: file is empty", path.display())]
    EmptyFile { path: PathBuf },
    /// The file has a header but not a single data row.
    #[error("{}: no data rows after the header", path.display())]
    NoRows { path: PathBuf },
    /// A table row has a different number of fields than the header.
    #[error("{}:{line}: expected {expected} fields, found {found}", path.display())]
    FieldCount {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },
    /// A text (or label) cell is empty or only whitespace.
    #[error("{}:{line}: column {column:?} is empty", path.display())]
    EmptyField {
        path: PathBuf,
        line: usize,
        column: String,
    },
    /// A requested column is not in the header.
    #[error("{}:{line}: no column {column:?}; available columns: {}", path.display(), available.join(", "))]
    MissingColumn {
        path: PathBuf,
        line: usize,
        column: String,
        available: Vec<String>,
    },
    /// A malformed row: bad CSV quoting, invalid JSON, a value of the wrong type, ...
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A label seen at evaluation time that the training labels do not contain.
    #[error("unknown label {label:?}; known labels: {}", known.join(", "))]
    UnknownLabel { label: String, known: Vec<String> },
    /// Same as [`DataError::UnknownLabel`], located in a file.
    #[error("{}:{line}: unknown label {label:?}; known labels: {}", path.display(), known.join(", "))]
    UnknownLabelAt {
        path: PathBuf,
        line: usize,
        label: String,
        known: Vec<String>,
    },
    /// A CoNLL line has fewer columns than needed, or a different count than earlier lines.
    #[error("{}:{line}: expected {expected}, found {found}", path.display())]
    ColumnCount {
        path: PathBuf,
        line: usize,
        expected: String,
        found: usize,
    },
    /// A tag in a file that does not belong to the expected scheme.
    #[error("{}:{line}: tag {tag:?} is not a valid {scheme} tag", path.display())]
    InvalidTagAt {
        path: PathBuf,
        line: usize,
        tag: String,
        scheme: TagScheme,
    },
    /// A tag sequence (not from a file) that does not fit the scheme.
    #[error("tag {tag:?} at position {index} is not valid {scheme}: {reason}")]
    InvalidTag {
        index: usize,
        tag: String,
        scheme: TagScheme,
        reason: String,
    },
    /// Tokens and tags of one sentence differ in length.
    #[error("{}:{line}: {tokens} tokens but {tags} tags", path.display())]
    LengthMismatch {
        path: PathBuf,
        line: usize,
        tokens: usize,
        tags: usize,
    },
    /// A bad argument or inconsistent input that has no file position.
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        DataError::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
