//! File helpers shared by every room: atomic writes, JSON files with clear errors.

pub mod safetensors_file;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Write `path` by letting `write` fill a temporary file beside it, then renaming it into
/// place, so a crash never leaves a half-written file where a good one was.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let file_name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = write(&tmp).and_then(|()| {
        fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Fill a new directory `path` by letting `fill` write into a temporary one beside it, then
/// renaming it into place: a crash leaves no directory at `path`, never a half-filled one.
/// `path` must not exist or be empty; a temporary directory a killed run left is removed.
pub fn write_dir_atomically(path: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .context("path has no directory name")?
        .to_string_lossy();
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = parent.join(format!(".{name}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = fill(&tmp).and_then(|()| {
        if path.exists() {
            // Empty (the caller checked): rename cannot replace a directory.
            fs::remove_dir(path).with_context(|| format!("cannot replace {}", path.display()))?;
        }
        fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Write bytes atomically.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| fs::write(tmp, bytes).map_err(Into::into))
}

/// Serialise `value` as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_bytes_atomically(path, text.as_bytes())
}

/// Read and parse a JSON file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON for this", path.display()))
}
