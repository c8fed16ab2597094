//! Dataset readers for hone: labelled text tables ([`table`]), CoNLL token files for NER
//! ([`conll`]) and streamed plain-text corpora ([`corpus`]).
//!
//! Nothing here tokenizes; readers return strings plus the 1-based line each item came from,
//! and every error names the file and line so a user can find the bad row.

pub mod conll;
pub mod corpus;
mod error;
mod lines;
pub mod table;

pub use conll::{ConllOptions, Sentence, TagScheme};
pub use corpus::{
    read_lines, read_parallel, Document, DocumentMode, DocumentReader, ParallelText, TextChunks,
};
pub use error::{DataError, Result};
pub use table::{
    read_table, train_validation_split, CleanOptions, Example, LabelMap, Table, TableFormat,
    TableSpec,
};

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "hone-data-test-{}-{}-{}",
                std::process::id(),
                nanos,
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }

        /// Writes `contents` to `name` inside the directory and returns the full path.
        pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, contents).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod corpus_tests;
