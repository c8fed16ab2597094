//! `hone export`: a model directory becomes one ONNX file, and a request that cannot be
//! met is a one-line error that writes nothing.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::*;

fn hone_export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("export")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn export_writes_a_graph_or_a_one_line_error_and_nothing() {
    let dir = std::env::temp_dir().join(format!("hone-export-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gpt2 = fixture("tiny-gpt2");
    let out_path = dir.join("gpt2.onnx");
    let out = hone_export(&[
        gpt2.to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--opset",
        "18",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The graph holds the weights: at least the float32 token embedding table [300, 64].
    let size = std::fs::metadata(&out_path).unwrap().len();
    assert!(size > 4 * 300 * 64, "{size} bytes");

    let refused = dir.join("refused.onnx");
    for (model, opset, says) in [
        (gpt2.clone(), "16", "opset 16"),
        (
            fixture("tiny-marian"),
            "17",
            "MarianMTModel has no ONNX exporter",
        ),
        (dir.join("no-such-model"), "17", "no-such-model"),
    ] {
        let out = hone_export(&[
            model.to_str().unwrap(),
            "--output",
            refused.to_str().unwrap(),
            "--opset",
            opset,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            !refused.exists(),
            "a refused export wrote {}",
            refused.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
