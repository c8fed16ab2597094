//! `hone score`: label files against scikit-learn's report, and corpus BLEU against
//! sacrebleu's.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use common::*;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-score-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn score_classification_reproduces_scikit_learn() {
    let fx = read_fixture("classification_report_expected.json");
    let dir = temp_dir("score");
    let write = |name: &str, key: &str| {
        let p = dir.join(name);
        let text: String = fx[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{v}\n"))
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    };
    let gold = write("gold.txt", "y_true");
    let pred = write("pred.txt", "y_pred");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(["score", "classification", "--json", "--gold"])
        .arg(&gold)
        .arg("--pred")
        .arg(&pred)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = fx["report"].as_object().unwrap();
    assert_eq!(got.as_object().unwrap().len(), want.len());
    for (key, w) in want {
        let g = &got[key];
        match w {
            serde_json::Value::Object(m) => {
                for (field, wv) in m {
                    let (gv, wv) = (g[field].as_f64().unwrap(), wv.as_f64().unwrap());
                    assert!((gv - wv).abs() < 1e-9, "{key}/{field}: {gv} vs {wv}");
                }
            }
            _ => assert!(
                (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-9,
                "{key}"
            ),
        }
    }
    // The text table is printed by default.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(["score", "classification", "--gold"])
        .arg(&gold)
        .arg("--pred")
        .arg(&pred)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("macro avg") && text.contains("accuracy"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn score_bleu_reproduces_sacrebleu() {
    let fx = read_fixture("bleu_expected.json");
    assert_eq!(fx["tokenize"], "13a");
    let dir = temp_dir("bleu");
    let write = |name: &str, key: &str| {
        let p = dir.join(name);
        let text: String = fx[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{}\n", v.as_str().unwrap()))
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    };
    let hyps = write("hyp.txt", "hypotheses");
    let refs = write("ref.txt", "references");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(["score", "bleu", "--json", "--pred"])
        .arg(&hyps)
        .arg("--ref")
        .arg(&refs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["score", "bp"] {
        let (g, w) = (got[key].as_f64().unwrap(), fx[key].as_f64().unwrap());
        assert!((g - w).abs() < 1e-9, "{key}: {g} vs {w}");
    }
    assert_eq!(got["sys_len"], fx["sys_len"]);
    assert_eq!(got["ref_len"], fx["ref_len"]);
    let precisions = |v: &serde_json::Value| f32s(v);
    let d = max_abs_diff(
        &precisions(&got["precisions"]),
        &precisions(&fx["precisions"]),
    );
    assert!(d < 1e-5, "precisions differ by {d}");

    // sacrebleu's one-line summary by default; a reference file of another length is
    // refused, naming both files.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(["score", "bleu", "--pred"])
        .arg(&hyps)
        .arg("--ref")
        .arg(&refs)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("BLEU = 30.36 "), "{text}");
    let short = dir.join("short.txt");
    std::fs::write(&short, "one line\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(["score", "bleu", "--pred"])
        .arg(&hyps)
        .arg("--ref")
        .arg(&short)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        err.contains("hyp.txt has 5 lines") && err.contains("short.txt has 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
