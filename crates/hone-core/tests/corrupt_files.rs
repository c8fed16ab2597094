//! Corrupt and mismatched model directories: each is refused with one error that names
//! the file and the tensor or field at fault (the messages RELIABILITY.md lists).

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::*;
use hone_core::model::{Model, ModelDir, Net};

/// A copy of the tiny GPT-2 fixture with the byte-level tokenizer of the GPT-2 classifier
/// fixture cut to nothing: `files` are written over it.
fn tiny_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-corrupt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-gpt2").join(f), d.join(f)).unwrap();
    }
    d
}

fn tokenizer_error(dir: &Path) -> String {
    match ModelDir::open(dir).unwrap().tokenizer() {
        Ok(_) => panic!("the tokenizer of {} loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn load_error(dir: &Path) -> String {
    let err = match Model::<Net>::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    };
    format!("{err:#}")
}

fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_truncated_or_damaged_weights_file_is_named() {
    let dir = tiny_dir("truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");

    // A flipped bit in the header: its JSON no longer parses.
    let mut flipped = bytes.clone();
    flipped[12] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");

    // A header that claims more bytes than the file has.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn a_missing_or_misshapen_tensor_is_named() {
    let dir = tiny_dir("missing");
    let gone = "transformer.h.1.mlp.c_fc.weight";
    rewrite_weights(&dir, |t| t.retain(|(n, ..)| n != gone));
    let err = load_error(&dir);
    assert!(
        err.contains("h.1.mlp.c_fc.weight") && err.contains("missing"),
        "{err}"
    );

    let dir = tiny_dir("shape");
    rewrite_weights(&dir, |t| {
        let w = t
            .iter_mut()
            .find(|(n, ..)| n == "transformer.h.0.attn.c_proj.weight")
            .unwrap();
        let rows = w.2[0];
        w.2 = vec![rows / 2, w.2[1] * 2];
    });
    let err = load_error(&dir);
    assert!(
        err.contains("h.0.attn.c_proj.weight") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_named() {
    let dir = tiny_dir("config");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["n_embd"] = serde_json::json!(config["n_embd"].as_u64().unwrap() * 2);
    std::fs::write(&path, config.to_string()).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("has shape") && err.contains("the model expects"),
        "{err}"
    );

    std::fs::write(&path, "{\"n_embd\": 32,").unwrap();
    let err = load_error(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn a_tokenizer_past_the_vocabulary_or_unreadable_is_named() {
    // The classifier fixture's tokenizer has 512 ids; the tiny model embeds 300.
    let dir = tiny_dir("tokenizer");
    std::fs::copy(
        fixture("gpt2-seqcls").join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let err = tokenizer_error(&dir);
    assert!(
        err.contains("512 ids") && err.contains("has 300") && err.contains("config.json"),
        "{err}"
    );

    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 5}").unwrap();
    let err = tokenizer_error(&dir);
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[test]
fn a_bit_flipped_in_the_data_of_weights_hone_wrote_is_named_by_tensor() {
    // Saved by hone (with a CRC-32 per tensor), then one bit of one tensor's data flipped:
    // without the checksum this loads with one wrong value.
    let model = Model::<Net>::load(&fixture("tiny-gpt2"), &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("hone-corrupt-crc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    model.save(&dir).unwrap();
    assert!(Model::<Net>::load(&dir, &Device::Cpu).is_ok());
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let name = "transformer.h.1.mlp.c_fc.weight";
    let begin = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[8 + header_len + begin + 101] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains(&format!("`{name}`"))
            && err.contains("checksum")
            && err.contains("model.safetensors"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
