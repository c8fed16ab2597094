//! `hone sweep` (issue 21): an ASHA sweep of 3 tiny SST-2 trials runs each to its first rung,
//! promotes the best (resumed from its checkpoint, so its log has every update once), and
//! writes sweep.jsonl, sweep.png and best.toml, a recipe that loads; a sweep naming a key no
//! recipe has fails before anything is written.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn sweep_file(dir: &Path, extra_parameter: &str) -> PathBuf {
    let data = shared_dir().join("data/sst2");
    let text = format!(
        r#"
recipe = "examples/sst2.toml"
output_dir = {out:?}
method = "asha"
num_trials = 3
metric = "eval_accuracy"
direction = "max"
seed = 5
overrides = [
  'data.train_file="{train}"',
  'data.validation_file="{valid}"',
  "data.max_train_samples=48",
  "data.max_eval_samples=32",
  "data.max_seq_length=16",
  "per_device_train_batch_size=8",
  "logging_steps=1",
]

[asha]
min_resource = 2
max_resource = 6
reduction_factor = 3

[parameters]
learning_rate = {{ values = [1e-6, 2e-4, 5e-4] }}
{extra_parameter}
"#,
        out = dir.join("sweep").display().to_string(),
        train = data.join("train.tsv").display(),
        valid = data.join("validation.tsv").display(),
    );
    let path = dir.join("sweep.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn hone_sweep(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args(["--log", "warn", "sweep", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn asha_promotes_the_best_first_rung_trial_and_resumes_it() {
    let tmp = tempdir("sweep");
    let out = hone_sweep(&sweep_file(&tmp, ""));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tmp.join("sweep");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("sweep.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 3 trials to rung 0 (2 updates); of 3 done, the top 1 goes to rung 1 (6 updates);
    // rung 1 then has 1 done, whose top third is nobody: 4 processes.
    assert_eq!(records.len(), 4, "{records:?}");
    let rung0: Vec<&serde_json::Value> = records.iter().filter(|r| r["rung"] == 0).collect();
    assert_eq!(rung0.len(), 3);
    assert!(rung0.iter().all(|r| r["updates"] == 2));
    let promoted = records.iter().find(|r| r["rung"] == 1).unwrap();
    assert_eq!(promoted["updates"], 6);
    let best0 = rung0
        .iter()
        .map(|r| (r["metric"].as_f64().unwrap(), r["trial"].as_u64().unwrap()))
        .fold(None::<(f64, u64)>, |best, (m, t)| match best {
            Some((bm, _)) if bm >= m => best,
            _ => Some((m, t)),
        })
        .unwrap();
    assert_eq!(
        promoted["trial"].as_u64(),
        Some(best0.1),
        "the best of rung 0 is promoted"
    );

    // The promoted trial was resumed: every update logged once, one evaluation at the end
    // of each rung (2 and 6).
    let trial_dir = PathBuf::from(promoted["output_dir"].as_str().unwrap());
    let text = std::fs::read_to_string(trial_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps = |key: &str| -> Vec<u64> {
        lines
            .iter()
            .filter(|v| v.get(key).is_some())
            .map(|v| v["step"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(steps("loss"), (1..=6).collect::<Vec<_>>());
    assert_eq!(steps("eval_accuracy"), vec![2, 6]);
    assert_eq!(
        promoted["metric"].as_f64(),
        lines.last().unwrap()["eval_accuracy"].as_f64()
    );
    // Trials that stopped at rung 0 went no further.
    for r in rung0.iter().filter(|r| r["trial"] != promoted["trial"]) {
        let d = PathBuf::from(r["output_dir"].as_str().unwrap());
        assert!(
            !d.join("model.safetensors").exists(),
            "a stopped trial has no final model"
        );
    }

    // best.toml is the promoted trial's recipe: it loads, and names that trial's values.
    let best = std::fs::read_to_string(dir.join("best.toml")).unwrap();
    let recipe: toml::Table = toml::from_str(&best).unwrap();
    assert_eq!(recipe["training"]["max_steps"].as_integer(), Some(6));
    let lr = promoted["params"]["learning_rate"].as_f64().unwrap();
    assert_eq!(recipe["training"]["learning_rate"].as_float(), Some(lr));
    let png = std::fs::read(dir.join("sweep.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_key_no_recipe_has_fails_before_anything_runs() {
    let tmp = tempdir("sweep-bad");
    let out = hone_sweep(&sweep_file(&tmp, "learning_rat = { values = [1e-5] }"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("learning_rat"), "{err}");
    assert!(
        err.lines().filter(|l| l.starts_with("error")).count() == 1,
        "{err}"
    );
    assert!(!tmp.join("sweep").exists(), "nothing written");
}
