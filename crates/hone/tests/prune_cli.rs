//! `hone prune` (issue 21) end to end: a classifier fine-tuned for a few steps loses a
//! quarter of its heads and feed-forward neurons by importance on 32 calibration sentences;
//! the result is a smaller directory that `hone eval` reads; bad fractions are refused.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

fn hone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_quarter_of_heads_and_neurons_go_and_the_model_still_evaluates() {
    let tmp = std::env::temp_dir().join(format!("hone-prune-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let data = shared_dir().join("data/sst2");
    let (train, valid) = (data.join("train.tsv"), data.join("validation.tsv"));
    let teacher = tmp.join("classifier");
    let sets = [
        format!("data.train_file={train:?}"),
        format!("data.validation_file={valid:?}"),
        format!("output_dir={teacher:?}"),
        "data.max_train_samples=32".into(),
        "data.max_eval_samples=16".into(),
        "data.max_seq_length=16".into(),
        "max_steps=2".into(),
        "progress=false".into(),
    ];
    let mut args = vec![
        "--log",
        "warn",
        "finetune",
        "--config",
        "examples/sst2.toml",
    ];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let out = hone(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pruned: PathBuf = tmp.join("pruned");
    let (t, p, tr) = (
        teacher.to_str().unwrap(),
        pruned.to_str().unwrap(),
        train.to_str().unwrap(),
    );
    let run = |heads: &str| {
        hone(&[
            "--log",
            "warn",
            "prune",
            t,
            "--heads",
            heads,
            "--ffn",
            "0.25",
            "--output",
            p,
            "--data",
            tr,
            "--text-column",
            "sentence",
            "--samples",
            "32",
            "--batch-size",
            "16",
        ])
    };
    let out = run("0.25");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pruned.join("config.json")).unwrap())
            .unwrap();
    // 6 layers x 12 heads = 72; a quarter is 18. 1,536 neurons less a quarter: 1,152.
    let removed: usize = config["pruned_heads"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert_eq!(removed, 18);
    assert_eq!(config["intermediate_size"], 1152);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pruned.join("pruning.json")).unwrap())
            .unwrap();
    assert_eq!(report["calibration_examples"], 32);
    let size = |d: &PathBuf| {
        std::fs::metadata(d.join("model.safetensors"))
            .unwrap()
            .len()
    };
    assert!(
        size(&pruned) < size(&teacher) * 9 / 10,
        "the pruned weights are smaller"
    );

    // 32 validation sentences (and the header).
    let small = tmp.join("valid.tsv");
    let text = std::fs::read_to_string(&valid).unwrap();
    std::fs::write(
        &small,
        text.lines().take(33).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let out = hone(&[
        "--log",
        "warn",
        "eval",
        p,
        "--data",
        small.to_str().unwrap(),
        "--text-column",
        "sentence",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accuracy"));

    // With --recover, the pruned model is fine-tuned briefly and stays pruned.
    let pruned2 = tmp.join("pruned2");
    let sets: Vec<String> = [
        format!("data.train_file={train:?}"),
        format!("data.validation_file={small:?}"),
        "data.max_train_samples=32".into(),
        "data.max_seq_length=16".into(),
        "max_steps=2".into(),
        "progress=false".into(),
    ]
    .to_vec();
    let mut args = vec![
        "--log",
        "warn",
        "prune",
        t,
        "--heads",
        "0.25",
        "--output",
        pruned2.to_str().unwrap(),
        "--data",
        tr,
        "--text-column",
        "sentence",
        "--samples",
        "16",
        "--recover",
        "examples/sst2.toml",
    ];
    for s in &sets {
        args.extend(["--recover-set", s.as_str()]);
    }
    let out = hone(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recovered = tmp.join("pruned2-recovered");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(recovered.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["pruned_heads"],
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(pruned2.join("config.json")).unwrap()
        )
        .unwrap()["pruned_heads"]
    );
    assert!(recovered.join("metrics.jsonl").is_file());

    // The output exists now: refused; a fraction of 1 is refused before anything is written.
    assert!(!run("0.25").status.success());
    let err = hone(&[
        "prune",
        t,
        "--heads",
        "1.0",
        "--output",
        tmp.join("x").to_str().unwrap(),
        "--data",
        tr,
        "--text-column",
        "sentence",
        "--samples",
        "8",
    ]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("--heads"));
    assert!(!tmp.join("x").exists());
    std::fs::remove_dir_all(&tmp).unwrap();
}
