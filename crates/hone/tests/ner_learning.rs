//! A CI-sized NER run: fine-tune all-MiniLM-L6-v2 on the first sentences of CoNLL-2003
//! train with `hone finetune`, reach entity F1 >= 0.5 on validation sentences, and check
//! that `hone eval`, `hone predict` (CoNLL and raw text) and `hone score ner` agree with the
//! trainer's evaluation of the saved model.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

/// Training sentences, validation sentences (taken from the start of each file).
const TRAIN_SENTENCES: usize = 1500;
const VALID_SENTENCES: usize = 300;

fn hone(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hone {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The first `n` sentences of a CoNLL file, as text.
fn head_sentences(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    let mut seen = 0;
    let mut in_sentence = false;
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with("-DOCSTART-") {
            if in_sentence {
                seen += 1;
                in_sentence = false;
                out.push('\n');
                if seen == n {
                    break;
                }
            }
            continue;
        }
        in_sentence = true;
        out.push_str(line);
        out.push('\n');
    }
    assert_eq!(seen, n, "{} has fewer than {n} sentences", path.display());
    out
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn finetune_minilm_on_a_conll_subset_reaches_entity_f1() {
    let data = shared_dir().join("data/conll2003");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("hone-ner-learning-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let train = dir.join("train.txt");
    let valid = dir.join("valid.txt");
    std::fs::write(
        &train,
        head_sentences(&data.join("train.txt"), TRAIN_SENTENCES),
    )
    .unwrap();
    std::fs::write(
        &valid,
        head_sentences(&data.join("valid.txt"), VALID_SENTENCES),
    )
    .unwrap();
    let out_dir = dir.join("run");
    // Higher rate and smaller batches than the full recipe: more updates in a short run.
    let recipe = format!(
        r#"task = "token-classification"

[model]
model_name_or_path = {model:?}

[data]
train_file = {train:?}
validation_file = {valid:?}
max_seq_length = 128

[training]
output_dir = {out:?}
learning_rate = 3e-4
per_device_train_batch_size = 16
per_device_eval_batch_size = 64
num_train_epochs = 1
warmup_ratio = 0.1
weight_decay = 0.01
freeze_embeddings = true
eval_strategy = "epoch"
metric_for_best_model = "f1"
logging_steps = 10
seed = 42
progress = false
"#,
        model = minilm_dir(),
        train = train,
        valid = valid,
        out = out_dir,
    );
    let recipe_path = dir.join("recipe.toml");
    std::fs::write(&recipe_path, recipe).unwrap();

    let out = hone(&["finetune", "--config", s(&recipe_path)]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f1 = summary["last_eval"]["eval_f1"].as_f64().unwrap();
    eprintln!("summary: {summary}");
    assert!(f1 >= 0.5, "entity F1 {f1} < 0.5");
    for key in [
        "eval_precision",
        "eval_recall",
        "eval_accuracy",
        "eval_loss",
    ] {
        assert!(summary["last_eval"][key].as_f64().is_some(), "no {key}");
    }

    // A Hugging Face token-classification directory.
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "BertForTokenClassification");
    assert_eq!(config["id2label"]["8"], "O");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 9);
    let saved: Value = toml::from_str::<toml::Value>(
        &std::fs::read_to_string(out_dir.join("recipe.toml")).unwrap(),
    )
    .map(|v| serde_json::to_value(v).unwrap())
    .unwrap();
    assert_eq!(saved["task"], "token-classification");

    // `hone eval` on the saved model gives the trainer's numbers.
    let out = hone(&["eval", s(&out_dir), "--data", s(&valid), "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let close = |a: &Value, b: f64| (a.as_f64().unwrap() - b).abs() < 1e-6;
    assert!(close(&report["micro avg"]["f1-score"], f1), "{report}");
    assert!(close(
        &report["accuracy"],
        summary["last_eval"]["eval_accuracy"].as_f64().unwrap()
    ));

    // `hone predict --format conll` appends a column that `hone score ner` scores the same.
    let out = hone(&[
        "predict",
        s(&out_dir),
        "--input",
        s(&valid),
        "--format",
        "conll",
    ]);
    let pred = dir.join("pred.txt");
    std::fs::write(&pred, &out.stdout).unwrap();
    let pred_text = String::from_utf8(out.stdout).unwrap();
    let valid_text = std::fs::read_to_string(&valid).unwrap();
    assert_eq!(pred_text.lines().count(), valid_text.lines().count());
    for (p, v) in pred_text.lines().zip(valid_text.lines()) {
        assert!(p.starts_with(v), "{p:?} does not extend {v:?}");
        assert_eq!(
            p.split_whitespace().count(),
            v.split_whitespace().count() + (!v.is_empty()) as usize
        );
    }
    let out = hone(&[
        "score",
        "ner",
        "--gold",
        s(&valid),
        "--pred",
        s(&pred),
        "--json",
    ]);
    let scored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(close(&scored["micro avg"]["f1-score"], f1));

    // Raw text: entities with offsets into the text.
    let text =
        "Peter Blackburn visited Germany and met officials of the European Commission in Brussels.";
    let mut child = Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(["predict", s(&out_dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{text}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["text"], text);
    let ents = line["entities"].as_array().unwrap();
    eprintln!("entities: {ents:?}");
    let chars: Vec<char> = text.chars().collect();
    for e in ents {
        let (a, b) = (
            e["start"].as_u64().unwrap() as usize,
            e["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            chars[a..b].iter().collect::<String>(),
            e["word"].as_str().unwrap()
        );
    }
    let found: Vec<(&str, &str)> = ents
        .iter()
        .map(|e| {
            (
                e["entity_group"].as_str().unwrap(),
                e["word"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(found.contains(&("LOC", "Germany")), "{found:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
