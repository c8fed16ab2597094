//! `hone pretrain` end to end on tiny settings: causal LM and MLM+NSP recipes run, log
//! eval_loss, save a loadable model with its tokenizer, and `hone generate` uses it.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::*;

fn hone() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hone"))
}

fn out_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hone-pretrain-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn recipe(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples")).join(name)
}

/// `hone pretrain` on an example recipe with Tiny Shakespeare, output to `out`, and each of
/// `overrides` passed as `--set`.
fn pretrain(recipe_name: &str, out: &std::path::Path, overrides: &[&str]) -> bool {
    let data = shared_dir().join("data/tinyshakespeare/input.txt");
    pretrain_on(recipe_name, &data, out, overrides)
}

/// [`pretrain`] on the corpus `data`.
fn pretrain_on(
    recipe_name: &str,
    data: &std::path::Path,
    out: &std::path::Path,
    overrides: &[&str],
) -> bool {
    let mut cmd = hone();
    cmd.args(["pretrain", "--log", "warn", "--config"])
        .arg(recipe(recipe_name))
        .arg("--set")
        .arg(format!("data.train_files=[\"{}\"]", data.display()))
        .arg("--set")
        .arg(format!("output_dir=\"{}\"", out.display()));
    for o in overrides.iter().copied().chain(["progress=false"]) {
        cmd.args(["--set", o]);
    }
    cmd.status().unwrap().success()
}

fn eval_losses(dir: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["eval_loss"].as_f64())
        .collect()
}

