//! `hone score`: label files against scikit-learn's report, and corpus BLEU and chrF
//! against sacrebleu's.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A fixture's list written one item per line to `dir/name`.
fn write_lines(dir: &Path, name: &str, items: &serde_json::Value) -> PathBuf {
    let text: String = items
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v.as_str() {
            Some(s) => format!("{s}\n"),
            None => format!("{v}\n"),
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `hone score <args>`, which must succeed; its stdout.
fn score(args: &[&str], files: &[(&str, &Path)]) -> Vec<u8> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hone"));
    cmd.arg("score").args(args);
    for (flag, path) in files {
        cmd.arg(flag).arg(path);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

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
    let gold = write_lines(&dir, "gold.txt", &fx["y_true"]);
    let pred = write_lines(&dir, "pred.txt", &fx["y_pred"]);
    let files = [("--gold", gold.as_path()), ("--pred", pred.as_path())];
    let out = score(&["classification", "--json"], &files);
    let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
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
    let text = String::from_utf8(score(&["classification"], &files)).unwrap();
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
    let hyps = write_lines(&dir, "hyp.txt", &fx["hypotheses"]);
    let refs = write_lines(&dir, "ref.txt", &fx["references"]);
    let files = [("--pred", hyps.as_path()), ("--ref", refs.as_path())];
    let out = score(&["bleu", "--json"], &files);
    let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in ["score", "bp"] {
        let (g, w) = (got[key].as_f64().unwrap(), fx[key].as_f64().unwrap());
        assert!((g - w).abs() < 1e-9, "{key}: {g} vs {w}");
    }
    assert_eq!(got["sys_len"], fx["sys_len"]);
    assert_eq!(got["ref_len"], fx["ref_len"]);
    let d = max_abs_diff(&f32s(&got["precisions"]), &f32s(&fx["precisions"]));
    assert!(d < 1e-5, "precisions differ by {d}");

    // sacrebleu's one-line summary by default; a reference file of another length is
    // refused, naming both files.
    let text = String::from_utf8(score(&["bleu"], &files)).unwrap();
    assert!(
        text.starts_with("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:hone-")
            && text.contains(" = 30.36 "),
        "{text}"
    );
    let hyp_alias = [("--hyp", hyps.as_path()), ("--ref", refs.as_path())];
    let lc = String::from_utf8(score(&["bleu", "--lowercase"], &hyp_alias)).unwrap();
    assert!(lc.contains("|case:lc|"), "{lc}");
    let short = dir.join("short.txt");
    std::fs::write(&short, "one line\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
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

#[test]
fn score_chrf_reproduces_sacrebleu() {
    // sacrebleu's chrF2 and chrF2++ on German text with two references
    // (hone-metrics/tests/data/chrf_expected.json, from scripts/chrf-expected.sh).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hone-metrics/tests/data/chrf_expected.json"
    );
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let corpus = &fx["corpora"]["german_two_refs"];
    let dir = temp_dir("chrf");
    let hyps = write_lines(&dir, "hyp.txt", &corpus["hypotheses"]);
    let ref1 = write_lines(&dir, "ref1.txt", &corpus["references"][0]);
    let ref2 = write_lines(&dir, "ref2.txt", &corpus["references"][1]);
    let files = [
        ("--hyp", hyps.as_path()),
        ("--ref", ref1.as_path()),
        ("--ref", ref2.as_path()),
    ];
    let want = |settings: serde_json::Value| {
        fx["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["corpus"] == "german_two_refs" && c["settings"] == settings)
            .unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    for (args, settings) in [
        (vec!["chrf", "--json"], serde_json::json!({})),
        (
            vec!["chrf", "--json", "--word-order", "2"],
            serde_json::json!({"word_order": 2}),
        ),
    ] {
        let got: serde_json::Value = serde_json::from_slice(&score(&args, &files)).unwrap();
        let (g, w) = (got["score"].as_f64().unwrap(), want(settings));
        assert!((g - w).abs() < 1e-9, "{args:?}: {g} vs {w}");
    }
    let text = String::from_utf8(score(&["chrf"], &files)).unwrap();
    assert!(
        text.starts_with("chrF2|nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:hone-")
            && text
                .trim_end()
                .ends_with(&format!(" = {:.2}", want(serde_json::json!({})))),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
