//! `hone translate` on the tiny random Marian: greedy and beam 3 print the texts
//! Transformers' `generate` + `decode(skip_special_tokens=True)` gave, a line per line.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn translate(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("translate")
        .arg(fixture("tiny-marian"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn texts(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn translate_reproduces_transformers_generate() {
    let fx = read_fixture("tiny_marian_expected.json");
    let src = texts(&fx["src"]);
    // An empty line in the input stays an empty line in the output.
    let input = format!("{}\n{}\n\n{}\n{}\n", src[0], src[1], src[2], src[3]);
    for (beam, key) in [("1", "greedy_text"), ("3", "beam3_text")] {
        let out = translate(
            &[
                "--beam",
                beam,
                "--max-new-tokens",
                "12",
                "--batch-size",
                "3",
            ],
            &input,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(got.remove(2), "", "the empty line");
        assert_eq!(got, texts(&fx[key]), "--beam {beam}");
    }
}

#[test]
fn translate_refuses_a_classifier_and_a_too_long_request() {
    let out = translate(&["--max-new-tokens", "0"], "Ein Mann.\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_new_tokens"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("translate")
        .arg(fixture("gpt2-seqcls"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sequence-to-sequence"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
