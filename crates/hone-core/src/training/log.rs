//! `metrics.jsonl`: one JSON object per log line or evaluation, appended as training goes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An append-only JSON-lines metrics file.
pub struct MetricsLog {
    /// None on a rank that does not write (data-parallel ranks other than 0).
    path: Option<PathBuf>,
}

impl MetricsLog {
    pub fn new(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(Self {
            path: Some(path.to_path_buf()),
        })
    }

    /// A log that writes nothing.
    pub fn disabled() -> Self {
        Self { path: None }
    }

    /// Append one record and flush it, so a crash loses nothing already logged.
    pub fn append(&self, record: &serde_json::Value) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{record}").with_context(|| format!("cannot write {}", path.display()))?;
        f.flush()?;
        Ok(())
    }

    /// Drop records logged after `step` (a resumed run logs those steps again).
    pub fn truncate_after(&self, step: usize) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_none_or(|s| s as usize <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        crate::io::write_bytes_atomically(path, kept.as_bytes())
    }
}
