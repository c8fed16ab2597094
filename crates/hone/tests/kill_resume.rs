//! Crash consistency: `hone finetune` and `hone pretrain` killed with SIGKILL at three moments (a step before
//! the first checkpoint, a checkpoint write, a step between checkpoints) and resumed each time ends with the weights of
//! an uninterrupted run, bit for bit, and a metrics.jsonl with every step once.
//! `scripts/kill-resume.sh 20` runs the same at 20 random moments.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn finetune(out: &Path, extra: &[&str]) -> Command {
    let data = shared_dir().join("data/sst2");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hone"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args([
            "finetune",
            "--config",
            "examples/sst2.toml",
            "--log",
            "warn",
        ])
        .args([
            "--set",
            &format!("data.train_file={:?}", data.join("train.tsv")),
        ])
        .args([
            "--set",
            &format!("data.validation_file={:?}", data.join("validation.tsv")),
        ])
        .args(["--set", &format!("output_dir={out:?}")]);
    for kv in [
        "data.max_train_samples=256",
        "data.max_eval_samples=32",
        "data.max_seq_length=24",
        "per_device_train_batch_size=8",
        "max_steps=18",
        "eval_strategy=\"steps\"",
        "eval_steps=6",
        "logging_steps=1",
        "progress=false",
        "seed=7",
    ] {
        c.args(["--set", kv]);
    }
    c.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// `hone pretrain` of the CPU character-level GPT on 100k characters of Tiny Shakespeare:
/// 30 updates, an evaluation and a checkpoint every 10.
fn pretrain(out: &Path, extra: &[&str]) -> Command {
    let data = shared_dir().join("data/tinyshakespeare/input.txt");
    let mut c = Command::new(env!("CARGO_BIN_EXE_hone"));
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .args([
            "pretrain",
            "--config",
            "examples/shakespeare-char-cpu.toml",
            "--log",
            "warn",
        ])
        .args(["--set", &format!("data.train_files=[{data:?}]")])
        .args(["--set", &format!("output_dir={out:?}")]);
    for kv in [
        "data.max_train_chars=100000",
        "max_steps=30",
        "lr_decay_steps=30",
        "warmup_steps=5",
        "eval_steps=10",
        "logging_steps=1",
        "progress=false",
    ] {
        c.args(["--set", kv]);
    }
    c.args(extra).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// How a user restarts a killed run: resume from a checkpoint, or start afresh in the
/// directory it left when it died before its first one.
fn restart_flags(out: &Path) -> &'static [&'static str] {
    let Ok(entries) = std::fs::read_dir(out) else {
        return &[];
    };
    let checkpointed = entries
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"));
    match checkpointed {
        true => &["--resume"],
        false => &["--overwrite-output-dir"],
    }
}

fn steps(metrics: &Path, key: &str) -> Vec<u64> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get(key).is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

/// A moment to kill at, seen in the output directory.
type Moment = dyn Fn(&Path) -> bool;

/// Whether `metrics.jsonl` in `out` has a line for update `step` or later.
fn logged_up_to(out: &Path, step: u64) -> bool {
    std::fs::read_to_string(out.join("metrics.jsonl")).is_ok_and(|text| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["step"].as_u64().is_some_and(|s| s >= step))
    })
}

/// Whether a checkpoint is being written in `out` (its temporary directory exists).
fn writing_checkpoint(out: &Path) -> bool {
    std::fs::read_dir(out).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
    })
}

/// Run `command` (a training command writing to the directory it is given, with the extra
/// flags) once straight through, and once killed at three moments seen in its output
/// directory (not at fixed times, which a busy machine shifts): mid-steps before the first
/// checkpoint (at update 3), while a checkpoint is being written, and mid-steps between two
/// checkpoints (at update 14). Each restart resumes the last; the end must match.
fn killed_three_times_ends_as_the_uninterrupted_run(
    name: &str,
    command: impl Fn(&Path, &[&str]) -> Command,
) {
    let root = std::env::temp_dir().join(format!("hone-kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (straight, killed): (PathBuf, PathBuf) = (root.join("straight"), root.join("killed"));
    let start = Instant::now();
    let out = command(&straight, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let moments: [(&str, &Moment); 3] = [
        ("after update 3", &|d| logged_up_to(d, 3)),
        ("during a checkpoint write", &|d| writing_checkpoint(d)),
        ("after update 14", &|d| logged_up_to(d, 14)),
    ];
    for (moment, reached) in moments {
        let mut child = command(&killed, restart_flags(&killed)).spawn().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name}: the run ended ({status}) before the kill {moment}");
            }
            if reached(&killed) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "{name}: no kill {moment}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let out = command(&killed, restart_flags(&killed)).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let a = std::fs::read(straight.join("model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "{name}: the resumed weights differ from the uninterrupted run's"
    );
    for key in ["loss", "eval_loss"] {
        let (x, y) = (
            steps(&straight.join("metrics.jsonl"), key),
            steps(&killed.join("metrics.jsonl"), key),
        );
        assert_eq!(x, y, "{name}: {key} steps in metrics.jsonl");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn sigkilled_finetuning_resumes_to_the_uninterrupted_weights() {
    killed_three_times_ends_as_the_uninterrupted_run("finetune", finetune);
}

#[test]
fn sigkilled_pretraining_resumes_to_the_uninterrupted_weights() {
    killed_three_times_ends_as_the_uninterrupted_run("pretrain", pretrain);
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Run `hone ARGS`, SIGKILL it as soon as an entry whose name ends with `temp_suffix`
/// appears in `dir` (its output being written), and say whether the kill hit it there.
fn kill_while_writing(args: &[&str], dir: &Path, temp_suffix: &str) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        let writing = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(temp_suffix))
        });
        if writing {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{args:?} never wrote"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn run_hone(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn merge_quantize_and_export_killed_mid_write_leave_the_old_output_or_none() {
    let root = std::env::temp_dir().join(format!("hone-kill-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let minilm = minilm_dir();
    let adapter = fixture("lora-minilm-sst2");
    let (merged, quantized, onnx) = (
        root.join("merged"),
        root.join("quantized"),
        root.join("model.onnx"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let merge = [
        "merge".to_string(),
        s(&adapter),
        "--base".into(),
        s(&minilm),
        "--output".into(),
        s(&merged),
    ];
    let quantize = [
        "quantize".to_string(),
        s(&minilm),
        "--int8".into(),
        "--output".into(),
        s(&quantized),
    ];
    let export = [
        "export".to_string(),
        s(&minilm),
        "--format".into(),
        "onnx".into(),
        "--output".into(),
        s(&onnx),
    ];

    // Directories: killed while being filled, nothing is left at the output path, and the
    // command then runs again to a complete directory.
    for (args, out) in [(&merge[..], &merged), (&quantize[..], &quantized)] {
        assert!(
            kill_while_writing(&refs(args), &root, ".partial"),
            "{args:?}"
        );
        assert!(!out.exists(), "{} was left half-written", out.display());
        run_hone(&refs(args));
        assert!(out.join("model.safetensors").is_file() && out.join("tokenizer.json").is_file());
        assert!(!root
            .join(format!(
                ".{}.partial",
                out.file_name().unwrap().to_string_lossy()
            ))
            .exists());
    }
    // A file: written once, killed while being rewritten, the old file is intact.
    run_hone(&refs(&export));
    let old = std::fs::read(&onnx).unwrap();
    assert!(kill_while_writing(&refs(&export), &root, ".tmp"));
    assert!(std::fs::read(&onnx).unwrap() == old, "model.onnx changed");
    std::fs::remove_dir_all(&root).unwrap();
}
