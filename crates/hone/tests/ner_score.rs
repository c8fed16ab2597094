//! `hone score ner`: entity-level scores of two CoNLL files equal seqeval's (the fixture was
//! made with seqeval 1.2.2), and bad input is refused with the file and line.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hone-ner-score-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(args)
        .output()
        .unwrap()
}

fn tags(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// CoNLL text with token `w{i}` and extra columns, so the tag column matters.
fn conll(sentences: &[Vec<String>], extra: &[&str]) -> String {
    let mut out = String::from("-DOCSTART- -X- O\n\n");
    for s in sentences {
        for (i, t) in s.iter().enumerate() {
            out.push_str(&format!("w{i}"));
            for e in extra {
                out.push(' ');
                out.push_str(e);
            }
            out.push_str(&format!(" {t}\n"));
        }
        out.push('\n');
    }
    out
}

fn run_json(gold: &Path, pred: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "score",
        "ner",
        "--gold",
        gold.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = hone(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_report_matches(got: &Value, want: &Value, what: &str) {
    let want = want.as_object().unwrap();
    for (key, row) in want {
        for field in ["precision", "recall", "f1-score", "support"] {
            let w = row[field].as_f64().unwrap();
            let g = got[key][field]
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: no {key}/{field} in {got}"));
            assert!(
                (g - w).abs() <= 1e-9,
                "{what}: {key} {field}: got {g}, seqeval says {w}"
            );
        }
    }
    // Nothing but the fixture's rows and the token accuracy.
    let extra: Vec<&String> = got
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !want.contains_key(*k) && *k != "accuracy")
        .collect();
    assert!(extra.is_empty(), "{what}: unexpected rows {extra:?}");
}

#[test]
fn score_ner_reproduces_seqeval_default_and_strict() {
    let fx = read_fixture("seqeval_expected.json");
    let (gold, pred) = (tags(&fx["gold"]), tags(&fx["pred"]));
    let dir = Scratch::new("fixture");
    // Gold in 4-column CoNLL-2003 layout (tag last), predictions in 2 columns.
    let g = dir.write("gold.txt", &conll(&gold, &["NNP", "B-NP"]));
    let p = dir.write("pred.txt", &conll(&pred, &[]));

    let default = run_json(&g, &p, &[]);
    assert_report_matches(&default, &fx["default_mode"], "default mode");
    let micro = default["micro avg"]["f1-score"].as_f64().unwrap();
    assert!((micro - fx["micro_f1_default"].as_f64().unwrap()).abs() <= 1e-9);

    let strict = run_json(&g, &p, &["--mode", "strict", "--scheme", "IOB2"]);
    assert_report_matches(&strict, &fx["strict_iob2"], "strict IOB2");

    // Token accuracy, counted here independently.
    let (mut same, mut total) = (0usize, 0usize);
    for (a, b) in gold.iter().zip(&pred) {
        total += a.len();
        same += a.iter().zip(b).filter(|(x, y)| x == y).count();
    }
    let acc = default["accuracy"].as_f64().unwrap();
    assert!((acc - same as f64 / total as f64).abs() <= 1e-12);
    assert_eq!(strict["accuracy"], default["accuracy"]);

    // The text report is seqeval's table.
    let out = hone(&[
        "score",
        "ner",
        "--gold",
        g.to_str().unwrap(),
        "--pred",
        p.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("              precision    recall  f1-score   support\n"));
    assert!(text.contains(&format!(
        "   micro avg       {:.2}",
        fx["default_mode"]["micro avg"]["precision"]
            .as_f64()
            .unwrap()
    )));
    assert!(text.contains("token accuracy"));
}

fn expect_error(gold: &Path, pred: &Path, needle: &str) {
    let out = hone(&[
        "score",
        "ner",
        "--gold",
        gold.to_str().unwrap(),
        "--pred",
        pred.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains(needle), "error {err:?} lacks {needle:?}");
}

#[test]
fn bad_conll_input_names_file_and_line() {
    let dir = Scratch::new("bad");
    let good = dir.write(
        "good.txt",
        "EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\n",
    );
    // A tag outside the scheme on line 4.
    let bad_tag = dir.write(
        "bad_tag.txt",
        "EU B-ORG\nrejects O\n\nPeter B_PER\nBlackburn I-PER\n",
    );
    expect_error(&good, &bad_tag, &format!("{}:4", bad_tag.display()));
    expect_error(&bad_tag, &good, &format!("{}:4", bad_tag.display()));
    // Too few columns on line 2.
    let short = dir.write(
        "short.txt",
        "EU B-ORG\nrejects\n\nPeter B-PER\nBlackburn I-PER\n",
    );
    expect_error(&good, &short, &format!("{}:2", short.display()));
    // A sentence with a different number of tokens: both lines are named.
    let longer = dir.write(
        "longer.txt",
        "EU B-ORG\nrejects O\n\nPeter B-PER\nBlackburn I-PER\nsaid O\n",
    );
    expect_error(&good, &longer, &format!("{}:6", longer.display()));
    // JSON Lines: tag count differs from token count.
    let jsonl = dir.write("bad.jsonl", "{\"tokens\": [\"EU\", \"rejects\"], \"tags\": [\"B-ORG\", \"O\"]}\n{\"tokens\": [\"Peter\", \"Blackburn\"], \"tags\": [\"B-PER\"]}\n");
    expect_error(&good, &jsonl, &format!("{}:2", jsonl.display()));
    // Strict mode with an unknown scheme is refused.
    let out = hone(&[
        "score",
        "ner",
        "--gold",
        good.to_str().unwrap(),
        "--pred",
        good.to_str().unwrap(),
        "--mode",
        "strict",
        "--scheme",
        "XYZ",
    ]);
    assert!(!out.status.success());
}
