//! The safetensors files hone writes: Hugging Face's `format: pt` metadata, and a CRC-32 of
//! every tensor's bytes, so that a bit flipped on disk is caught on load and named by
//! tensor. safetensors itself has no checksum; files from other tools carry none and load
//! unchecked.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use safetensors::View;

/// Metadata key: the tensors' CRC-32s as 8 hex digits each, comma-separated, in the order
/// of the tensors' names sorted.
pub const CRC_KEY: &str = "hone_crc32";

/// Bound on a header's size (safetensors' own), checked before allocating for one.
const MAX_HEADER: u64 = 100_000_000;

/// Write `tensors` to `path` atomically, with the metadata above and `extra`.
pub fn write(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    extra: HashMap<String, String>,
) -> Result<()> {
    write_views(path, tensors.iter().collect(), extra)
}

/// [`write`] for any safetensors views (the int8 writer's raw byte buffers too).
pub fn write_views<S, V>(
    path: &Path,
    mut views: Vec<(S, V)>,
    mut extra: HashMap<String, String>,
) -> Result<()>
where
    S: AsRef<str> + Ord + std::fmt::Display,
    V: View,
{
    // Sorted by name: the order the checksums are listed in.
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let crcs: Vec<String> = views
        .iter()
        .map(|(_, v)| format!("{:08x}", crc32fast::hash(&v.data())))
        .collect();
    extra.insert("format".into(), "pt".into());
    extra.insert(CRC_KEY.into(), crcs.join(","));
    crate::io::write_atomically(path, |tmp| {
        let sorted: BTreeMap<String, String> = extra.clone().into_iter().collect();
        safetensors::serialize_to_file(views, Some(extra), tmp)?;
        sort_metadata(tmp, &sorted)
    })
}

/// safetensors writes the metadata map in a `HashMap`'s random order, so the same tensors
/// would give different bytes from run to run; rewrite it, same length, with its keys sorted.
fn sort_metadata(path: &Path, sorted: &BTreeMap<String, String>) -> Result<()> {
    const PREFIX: &[u8] = b"{\"__metadata__\":";
    let ours = serde_json::to_vec(sorted)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut head = vec![0u8; 8 + PREFIX.len() + ours.len()];
    file.read_exact(&mut head)?;
    let written = &head[8 + PREFIX.len()..];
    let same_map =
        serde_json::from_slice::<BTreeMap<String, String>>(written).is_ok_and(|m| &m == sorted);
    if !head[8..].starts_with(PREFIX) || !same_map {
        bail!("unexpected safetensors header layout in {}", path.display())
    }
    file.seek(SeekFrom::Start((8 + PREFIX.len()) as u64))?;
    file.write_all(&ours)?;
    Ok(())
}

/// The header of a safetensors file: its JSON, and where the data section starts. Nothing
/// is allocated for a header longer than safetensors' bound or than the file.
pub(crate) fn read_header(file: &mut std::fs::File) -> Result<(serde_json::Value, u64)> {
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    let file_len = file.metadata()?.len();
    if len > MAX_HEADER || len > file_len.saturating_sub(8) {
        bail!("a header of {len} bytes in a file of {file_len}: not a safetensors file")
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)?;
    let header = serde_json::from_slice(&header).context("invalid JSON in header")?;
    Ok((header, 8 + len))
}

/// Check the CRC-32s [`write`] put in `path`, naming the first tensor whose bytes no
/// longer match. A file without them passes.
pub fn verify(path: &Path) -> Result<()> {
    let cannot = || format!("cannot read weights {}", path.display());
    let mut file = std::fs::File::open(path).with_context(cannot)?;
    let (header, data_start) = read_header(&mut file).with_context(cannot)?;
    let Some(list) = header["__metadata__"][CRC_KEY].as_str() else {
        return Ok(());
    };
    let crcs: Vec<&str> = list.split(',').filter(|c| !c.is_empty()).collect();
    let mut tensors: Vec<(&String, u64, u64)> = Vec::new();
    for (name, info) in header.as_object().into_iter().flatten() {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info["data_offsets"].as_array();
        let (Some(begin), Some(end)) = (
            offsets.and_then(|o| o.first()?.as_u64()),
            offsets.and_then(|o| o.get(1)?.as_u64()),
        ) else {
            bail!(
                "{}: tensor `{name}` has no valid data_offsets",
                path.display()
            )
        };
        tensors.push((name, begin, end));
    }
    tensors.sort();
    if crcs.len() != tensors.len() {
        bail!(
            "{}: {} checksums for {} tensors: the header was altered",
            path.display(),
            crcs.len(),
            tensors.len()
        )
    }
    let mut bytes = Vec::new();
    for ((name, begin, end), stored) in tensors.into_iter().zip(crcs) {
        if end < begin {
            bail!(
                "{}: tensor `{name}` has data_offsets [{begin}, {end}]",
                path.display()
            )
        }
        bytes.resize((end - begin) as usize, 0);
        file.seek(SeekFrom::Start(data_start + begin))
            .and_then(|_| file.read_exact(&mut bytes))
            .with_context(|| format!("{}: tensor `{name}` is cut short", path.display()))?;
        let found = format!("{:08x}", crc32fast::hash(&bytes));
        if found != stored {
            bail!(
                "tensor `{name}` in {} fails its checksum (crc32 {found}, written as {stored}): the file is corrupt",
                path.display()
            )
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn a_flipped_bit_is_named_by_tensor_and_other_files_pass() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("hone-crc-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("w.safetensors");
        let a = Tensor::arange(0f32, 64.0, &Device::Cpu)?;
        let b = Tensor::ones((4, 4), candle_core::DType::F32, &Device::Cpu)?;
        let tensors = HashMap::from([("b.weight".to_string(), b), ("a.weight".to_string(), a)]);
        write(&path, &tensors, HashMap::new())?;
        verify(&path)?;
        // The same tensors give the same bytes (the metadata map's order is fixed).
        let first = std::fs::read(&path)?;
        for _ in 0..4 {
            write(
                &path,
                &tensors,
                HashMap::from([("x".into(), "1".into()), ("y".into(), "2".into())]),
            )?;
            let with_extra = std::fs::read(&path)?;
            write(&path, &tensors, HashMap::new())?;
            assert_eq!(std::fs::read(&path)?, first);
            assert_ne!(with_extra, first);
        }
        // Hugging Face's loaders ask for format = pt.
        let bytes = std::fs::read(&path)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)?;
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        // One bit of `b.weight`'s data: the last bytes of the file (names sort a, b).
        let mut flipped = bytes.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x10;
        std::fs::write(&path, &flipped)?;
        let err = verify(&path).unwrap_err().to_string();
        assert!(
            err.contains("`b.weight`") && err.contains("w.safetensors"),
            "{err}"
        );
        // A file written without checksums (candle's own writer) passes unchecked.
        candle_core::safetensors::save(&tensors, &path)?;
        verify(&path)?;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
