//! Data-parallel training over MPI (issue 20): `hone launch --nproc 2` (mpirun underneath)
//! with a per-rank batch of B/2 ends 10 updates with the weights of one process with batch
//! B (dropout off), logs every step once, and a 2-rank run interrupted and resumed ends with
//! the weights of an uninterrupted 2-rank run, bit for bit (dropout on: each rank's dropout
//! stream is restored).
#![cfg(feature = "mpi")]

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// all-MiniLM-L6-v2 with dropout off (a copy in `dir`).
fn minilm_without_dropout(dir: &Path) -> PathBuf {
    let out = dir.join("minilm-no-dropout");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(minilm_dir()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
        }
    }
    let path = out.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&path, config.to_string()).unwrap();
    out
}

/// How the ranks are started.
#[derive(Clone, Copy)]
enum Start {
    /// `hone finetune`: one process.
    Plain,
    /// `hone launch --nproc N -- finetune` (mpirun underneath).
    Launch(usize),
    /// `mpirun -n 1 hone finetune`: one rank of MPI.
    MpirunOne,
}

impl Start {
    fn ranks(self) -> usize {
        match self {
            Start::Launch(n) => n,
            _ => 1,
        }
    }

    fn command(self) -> Command {
        let hone = env!("CARGO_BIN_EXE_hone");
        let mut c = match self {
            Start::MpirunOne => {
                let mut c = Command::new("mpirun");
                if is_root() {
                    c.arg("--allow-run-as-root");
                }
                // Unbound, so it has the cores the plain run has (mpirun binds a rank to one
                // core by default, and fewer threads sum in another order).
                c.args(["--bind-to", "none", "-n", "1", hone]);
                c
            }
            _ => Command::new(hone),
        };
        if let Start::Launch(n) = self {
            c.args(["launch", "--nproc", &n.to_string(), "--"]);
        }
        c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        // Open MPI in a container: no ptrace-based single-copy between ranks.
        c.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
        c
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `hone finetune` on 96 SST-2 sentences, 10 updates of 16 (8 a rank on 2 ranks), started
/// as `start` says.
fn finetune(start: Start, model: &Path, out: &Path, interrupt_after: Option<usize>) {
    let data = shared_dir().join("data/sst2");
    let mut c = start.command();
    c.args([
        "finetune",
        "--config",
        "examples/sst2.toml",
        "--log",
        "warn",
    ]);
    for kv in [
        format!("model.model_name_or_path={model:?}"),
        "model.classifier_dropout=0.0".into(),
        format!("data.train_file={:?}", data.join("train.tsv")),
        format!("data.validation_file={:?}", data.join("validation.tsv")),
        format!("output_dir={out:?}"),
        "data.max_train_samples=96".into(),
        "data.max_eval_samples=24".into(),
        "data.max_seq_length=24".into(),
        format!("per_device_train_batch_size={}", 16 / start.ranks()),
        "max_steps=10".into(),
        "warmup_steps=2".into(),
        "eval_strategy=\"steps\"".into(),
        "eval_steps=5".into(),
        "logging_steps=1".into(),
        "progress=false".into(),
        "seed=11".into(),
    ] {
        c.args(["--set", &kv]);
    }
    // A directory with a checkpoint in it is resumed.
    if out.join("checkpoint-5").is_dir() {
        c.arg("--resume");
    }
    if let Some(n) = interrupt_after {
        c.env("HONE_INTERRUPT_AFTER_STEPS", n.to_string());
    }
    let output = c.output().unwrap();
    assert!(
        output.status.success(),
        "hone ({} ranks) failed:\n{}",
        start.ranks(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn weights(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let v: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, v)
        })
        .collect()
}

fn logged(dir: &Path, key: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get(key).is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v[key].as_f64().unwrap()))
        .collect()
}

