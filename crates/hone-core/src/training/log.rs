//! `metrics.jsonl`: one JSON object per log line or evaluation, appended as training goes.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An append-only JSON-lines metrics file.
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    pub fn new(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Append one record and flush it, so a crash loses nothing already logged.
    pub fn append(&self, record: &serde_json::Value) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        writeln!(f, "{record}").with_context(|| format!("cannot write {}", self.path.display()))?;
        f.flush()?;
        Ok(())
    }

    /// Drop records logged after `step` (a resumed run logs those steps again).
    pub fn truncate_after(&self, step: usize) -> Result<()> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
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
        crate::io::write_bytes_atomically(&self.path, kept.as_bytes())
    }
}