#[test]
fn causal_lm_recipe_trains_and_generates() {
    let out = out_dir("clm");
    // A validation file of its own, which `hone eval` then scores the same way.
    let text =
        std::fs::read_to_string(shared_dir().join("data/tinyshakespeare/input.txt")).unwrap();
    let valid = out_dir("clm-valid.txt");
    std::fs::write(&valid, &text[200_000..212_800]).unwrap();
    let valid_set = format!("data.validation_files=[\"{}\"]", valid.display());
    assert!(pretrain(
        "shakespeare-char-cpu.toml",
        &out,
        &[
            "max_steps=60",
            "lr_decay_steps=60",
            "eval_steps=30",
            "data.max_train_chars=200000",
            &valid_set,
        ]
    ));
    let losses = eval_losses(&out);
    assert_eq!(losses.len(), 2, "evaluations at steps 30 and 60");
    // A uniform guess over 65 characters is ln 65 = 4.17; training must beat it clearly.
    assert!(
        losses[1] < 3.2 && losses[1] < losses[0],
        "eval losses {losses:?}"
    );
    assert!(out.join("tokenizer.json").is_file() && out.join("config.json").is_file());
    // The command line draws the curves (a trainer callback the library leaves out).
    let png = std::fs::read(out.join("metrics.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "metrics.png is a PNG");

    // hone eval: the perplexity of the saved model on the validation file, as the run
    // measured it at its last evaluation.
    let eval = hone()
        .arg("eval")
        .arg(&out)
        .arg("--data")
        .arg(&valid)
        .args(["--max-length", "64", "--json", "--log", "warn"])
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let loss = report["loss"].as_f64().unwrap();
    assert!(
        (loss - losses[1]).abs() < 1e-4,
        "hone eval {report} vs the run's {losses:?}"
    );
    assert!((report["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9 * loss.exp());

    let gen = hone()
        .arg("generate")
        .arg(&out)
        .args([
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "40",
            "--seed",
            "1",
            "--log",
            "warn",
        ])
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let text = String::from_utf8(gen.stdout).unwrap();
    assert!(
        text.starts_with("ROMEO:") && text.chars().count() >= 40 + 6,
        "{text:?}"
    );
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&valid).unwrap();
}

/// Tiny model settings for the MLM+NSP recipes: eight updates, two evaluations.
const TINY_BERT: &[&str] = &[
    "model.tokenizer_vocab_size=2000",
    "max_steps=8",
    "eval_strategy=\"steps\"",
    "eval_steps=4",
    "max_eval_batches=2",
    "per_device_train_batch_size=8",
    "model.config.hidden_size=64",
    "model.config.intermediate_size=128",
    "model.config.num_hidden_layers=2",
];

#[test]
fn mlm_nsp_recipe_trains_a_small_bert() {
    let out = out_dir("mlm");
    assert!(pretrain("bert-mlm-small.toml", &out, TINY_BERT));
    let losses = eval_losses(&out);
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForPreTraining");
    assert_eq!(config["vocab_size"], 2000);
    // The saved model loads as a pretraining model again.
    let model = hone_core::model::Model::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.head, hone_core::model::Head::MaskedLm { nsp: true });
    assert!(model.into_kind::<dyn hone_core::model::MaskedLm>().is_ok());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn sst2_corpus_script_and_domain_adaptive_recipe() {
    let out = out_dir("sst2-corpus");
    std::fs::create_dir_all(&out).unwrap();
    let corpus = out.join("sst2-train.txt");
    let train_tsv = shared_dir().join("data/sst2/train.tsv");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/sst2-corpus.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(&train_tsv)
        .arg(&corpus)
        .status()
        .unwrap();
    assert!(status.success());
    // Every data row's sentence (spaces normalised), labels dropped, exactly once.
    let rows: Vec<String> = std::fs::read_to_string(&train_tsv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let sentence = l.split('\t').next().unwrap();
            sentence.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .filter(|s| !s.is_empty())
        .collect();
    let text = std::fs::read_to_string(&corpus).unwrap();
    let docs: Vec<Vec<&str>> = text
        .trim_end()
        .split("\n\n")
        .map(|d| d.lines().collect())
        .collect();
    let mut sentences: Vec<&str> = docs.concat();
    let mut sorted_rows: Vec<&str> = rows.iter().map(String::as_str).collect();
    sentences.sort_unstable();
    sorted_rows.sort_unstable();
    assert_eq!(sentences, sorted_rows);
    // A document is a sentence followed by its word spans, longest first.
    let padded = |s: &str| format!(" {s} ");
    for doc in &docs {
        let head = padded(doc[0]);
        for pair in doc.windows(2) {
            assert!(pair[0].split(' ').count() >= pair[1].split(' ').count());
        }
        for line in &doc[1..] {
            assert!(
                head.contains(&padded(line)),
                "{line:?} is no span of {head:?}"
            );
        }
    }
    // Sentences that start documents are spans of no other (sampled: the first 200).
    let heads: Vec<String> = docs.iter().map(|d| padded(d[0])).collect();
    for (i, head) in heads.iter().enumerate().take(200) {
        let inside = heads
            .iter()
            .enumerate()
            .find(|(j, other)| *j != i && other.contains(head.as_str()));
        assert!(inside.is_none(), "{head:?} is a span of {inside:?}");
    }
    // Documents come in the order their first row appears in the file.
    let first_row = |d: &Vec<&str>| {
        d.iter()
            .map(|s| rows.iter().position(|r| r == s).unwrap())
            .min()
            .unwrap()
    };
    let firsts: Vec<usize> = docs.iter().take(50).map(first_row).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    assert!(
        docs.len() * 4 < rows.len(),
        "most rows join a longer sentence"
    );

    let model = out.join("model");
    assert!(pretrain_on(
        "bert-mlm-sst2.toml",
        &corpus,
        &model,
        TINY_BERT
    ));
    assert_eq!(eval_losses(&model).len(), 2);
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_step_that_cannot_fit_in_memory_is_refused_up_front_with_an_estimate() {
    // 12 windows of 65,536 characters: the attention probabilities alone need terabytes.
    let out = out_dir("oom");
    let data = shared_dir().join("data/tinyshakespeare/input.txt");
    let run = hone()
        .args(["pretrain", "--log", "warn", "--config"])
        .arg(recipe("shakespeare-char-cpu.toml"))
        .args(["--set", &format!("data.train_files=[{data:?}]")])
        .args(["--set", &format!("output_dir={out:?}")])
        .args(["--set", "model.config.n_positions=65536"])
        .args(["--set", "data.block_size=65536"])
        .args(["--set", "progress=false"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("GiB of activations for batch 12 x 65536 tokens x 4 layers")
            && err.contains("available"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written");
}
