//! LoRA through the command line: `examples/sst2-lora.toml` on an SST-2 slice writes a
//! PEFT adapter that `eval` and `predict` take (with `--base` when the base is elsewhere),
//! `hone merge` folds it into a plain model with the same predictions, and PEFT's own
//! adapter (the fixture) predicts its reference probabilities.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn hone_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(args)
        .current_dir(dir)
        .env("HONE_SHARED", shared_dir())
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Probabilities of label `1` in `hone predict`'s JSON lines.
fn p1(lines: &str, label: &str) -> Vec<f64> {
    lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["probabilities"][label].as_f64().unwrap()
        })
        .collect()
}

#[test]
fn lora_recipe_adapter_predicts_merges_and_moves() {
    let tmp = std::env::temp_dir().join(format!("hone-lora-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join("adapter");
    let out_s = out.to_str().unwrap();
    let set = |k: &str, v: &str| format!("{k}={v}");
    let overrides = [
        set("output_dir", out_s),
        set(
            "data.train_file",
            shared_dir().join("data/sst2/train.tsv").to_str().unwrap(),
        ),
        set(
            "data.validation_file",
            shared_dir()
                .join("data/sst2/validation.tsv")
                .to_str()
                .unwrap(),
        ),
        set("data.max_train_samples", "160"),
        set("data.max_eval_samples", "32"),
        set("data.max_seq_length", "48"),
        set("num_train_epochs", "1"),
        set("progress", "false"),
    ];
    let mut args = vec!["finetune", "--config", "examples/sst2-lora.toml"];
    for o in &overrides {
        args.extend(["--set", o.as_str()]);
    }
    let summary = ok(hone_in(&repo(), &args), "finetune");
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    // PEFT's count for r 8 on query/value plus the classifier.
    assert_eq!(summary["trainable_params"], 74498);
    assert_eq!(summary["total_params"], 22787714);
    assert!(summary["peak_rss_mb"].as_f64().unwrap() > 0.0);
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }

    let texts = tmp.join("texts.txt");
    std::fs::write(&texts, "a gripping , moving film\ndull and lifeless\n").unwrap();
    let texts_s = texts.to_str().unwrap();
    let adapter = ok(
        hone_in(&repo(), &["predict", out_s, "--input", texts_s]),
        "predict on the adapter",
    );
    // From elsewhere the base's relative path does not resolve: said, and --base fixes it.
    let err = hone_in(&tmp, &["predict", out_s, "--input", texts_s]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("--base") && err.lines().count() == 1, "{err}");
    let base = repo().join("models/all-MiniLM-L6-v2");
    let moved = ok(
        hone_in(
            &tmp,
            &[
                "predict",
                out_s,
                "--base",
                base.to_str().unwrap(),
                "--input",
                texts_s,
            ],
        ),
        "predict with --base",
    );
    assert_eq!(adapter, moved);

    let merged = tmp.join("merged");
    ok(
        hone_in(
            &repo(),
            &["merge", out_s, "--output", merged.to_str().unwrap()],
        ),
        "merge",
    );
    assert!(merged.join("model.safetensors").is_file() && merged.join("tokenizer.json").is_file());
    let plain = ok(
        hone_in(
            &repo(),
            &["predict", merged.to_str().unwrap(), "--input", texts_s],
        ),
        "predict on the merged model",
    );
    for (a, b) in p1(&adapter, "1").iter().zip(p1(&plain, "1")) {
        assert!((a - b).abs() < 1e-5, "adapter {a} vs merged {b}");
    }
    let report = ok(
        hone_in(
            &repo(),
            &[
                "eval",
                out_s,
                "--data",
                shared_dir()
                    .join("data/sst2/validation.tsv")
                    .to_str()
                    .unwrap(),
                "--text-column",
                "sentence",
                "--json",
            ],
        ),
        "eval on the adapter",
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert!(report["accuracy"].as_f64().unwrap() > 0.0);
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn peft_fixture_predicts_its_reference_and_a_bad_merge_writes_nothing() {
    let fx = read_fixture("lora_minilm_expected.json");
    let tmp = std::env::temp_dir().join(format!("hone-lora-peft-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let texts = tmp.join("texts.txt");
    let lines: Vec<&str> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    std::fs::write(&texts, lines.join("\n") + "\n").unwrap();
    // The adapter names its base as `models/all-MiniLM-L6-v2`: from the repository root.
    let out = ok(
        hone_in(
            &repo(),
            &[
                "predict",
                fixture("lora-minilm-sst2").to_str().unwrap(),
                "--input",
                texts.to_str().unwrap(),
            ],
        ),
        "predict with PEFT's adapter",
    );
    let want: Vec<f64> = fx["probabilities_unmerged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_f64().unwrap())
        .collect();
    for (got, want) in p1(&out, "LABEL_1").iter().zip(&want) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    // An adapter with a rank its tensors do not have: one line naming the tensor, and
    // the output directory is never created.
    let bad = tmp.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let src = fixture("lora-minilm-sst2");
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        bad.join("adapter_model.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(src.join("adapter_config.json"))
        .unwrap()
        .replace("\"r\": 8", "\"r\": 16");
    std::fs::write(bad.join("adapter_config.json"), cfg).unwrap();
    let merged = tmp.join("merged");
    let err = hone_in(
        &repo(),
        &[
            "merge",
            bad.to_str().unwrap(),
            "--output",
            merged.to_str().unwrap(),
        ],
    );
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("lora_A.weight") && err.contains("[16, 384]") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!merged.exists(), "nothing is written");
    std::fs::remove_dir_all(&tmp).unwrap();
}
