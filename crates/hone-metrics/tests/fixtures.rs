//! Parity with reference outputs produced by scikit-learn, seqeval and sacrebleu
//! (`shared/fixtures/*_expected.json`).

use std::path::PathBuf;

use hone_metrics::bleu::{corpus_bleu, sentence_bleu};
use hone_metrics::classification::{accuracy, ClassificationReport};
use hone_metrics::seqeval::{f1_score, Mode, Scheme, SeqevalReport};
use hone_metrics::ZeroDivision;
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("HONE_SHARED") {
        Some(shared) => PathBuf::from(shared).join("fixtures"),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures"
        )),
    }
}

fn load(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= TOL, "{what}: got {a}, expected {b}");
}

/// Recursively compares two JSON report objects: same keys, numbers within TOL.
fn assert_json_close(got: &Value, want: &Value, path: &str) {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            let mut gk: Vec<&String> = g.keys().collect();
            let mut wk: Vec<&String> = w.keys().collect();
            gk.sort();
            wk.sort();
            assert_eq!(gk, wk, "keys differ at {path}");
            for (k, wv) in w {
                assert_json_close(&g[k], wv, &format!("{path}/{k}"));
            }
        }
        (Value::Number(g), Value::Number(w)) => {
            close(g.as_f64().unwrap(), w.as_f64().unwrap(), path);
        }
        _ => panic!("type mismatch at {path}: {got} vs {want}"),
    }
}

fn str_sentences(v: &Value) -> Vec<Vec<String>> {
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

#[test]
fn classification_report_matches_sklearn() {
    let fx = load("classification_report_expected.json");
    let ints = |k: &str| -> Vec<usize> {
        fx[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let (y_true, y_pred) = (ints("y_true"), ints("y_pred"));
    let report = ClassificationReport::compute(&y_true, &y_pred, None, ZeroDivision::Warn).unwrap();
    assert_json_close(&report.to_json(), &fx["report"], "report");
    close(
        accuracy(&y_true, &y_pred).unwrap(),
        fx["report"]["accuracy"].as_f64().unwrap(),
        "accuracy",
    );

    // Same data with string labels gives the same numbers (labels sort identically here).
    let s = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let report_s =
        ClassificationReport::compute(&s(&y_true), &s(&y_pred), None, ZeroDivision::Zero).unwrap();
    assert_json_close(&report_s.to_json(), &fx["report"], "report(str)");

    // The text rendering carries the same numbers, rounded to 2 digits.
    let text = report.to_text(2);
    let acc_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("accuracy"))
        .unwrap();
    let acc = fx["report"]["accuracy"].as_f64().unwrap();
    assert!(acc_line.contains(&format!("{acc:.2}")), "{acc_line}");
}

#[test]
fn seqeval_default_mode_matches() {
    let fx = load("seqeval_expected.json");
    let (gold, pred) = (str_sentences(&fx["gold"]), str_sentences(&fx["pred"]));
    let r = SeqevalReport::compute(&gold, &pred, Mode::Default).unwrap();
    assert_json_close(&r.to_json(), &fx["default_mode"], "default_mode");
    close(
        f1_score(&gold, &pred, Mode::Default).unwrap(),
        fx["micro_f1_default"].as_f64().unwrap(),
        "micro_f1_default",
    );
}

#[test]
fn seqeval_strict_iob2_matches() {
    let fx = load("seqeval_expected.json");
    let (gold, pred) = (str_sentences(&fx["gold"]), str_sentences(&fx["pred"]));
    let r = SeqevalReport::compute(&gold, &pred, Mode::Strict(Scheme::IOB2)).unwrap();
    assert_json_close(&r.to_json(), &fx["strict_iob2"], "strict_iob2");
    // The fixture exercises the leniency difference: strict drops an I- initial entity.
    assert_ne!(
        r.get("PER").unwrap().support,
        SeqevalReport::compute(&gold, &pred, Mode::Default)
            .unwrap()
            .get("PER")
            .unwrap()
            .support
    );
}

#[test]
fn bleu_matches_sacrebleu() {
    let fx = load("bleu_expected.json");
    assert_eq!(fx["tokenize"], "13a");
    let strs = |k: &str| -> Vec<String> {
        fx[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    let hyps = strs("hypotheses");
    let refs = strs("references");
    let s = corpus_bleu(&hyps, std::slice::from_ref(&refs)).unwrap();
    close(s.score, fx["score"].as_f64().unwrap(), "score");
    close(s.bp, fx["bp"].as_f64().unwrap(), "bp");
    assert_eq!(s.sys_len, fx["sys_len"].as_u64().unwrap());
    assert_eq!(s.ref_len, fx["ref_len"].as_u64().unwrap());
    let want_p = fx["precisions"].as_array().unwrap();
    assert_eq!(s.precisions.len(), want_p.len());
    for (i, (g, w)) in s.precisions.iter().zip(want_p).enumerate() {
        close(*g, w.as_f64().unwrap(), &format!("precision[{i}]"));
    }
    let want_sent = fx["sentence_scores"].as_array().unwrap();
    assert_eq!(want_sent.len(), hyps.len());
    for (i, (h, r)) in hyps.iter().zip(&refs).enumerate() {
        let got = sentence_bleu(h, &[r]).unwrap().score;
        close(
            got,
            want_sent[i].as_f64().unwrap(),
            &format!("sentence_scores[{i}]"),
        );
    }
}
