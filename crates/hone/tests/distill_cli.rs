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

/// Token classification: a 2-layer student of a CoNLL-2003 teacher, from cached logits (one
/// row per labelled piece) and from the live teacher with the hidden-state and attention
/// terms on.
#[test]
fn a_ner_student_learns_from_the_teachers_labelled_pieces() {
    let tmp = tempdir("distill-ner");
    let data = shared_dir().join("data/conll2003");
    let run = |args: &[&str], sets: &[String]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hone"));
        c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(args)
            .args(["--log", "info"]);
        for kv in [
            format!("model.model_name_or_path={:?}", minilm_dir()),
            format!("data.train_file={:?}", data.join("train.txt")),
            // Validation from the training sentences: 24 of them lack some of its tags.
            format!("data.validation_file={:?}", data.join("train.txt")),
            "data.tag_scheme=\"IOB2\"".into(),
            "data.max_train_samples=24".into(),
            "data.max_eval_samples=8".into(),
            "data.max_seq_length=32".into(),
            "data.stride=8".into(),
            "per_device_train_batch_size=8".into(),
            "max_steps=3".into(),
            "logging_steps=1".into(),
            "progress=false".into(),
            "eval_strategy=\"no\"".into(),
            "metric_for_best_model=\"f1\"".into(),
            "load_best_model_at_end=false".into(),
        ]
        .into_iter()
        .chain(sets.iter().cloned())
        {
            c.args(["--set", &kv]);
        }
        ok(&c.output().unwrap())
    };
    let teacher = tmp.join("teacher");
    run(
        &["finetune", "--config", "examples/conll2003.toml"],
        &[format!("output_dir={teacher:?}")],
    );
    let distill = |out: &Path, extra: &[String]| {
        let mut sets = vec![
            format!("output_dir={out:?}"),
            format!("distill.teacher={teacher:?}"),
            "distill.student_layers=[0, 3]".into(),
        ];
        sets.extend_from_slice(extra);
        run(&["distill", "--config", "examples/conll2003.toml"], &sets)
    };
    let cache = tmp.join("ner-logits.safetensors");
    let student = tmp.join("student");
    distill(
        &student,
        &[format!("distill.teacher_logits_cache={cache:?}")],
    );
    assert_eq!(config(&student)["num_hidden_layers"], 2);
    // One row of tag logits per labelled piece: the first piece of each word.
    let t = candle_core::safetensors::load(&cache, &candle_core::Device::Cpu).unwrap();
    let words: usize = std::fs::read_to_string(data.join("train.txt"))
        .unwrap()
        .split("\n\n")
        .filter(|s| {
            s.lines()
                .any(|l| !l.starts_with("-DOCSTART-") && !l.trim().is_empty())
        })
        .take(24)
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
        .sum();
    let dims = t["teacher_logits"].dims().to_vec();
    let tags = config(&teacher)["id2label"].as_object().unwrap().len();
    assert_eq!(dims[1], tags, "{dims:?}");
    // Windows of 32 pieces with a stride of 8 repeat some words' pieces: at least one row
    // per word.
    assert!(dims[0] >= words, "{dims:?} rows for {words} words");
    // The cache's rows line up with the live teacher's: the same student either way (up to
    // the summation order of batches padded to other lengths).
    let plain = tmp.join("student-plain");
    distill(&plain, &[]);
    let weights = |dir: &Path| {
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
    };
    let (a, b) = (weights(&student), weights(&plain));
    for (name, x) in &a {
        let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(max_abs_diff(&x, &y) < 1e-5, "{name}");
    }
    let live = tmp.join("student-live");
    let log = distill(
        &live,
        &[
            "distill.hidden_weight=1.0".into(),
            "distill.hidden_layers=[[1, 1], [2, 6]]".into(),
            "distill.attention_weight=1.0".into(),
            "distill.attention_layers=[[0, 0], [1, 5]]".into(),
        ],
    );
    assert!(!log.contains("computing the teacher's logits"), "{log}");
    let losses: Vec<f64> = std::fs::read_to_string(live.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
        .collect();
    assert_eq!(losses.len(), 3);
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The hidden-state and attention terms need the teacher at every step: a cache beside them
/// is refused before anything is read, and a pair without a weight's layers too.
#[test]
fn intermediate_terms_refuse_a_logits_cache() {
    let out = hone(
        &["distill", "--config", "examples/sst2-distill.toml"],
        &[
            "distill.hidden_weight=1.0".into(),
            "distill.hidden_layers=[[1, 1]]".into(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("teacher_logits_cache"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = hone(
        &["distill", "--config", "examples/sst2-distill.toml"],
        &["distill.attention_weight=1.0".into()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attention_layers"), "{err}");
}
