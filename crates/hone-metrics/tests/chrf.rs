//! chrF and chrF++ against sacrebleu 2.6.0 (`tests/data/chrf_expected.json`, written by
//! `scripts/chrf-expected.sh`): corpus and sentence scores under each supported setting, on
//! the BLEU fixture's sentences and on German text with two references and an empty line.

use hone_metrics::chrf::{Chrf, ChrfConfig};
use serde_json::Value;

fn expected() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/chrf_expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn config(settings: &Value) -> ChrfConfig {
    let mut c = ChrfConfig::default();
    for (key, value) in settings.as_object().unwrap() {
        match key.as_str() {
            "char_order" => c.char_order = value.as_u64().unwrap() as usize,
            "word_order" => c.word_order = value.as_u64().unwrap() as usize,
            "beta" => c.beta = value.as_u64().unwrap() as u32,
            "lowercase" => c.lowercase = value.as_bool().unwrap(),
            "whitespace" => c.whitespace = value.as_bool().unwrap(),
            "eps_smoothing" => c.eps_smoothing = value.as_bool().unwrap(),
            other => panic!("unknown setting {other} in the fixture"),
        }
    }
    c
}

#[test]
fn chrf_matches_sacrebleu_in_every_setting() {
    let fx = expected();
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let corpus = &fx["corpora"][case["corpus"].as_str().unwrap()];
        let hyps = strings(&corpus["hypotheses"]);
        let refs: Vec<Vec<String>> = corpus["references"]
            .as_array()
            .unwrap()
            .iter()
            .map(strings)
            .collect();
        let metric = Chrf::new(config(&case["settings"]));
        let what = format!("{} {}", case["corpus"], case["settings"]);

        let got = metric.corpus_score(&hyps, &refs).unwrap();
        let want = case["score"].as_f64().unwrap();
        assert!(
            (got.score - want).abs() < 1e-9,
            "{what}: {} vs {want}",
            got.score
        );
        assert_eq!(got.name, case["name"].as_str().unwrap(), "{what}");
        // The signature is sacrebleu's but for the version, which names hone.
        let want_sig = case["signature"].as_str().unwrap();
        let sig = metric.signature(refs.len());
        assert_eq!(
            sig.split("|version:").next(),
            want_sig.split("|version:").next()
        );

        for (i, want) in case["sentence_scores"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let seg_refs: Vec<&str> = refs.iter().map(|s| s[i].as_str()).collect();
            let got = metric.sentence_score(&hyps[i], &seg_refs).unwrap().score;
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-9,
                "{what} sentence {i}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn chrf_is_100_on_identical_text_and_rejects_ragged_streams() {
    let hyps = ["Ein Mann schläft.", "Zwei Hunde."];
    let s = Chrf::default()
        .corpus_score(&hyps, &[hyps.to_vec()])
        .unwrap();
    assert!((s.score - 100.0).abs() < 1e-12, "{}", s.score);
    assert_eq!(s.to_string(), "chrF2 = 100.00");
    let err = Chrf::default()
        .corpus_score(&hyps, &[vec!["only one"]])
        .unwrap_err();
    assert!(err.to_string().contains("1 lines but there are 2"), "{err}");
}