#[test]
fn two_ranks_with_half_batches_train_as_one_process_with_the_whole_batch() {
    let tmp = tempdir("data-parallel");
    let model = minilm_without_dropout(&tmp);
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    finetune(Start::Plain, &model, &one, None);
    finetune(Start::Launch(2), &model, &two, None);

    let (a, b) = (weights(&one), weights(&two));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = (0f32, String::new());
    for (name, x) in &a {
        let d = max_abs_diff(x, &b[name]);
        if d > worst.0 {
            worst = (d, name.clone());
        }
    }
    assert!(
        worst.0 <= 1e-6,
        "weights differ by {} in `{}`",
        worst.0,
        worst.1
    );
    // The classifier moved: the comparison is not of two untouched models.
    let base = weights(&minilm_dir());
    assert!(
        a.keys().any(|k| !base.contains_key(k)),
        "a new head was trained"
    );

    // Rank 0 alone logs: every step once, with the whole batch's loss and gradient norm.
    for key in ["loss", "grad_norm", "eval_loss", "eval_accuracy"] {
        let (l1, l2) = (logged(&one, key), logged(&two, key));
        assert_eq!(
            l1.iter().map(|p| p.0).collect::<Vec<_>>(),
            l2.iter().map(|p| p.0).collect::<Vec<_>>(),
            "{key} logged at other steps"
        );
        for ((s, x), (_, y)) in l1.iter().zip(&l2) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{key} at step {s}: {x} vs {y}"
            );
        }
    }
    assert_eq!(logged(&two, "loss").len(), 10);
    // Each run leaves a model per rank and checkpoints: about 1 GB.
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn two_ranks_resume_exactly() {
    let tmp = tempdir("data-parallel-resume");
    let model = minilm_dir();
    let (whole, parts) = (tmp.join("whole"), tmp.join("parts"));
    finetune(Start::Launch(2), &model, &whole, None);
    // Stopped after update 5 (its checkpoint written), then resumed to 10.
    finetune(Start::Launch(2), &model, &parts, Some(5));
    assert!(parts.join("checkpoint-5").is_dir());
    assert!(!parts.join("model.safetensors").exists());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(parts.join("checkpoint-5/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["rank_rngs"].as_array().map(Vec::len),
        Some(2),
        "each rank's dropout stream"
    );
    finetune(Start::Launch(2), &model, &parts, None);
    assert_eq!(
        std::fs::read(whole.join("model.safetensors")).unwrap(),
        std::fs::read(parts.join("model.safetensors")).unwrap(),
        "resumed 2-rank weights differ from the uninterrupted run's"
    );
    assert_eq!(
        logged(&whole, "loss"),
        logged(&parts, "loss"),
        "the resumed run's log differs"
    );
    // Each run leaves a model per rank and checkpoints: about 1 GB.
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `hone [launch --nproc N --] pretrain` of the character-level GPT (no dropout) on 100k
/// characters of Tiny Shakespeare: 10 updates of 12 blocks, evaluated at 5 and 10.
fn pretrain(ranks: usize, out: &Path, extra: &[&str]) {
    let data = shared_dir().join("data/tinyshakespeare/input.txt");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hone"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    if ranks > 1 {
        c.args(["launch", "--nproc", &ranks.to_string(), "--"]);
    }
    c.args([
        "pretrain",
        "--config",
        "examples/shakespeare-char-cpu.toml",
        "--log",
        "warn",
    ]);
    for kv in [
        format!("data.train_files=[{data:?}]"),
        format!("output_dir={out:?}"),
        "data.max_train_chars=100000".into(),
        format!("per_device_train_batch_size={}", 12 / ranks),
        "max_steps=10".into(),
        "lr_decay_steps=10".into(),
        "warmup_steps=2".into(),
        "eval_steps=5".into(),
        "max_eval_batches=2".into(),
        "logging_steps=1".into(),
        "progress=false".into(),
    ] {
        c.args(["--set", &kv]);
    }
    c.args(extra);
    let output = c.output().unwrap();
    assert!(
        output.status.success(),
        "hone pretrain ({ranks} ranks) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn causal_lm_pretraining_on_two_ranks_matches_one_process() {
    let tmp = tempdir("data-parallel-clm");
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    pretrain(1, &one, &[]);
    pretrain(2, &two, &[]);
    let (a, b) = (weights(&one), weights(&two));
    for (name, x) in &a {
        let d = max_abs_diff(x, &b[name]);
        assert!(d <= 1e-6, "`{name}` differs by {d}");
    }
    // The logged loss and gradient norm are the whole batch's, and the sharded evaluation
    // (each rank half the validation batches, sums reduced) gives the one-process loss.
    for key in ["loss", "grad_norm", "eval_loss"] {
        let (l1, l2) = (logged(&one, key), logged(&two, key));
        assert_eq!(l1.len(), if key == "eval_loss" { 2 } else { 10 }, "{key}");
        assert_eq!(l1.len(), l2.len(), "{key}");
        for ((s, x), (_, y)) in l1.iter().zip(&l2) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{key} at step {s}: {x} vs {y}"
            );
        }
    }
    // Each run leaves a model per rank and checkpoints: about 1 GB.
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A one-rank MPI run (under `mpirun -n 1` itself) goes through every collective and ends
/// with the plain run's weights, bit for bit: the analogue of a one-rank NCCL run against the
/// plain CUDA path.
#[test]
fn one_mpi_rank_trains_exactly_as_the_plain_path() {
    let tmp = tempdir("data-parallel-one-rank");
    let model = minilm_without_dropout(&tmp);
    let (plain, mpi) = (tmp.join("plain"), tmp.join("mpi"));
    finetune(Start::Plain, &model, &plain, None);
    finetune(Start::MpirunOne, &model, &mpi, None);
    assert!(
        std::fs::read(plain.join("model.safetensors")).unwrap()
            == std::fs::read(mpi.join("model.safetensors")).unwrap(),
        "one MPI rank's weights differ from the plain run's"
    );
    assert_eq!(logged(&plain, "loss"), logged(&mpi, "loss"));
    assert_eq!(logged(&plain, "eval_loss"), logged(&mpi, "eval_loss"));
    // Each run leaves a model per rank and checkpoints: about 1 GB.
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Accumulation and mixed precision behave as in one process: 2 micro-batches an update
/// (fp32: the same weights to 1e-6), and bf16 autocast (the same losses to bf16's precision).
#[test]
fn accumulation_and_bf16_on_two_ranks_match_one_process() {
    let tmp = tempdir("data-parallel-accum");
    let accum = ["--set", "gradient_accumulation_steps=2"];
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    pretrain(1, &one, &accum);
    pretrain(2, &two, &accum);
    let (a, b) = (weights(&one), weights(&two));
    for (name, x) in &a {
        let d = max_abs_diff(x, &b[name]);
        assert!(d <= 1e-6, "accumulation: `{name}` differs by {d}");
    }
    let (l1, l2) = (logged(&one, "grad_norm"), logged(&two, "grad_norm"));
    assert_eq!(l1.len(), 10);
    for ((s, x), (_, y)) in l1.iter().zip(&l2) {
        assert!(
            (x - y).abs() <= 1e-5 * x.max(1.0),
            "accumulation: grad_norm at {s}: {x} vs {y}"
        );
    }

    let bf16 = ["--precision", "bf16"];
    let (one, two) = (tmp.join("one-bf16"), tmp.join("two-bf16"));
    pretrain(1, &one, &bf16);
    pretrain(2, &two, &bf16);
    let (l1, l2) = (logged(&one, "loss"), logged(&two, "loss"));
    assert_eq!(l1.len(), 10);
    for ((s, x), (_, y)) in l1.iter().zip(&l2) {
        // bf16 keeps 8 bits of mantissa: products over half batches round differently.
        assert!(
            (x - y).abs() <= 1e-2 * x,
            "bf16: loss at step {s}: {x} vs {y}"
        );
    }
    // Each run leaves a model per rank and checkpoints: about 1 GB.
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A rank that fails ends the whole run, promptly and with a failure status: here rank 0
/// cannot create its output directory while rank 1 waits for it at a barrier. Before
/// ranks aborted, rank 0 waited in MPI_Finalize and rank 1 in the barrier, forever.
#[test]
fn a_failing_rank_stops_every_rank() {
    let tmp = tempdir("data-parallel-abort");
    let blocker = tmp.join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let data = shared_dir().join("data/sst2");
    let hone = env!("CARGO_BIN_EXE_hone");
    // One mpirun, two programs (MPMD): the same run, but rank 0's output directory would
    // lie under a regular file.
    let rank_args = |out: &Path| -> Vec<String> {
        let mut a = vec![
            "-n".to_string(),
            "1".into(),
            hone.into(),
            "finetune".into(),
            "--config".into(),
            "examples/sst2.toml".into(),
            "--log".into(),
            "warn".into(),
        ];
        for kv in [
            format!("model.model_name_or_path={:?}", minilm_dir()),
            format!("data.train_file={:?}", data.join("train.tsv")),
            format!("data.validation_file={:?}", data.join("validation.tsv")),
            format!("output_dir={out:?}"),
            "data.max_train_samples=32".into(),
            "data.max_eval_samples=8".into(),
            "max_steps=2".into(),
            "progress=false".into(),
        ] {
            a.extend(["--set".to_string(), kv]);
        }
        a
    };
    let mut c = Command::new("mpirun");
    if is_root() {
        c.arg("--allow-run-as-root");
    }
    c.args(["--oversubscribe", "--bind-to", "none"]);
    c.args(rank_args(&blocker.join("out")));
    c.arg(":");
    c.args(rank_args(&tmp.join("rank1-out")));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    c.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c.stdout(std::process::Stdio::null());
    c.stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(180) {
            let _ = child.kill();
            let _ = Command::new("pkill")
                .args(["-f", "data-parallel-abort"])
                .status();
            panic!("the ranks were still running 180 s after rank 0 failed");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the run succeeded: {stderr}");
    assert!(
        stderr.contains("error: rank 0:") && stderr.contains("a-file"),
        "rank 0's one-line error names the path: {stderr}"
    );
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `hone [launch --nproc N --] finetune --config RECIPE --set ...`, which must succeed.
fn finetune_on(ranks: usize, recipe: &str, sets: &[String]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hone"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    c.env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    if ranks > 1 {
        c.args(["launch", "--nproc", &ranks.to_string(), "--"]);
    }
    c.args(["finetune", "--config", recipe, "--log", "warn"]);
    for kv in sets {
        c.args(["--set", kv]);
    }
    let output = c.output().unwrap();
    assert!(
        output.status.success(),
        "hone ({ranks} ranks) failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two runs end with the same weights (1e-6) and log the same `keys` at the same steps
/// (1e-5 relative).
fn assert_same_run(one: &Path, two: &Path, keys: &[&str]) {
    let (a, b) = (weights(one), weights(two));
    for (name, x) in &a {
        let d = max_abs_diff(x, &b[name]);
        assert!(d <= 1e-6, "weights differ by {d} in `{name}`");
    }
    for key in keys {
        let (l1, l2) = (logged(one, key), logged(two, key));
        assert!(!l1.is_empty(), "{key} logged");
        assert_eq!(l1.len(), l2.len(), "{key}");
        for ((s, x), (_, y)) in l1.iter().zip(&l2) {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "{key} at step {s}: {x} vs {y}"
            );
        }
    }
}

/// A CoNLL-2003 tagger: 6 updates of 16 windows (8 a rank on 2 ranks), evaluated at 3 and
/// 6 on 40 sentences, dropout off.
fn finetune_ner(ranks: usize, model: &Path, out: &Path) {
    let data = shared_dir().join("data/conll2003/train.txt");
    let sets = [
        format!("model.model_name_or_path={model:?}"),
        "model.classifier_dropout=0.0".into(),
        format!("data.train_file={data:?}"),
        // Validation from the training file: a short prefix of the real one lacks tags.
        format!("data.validation_file={data:?}"),
        "data.max_train_samples=96".into(),
        "data.max_eval_samples=40".into(),
        "data.max_seq_length=32".into(),
        "data.stride=8".into(),
        format!("per_device_train_batch_size={}", 16 / ranks),
        "per_device_eval_batch_size=8".into(),
        "max_steps=6".into(),
        "warmup_steps=1".into(),
        "eval_strategy=\"steps\"".into(),
        "eval_steps=3".into(),
        "logging_steps=1".into(),
        "progress=false".into(),
        format!("output_dir={out:?}"),
    ];
    finetune_on(ranks, "examples/conll2003.toml", &sets);
}

/// Token classification on 2 ranks: each shard's loss is weighted by its labelled pieces,
/// so the weights match one process's; the evaluation is sharded by sentence and its
/// seqeval scores and loss are the whole set's.
#[test]
fn ner_on_two_ranks_matches_one_process_with_sharded_evaluation() {
    let tmp = tempdir("data-parallel-ner");
    let model = minilm_without_dropout(&tmp);
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    finetune_ner(1, &model, &one);
    finetune_ner(2, &model, &two);
    let keys = ["loss", "grad_norm", "eval_loss", "eval_f1", "eval_accuracy"];
    assert_same_run(&one, &two, &keys);
    // The scores are not trivial: some entities were found by step 6.
    assert!(logged(&one, "eval_f1").last().unwrap().1 > 0.0);
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A tiny Marian model from scratch on 300 Multi30k pairs: 6 updates of 1,024 padded
/// tokens (512 a rank on 2 ranks), evaluated at 3 and 6 on 24 pairs with greedy decoding,
/// dropout off.
fn finetune_translation(ranks: usize, out: &Path) {
    let data = shared_dir().join("data/multi30k");
    let mut sets = vec![
        format!("data.train_source={:?}", data.join("train.de")),
        format!("data.train_target={:?}", data.join("train.en")),
        format!("data.validation_source={:?}", data.join("val.de")),
        format!("data.validation_target={:?}", data.join("val.en")),
        "data.max_train_samples=300".into(),
        "data.max_eval_samples=24".into(),
        "model.tokenizer_vocab_size=600".into(),
    ];
    for (k, v) in [
        ("d_model", 32),
        ("encoder_layers", 1),
        ("decoder_layers", 1),
        ("encoder_attention_heads", 2),
        ("decoder_attention_heads", 2),
        ("encoder_ffn_dim", 64),
        ("decoder_ffn_dim", 64),
    ] {
        sets.push(format!("model.config.{k}={v}"));
    }
    for k in ["dropout", "attention_dropout", "activation_dropout"] {
        sets.push(format!("model.config.{k}=0.0"));
    }
    sets.extend([
        "generation.num_beams=1".into(),
        "generation.max_new_tokens=12".into(),
        format!("max_tokens_per_batch={}", 1024 / ranks),
        "per_device_eval_batch_size=4".into(),
        "max_steps=6".into(),
        "warmup_steps=2".into(),
        "eval_strategy=\"steps\"".into(),
        "eval_steps=3".into(),
        "logging_steps=1".into(),
        "progress=false".into(),
        format!("output_dir={out:?}"),
    ]);
    finetune_on(ranks, "examples/multi30k-de-en.toml", &sets);
}

/// Translation on 2 ranks: each shard's loss is weighted by its target tokens, so the
/// weights match one process's; the evaluation decodes every other batch on each rank and
/// its loss, BLEU and chrF are the whole set's.
#[test]
fn translation_on_two_ranks_matches_one_process_with_sharded_decoding() {
    let tmp = tempdir("data-parallel-translation");
    let (one, two) = (tmp.join("one"), tmp.join("two"));
    finetune_translation(1, &one);
    finetune_translation(2, &two);
    let keys = ["loss", "grad_norm", "eval_loss", "eval_bleu", "eval_chrf"];
    assert_same_run(&one, &two, &keys);
    // The hypotheses are not empty: chrF counts their characters.
    assert!(logged(&one, "eval_chrf").last().unwrap().1 > 0.0);
    std::fs::remove_dir_all(&tmp).unwrap();
}
