//! `hone bench`: presets build without a download, every precision runs, and the JSON line
//! carries the fields the benchmark tables are made from.

use std::process::Command;

fn bench(args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("bench")
        .args(args)
        .args(["--steps", "1", "--warmup", "0"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    Ok(serde_json::from_str(stdout.trim()).unwrap())
}

#[test]
fn presets_and_precisions_run_and_report() {
    let cases: &[&[&str]] = &[
        &["train", "--model", "minilm-l6", "--precision", "bf16"],
        &["train", "--model", "minilm-l6", "--precision", "fp16"],
        &["infer", "--model", "gpt2", "--precision", "fp32"],
    ];
    for case in cases {
        let args: Vec<&str> = case
            .iter()
            .copied()
            .chain(["--batch-size", "2", "--seq-len", "8"])
            .collect();
        let v = bench(&args).unwrap_or_else(|e| panic!("{case:?}: {e}"));
        assert_eq!(v["model"], case[2]);
        assert_eq!(v["precision"], case[4]);
        assert_eq!(v["batch_size"], 2);
        let ms = v["median_ms"].as_f64().unwrap();
        let tokens_per_s = v["tokens_per_s"].as_f64().unwrap();
        assert!(ms > 0.0, "{v}");
        // tokens/s is the batch's 16 tokens over the step time.
        assert!((tokens_per_s * ms / 1e3 - 16.0).abs() < 1e-6, "{v}");
        assert!(v["tflops"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bad_model_and_precision_are_clear_errors() {
    let err = bench(&["infer", "--model", "no-such-model"]).unwrap_err();
    assert!(
        err.contains("no-such-model") && err.contains("bert-base"),
        "{err}"
    );
    let err = bench(&["infer", "--model", "gpt2", "--precision", "int4"]).unwrap_err();
    assert!(err.contains("int4"), "{err}");
    let err = bench(&["infer", "--model", "gpt2", "--device", "cuda"]).unwrap_err();
    assert!(err.contains("without CUDA"), "{err}");
}
