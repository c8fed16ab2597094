//! `hone embed` end to end: the CLI prints what the library computes, and user mistakes
//! get one clear error line and a non-zero exit.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::process::Command;

use candle_core::Device;
use common::*;
use hone_core::inference::embed::{embed_texts, Pooling};
use hone_core::model::{Encoder, Model};
use hone_core::tokenization::TextTokenizer;

fn hone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hone"))
}

#[test]
fn embed_cli_equals_library() {
    let dir = minilm_dir();
    let texts = [
        "The movie was absolutely wonderful!",
        "Padding must not matter.",
    ];
    let out = hone()
        .arg("embed")
        .arg(&dir)
        .args(texts)
        .args(["--pooling", "mean", "--max-length", "128"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);

    let model = Model::load(&dir, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn Encoder>()
        .unwrap();
    let mut tok = TextTokenizer::from_dir(&dir).unwrap();
    tok.set_max_length(Some(128)).unwrap();
    // One at a time in the library, batched (padded) in the CLI: padding must not matter.
    for (line, text) in lines.iter().zip(texts) {
        let lib = embed_texts(&model, &tok, &[text.to_string()], Pooling::Mean, 1).unwrap();
        assert_eq!(line["text"], text);
        let ids: Vec<u32> = line["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, lib[0].input_ids);
        let d = max_abs_diff(&f32s(&line["embedding"]), &lib[0].embedding);
        assert!(d < 1e-5, "CLI and library embeddings differ by {d}");
    }
}

#[test]
fn embed_reads_stdin_when_no_text_is_given() {
    use std::io::Write;
    let mut child = hone()
        .arg("embed")
        .arg(minilm_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"first line\nsecond line\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let texts: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, ["first line", "second line"]);
}

#[test]
fn user_mistakes_get_one_clear_line() {
    let out = hone()
        .args(["info", "/definitely/not/here"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/definitely/not/here"), "{err}");

    // A directory whose weights are corrupt names the file.
    let dir = std::env::temp_dir().join(format!("hone-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("tiny-gpt2/config.json"), dir.join("config.json")).unwrap();
    std::fs::write(dir.join("model.safetensors"), b"not a safetensors file").unwrap();
    let out = hone().arg("info").arg(&dir).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_tensor_shape_names_tensor_and_both_shapes() {
    let dir = std::env::temp_dir().join(format!("hone-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = std::fs::read_to_string(fixture("tiny-gpt2/config.json")).unwrap();
    // Claim a larger vocabulary than the weights have.
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"vocab_size\": 300", "\"vocab_size\": 301"),
    )
    .unwrap();
    std::fs::copy(
        fixture("tiny-gpt2/model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let err = match Model::load(&dir, &Device::Cpu) {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("a shape mismatch must not load"),
    };
    assert!(err.contains("transformer.wte.weight"), "{err}");
    assert!(
        err.contains("[300, 64]") && err.contains("[301, 64]"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
