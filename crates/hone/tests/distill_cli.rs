//! `hone distill` (issue 21) end to end on a tiny SST-2 run: a teacher fine-tuned for a few
//! steps, a 2-layer student made of its layers 0 and 3, trained against the teacher's cached
//! logits; the cache is reused by the next run; a recipe without [distill] is refused.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn hone(args: &[&str], sets: &[String]) -> Output {
    let data = shared_dir().join("data/sst2");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hone"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(args);
    for kv in [
        format!("data.train_file={:?}", data.join("train.tsv")),
        format!("data.validation_file={:?}", data.join("validation.tsv")),
        "data.max_train_samples=40".into(),
        "data.max_eval_samples=16".into(),
        "data.max_seq_length=16".into(),
        "per_device_train_batch_size=8".into(),
        "max_steps=4".into(),
        "logging_steps=1".into(),
        "progress=false".into(),
    ]
    .into_iter()
    .chain(sets.iter().cloned())
    {
        c.args(["--set", &kv]);
    }
    c.output().unwrap()
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn a_two_layer_student_learns_from_cached_teacher_logits() {
    let tmp = tempdir("distill");
    let teacher = tmp.join("teacher");
    ok(&hone(
        &[
            "finetune",
            "--config",
            "examples/sst2.toml",
            "--log",
            "warn",
        ],
        &[format!("output_dir={teacher:?}")],
    ));
    let cache = tmp.join("teacher-logits.safetensors");
    let distill = |out: &Path| {
        hone(
            &[
                "distill",
                "--config",
                "examples/sst2-distill.toml",
                "--log",
                "info",
            ],
            &[
                format!("output_dir={out:?}"),
                format!("distill.teacher={teacher:?}"),
                "distill.student_layers=[0, 3]".into(),
                format!("distill.teacher_logits_cache={cache:?}"),
            ],
        )
    };
    let student = tmp.join("student");
    let log = ok(&distill(&student));
    assert!(
        log.contains("computing the teacher's logits on 40"),
        "{log}"
    );
    assert_eq!(config(&student)["num_hidden_layers"], 2);
    assert_eq!(config(&teacher)["num_hidden_layers"], 6);
    let losses: Vec<f64> = std::fs::read_to_string(student.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0));
    // The saved recipe is the one written: the student's layers, not a temporary directory.
    let recipe = std::fs::read_to_string(student.join("recipe.toml")).unwrap();
    assert!(
        recipe.contains("student_layers = [\n    0,\n    3,\n]")
            || recipe.contains("student_layers = [0, 3]"),
        "{recipe}"
    );
    // The cache holds one row of 2 logits per training sentence and is reused.
    let t = candle_core::safetensors::load(&cache, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["teacher_logits"].dims(), &[40, 2]);
    let log = ok(&distill(&tmp.join("student-again")));
    assert!(log.contains("teacher logits read from"), "{log}");
    assert_eq!(
        std::fs::read(student.join("model.safetensors")).unwrap(),
        std::fs::read(tmp.join("student-again/model.safetensors")).unwrap(),
        "the cached logits give the same student"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn distill_needs_a_distill_section() {
    let out = hone(&["distill", "--config", "examples/sst2.toml"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[distill]"), "{err}");
}
