//! `hone translate` on the tiny random Marian: greedy and beam 3 print the texts
//! Transformers' `generate` + `decode(skip_special_tokens=True)` gave, a line per line; and
//! the translation recipe end to end (finetune, eval, translate).

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn translate(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("translate")
        .arg(fixture("tiny-marian"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn texts(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn translate_reproduces_transformers_generate() {
    let fx = read_fixture("tiny_marian_expected.json");
    let src = texts(&fx["src"]);
    // An empty line in the input stays an empty line in the output.
    let input = format!("{}\n{}\n\n{}\n{}\n", src[0], src[1], src[2], src[3]);
    for (beam, key) in [("1", "greedy_text"), ("3", "beam3_text")] {
        let out = translate(
            &[
                "--beam",
                beam,
                "--max-new-tokens",
                "12",
                "--batch-size",
                "3",
            ],
            &input,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(got.remove(2), "", "the empty line");
        assert_eq!(got, texts(&fx[key]), "--beam {beam}");
    }
}

#[test]
fn translate_refuses_a_classifier_and_a_too_long_request() {
    let out = translate(&["--max-new-tokens", "0"], "Ein Mann.\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_new_tokens"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("translate")
        .arg(fixture("gpt2-seqcls"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("sequence-to-sequence"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

fn hone(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(args)
        .output()
        .unwrap()
}

/// The first `n` lines of a Multi30k file, written to `dir` under the same name.
fn head(dir: &std::path::Path, name: &str, n: usize) -> String {
    let text = std::fs::read_to_string(shared_dir().join("data/multi30k").join(name)).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_string()
}

/// `examples/multi30k-de-en.toml` shrunk to a tiny model and a Multi30k slice: the loss
/// falls, evaluation reports BLEU, the output directory is a MarianMTModel with its
/// tokenizer and generation settings that `hone translate` uses; misaligned files are
/// refused before anything is written.
#[test]
fn translation_recipe_trains_saves_and_translates() {
    let tmp = std::env::temp_dir().join(format!("hone-mt-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (src, tgt) = (head(&tmp, "train.de", 400), head(&tmp, "train.en", 400));
    let (vsrc, vtgt) = (head(&tmp, "val.de", 24), head(&tmp, "val.en", 24));
    let out = tmp.join("model");
    let recipe = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/multi30k-de-en.toml"
    );
    let sets = [
        format!("output_dir={}", out.display()),
        format!("train_source={src}"),
        format!("train_target={tgt}"),
        format!("validation_source={vsrc}"),
        format!("validation_target={vtgt}"),
        "tokenizer_vocab_size=300".into(),
        "model.config.d_model=32".into(),
        "model.config.encoder_layers=1".into(),
        "model.config.decoder_layers=1".into(),
        "model.config.encoder_attention_heads=4".into(),
        "model.config.decoder_attention_heads=4".into(),
        "model.config.encoder_ffn_dim=64".into(),
        "model.config.decoder_ffn_dim=64".into(),
        "max_tokens_per_batch=1024".into(),
        "max_steps=60".into(),
        "warmup_steps=10".into(),
        "learning_rate=3e-3".into(),
        "logging_steps=10".into(),
        "eval_strategy=steps".into(),
        "eval_steps=60".into(),
        "num_beams=2".into(),
        "max_new_tokens=20".into(),
        "progress=false".into(),
    ];
    let mut args = vec!["finetune", "--config", recipe];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }

    // Misaligned parallel files: one line naming both files and the missing line; no
    // output directory.
    let short = head(&tmp.join("short"), "val.en", 10);
    let bad_set = format!("validation_target={short}");
    let mut bad = args.clone();
    bad.extend(["--set", bad_set.as_str()]);
    let res = hone(&bad);
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(
        err.contains("val.de has 24 lines") && err.contains("val.en has no line 11"),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written for bad data");

    let res = hone(&args);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses: Vec<f64> = rows.iter().filter_map(|r| r["loss"].as_f64()).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] - 0.5),
        "the training loss must fall: {losses:?}"
    );
    let eval = rows.iter().find(|r| r.get("eval_bleu").is_some()).unwrap();
    let bleu = eval["eval_bleu"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&bleu), "{eval}");
    let chrf = eval["eval_chrf"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&chrf), "{eval}");
    let ppl = eval["eval_perplexity"].as_f64().unwrap();
    let loss = eval["eval_loss"].as_f64().unwrap();
    assert!((ppl - loss.exp()).abs() < 1e-6 * ppl, "{eval}");

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "marian");
    assert_eq!(config["architectures"][0], "MarianMTModel");
    assert_eq!(config["d_model"], 32);
    let generation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(generation["num_beams"], 2);

    // hone eval on the same validation files reproduces the run's evaluation.
    let res = hone(&[
        "eval",
        out.to_str().unwrap(),
        "--data",
        &vsrc,
        "--target",
        &vtgt,
        "--beam",
        "2",
        "--max-new-tokens",
        "20",
        "--json",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert!(
        (report["loss"].as_f64().unwrap() - loss).abs() < 1e-5,
        "{report} vs {eval}"
    );
    assert!(
        (report["bleu"].as_f64().unwrap() - bleu).abs() < 1e-9,
        "{report} vs {eval}"
    );
    assert!(
        (report["chrf"].as_f64().unwrap() - chrf).abs() < 1e-9,
        "{report} vs {eval}"
    );

    let res = hone(&["translate", out.to_str().unwrap(), "--input", &vsrc]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(String::from_utf8(res.stdout).unwrap().lines().count(), 24);
    std::fs::remove_dir_all(&tmp).unwrap();
}
