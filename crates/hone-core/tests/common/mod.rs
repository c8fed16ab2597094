//! Paths and comparisons shared by the integration tests.
#![allow(dead_code)]

pub mod synthetic;

use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use serde_json::Value;

/// A fresh, empty directory for one test (named by the test and the process).
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hone-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `../shared` beside the checkout (CI lays a copy there), or `$HONE_SHARED`.
pub fn shared_dir() -> PathBuf {
    match std::env::var_os("HONE_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures").join(name)
}

pub fn read_fixture(name: &str) -> Value {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The all-MiniLM-L6-v2 checkpoint that `scripts/fetch-model.sh` installs.
pub fn minilm_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/all-MiniLM-L6-v2"
    ));
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn i64s(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

pub fn u32_rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

pub fn i64_rows(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

pub fn tensor2<T: candle_core::WithDType>(rows: &[Vec<T>]) -> Tensor {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<T> = rows.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (b, t), &Device::Cpu).unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn l2(t: &Tensor) -> f64 {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Every parameter must get a gradient whose L2 norm matches the fixture's within `rel`
/// (relative) or 1e-6 (absolute).
pub fn assert_grad_norms(
    params: &[(String, Var)],
    grads: &candle_core::backprop::GradStore,
    expected: &Value,
    rel: f64,
) {
    let expected = expected.as_object().unwrap();
    let mut checked = 0;
    for (name, var) in params {
        let Some(want) = expected.get(name) else {
            panic!("parameter {name} has no expected gradient norm in the fixture")
        };
        let want = want.as_f64().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached {name}"));
        let got = l2(g);
        let tol = (rel * want.abs()).max(1e-6);
        assert!(
            (got - want).abs() <= tol,
            "grad norm of {name}: got {got}, expected {want}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        expected.len(),
        "the fixture lists parameters the model does not have"
    );
}

/// Probabilities `[rows][labels]` of a sequence classifier on a right-padded batch of
/// `texts` (the tokenizer's truncation applies), the forward pass on the thread pool.
pub fn classifier_probabilities(
    model: &hone_core::model::Model<dyn hone_core::model::SequenceClassifier>,
    tok: &hone_core::tokenization::TextTokenizer,
    texts: &[String],
) -> Vec<Vec<f32>> {
    let pairs: Vec<(String, Option<String>)> = texts.iter().map(|t| (t.clone(), None)).collect();
    let enc = tok.encode_batch(&pairs).unwrap();
    let refs: Vec<_> = enc.iter().collect();
    let b = hone_core::tokenization::pad_batch(&refs, tok.pad_id(), &Device::Cpu).unwrap();
    let logits = hone_core::runtime::on_thread_pool(|| {
        model
            .net
            .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)
    })
    .unwrap();
    hone_core::ops::softmax_last_dim(&logits)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// A second LoRA adapter for all-MiniLM-L6-v2 in a new directory: the PEFT fixture's with its B matrices scaled by -1.5 and its classifier
/// rows swapped, so that it answers differently.
pub fn flipped_lora_adapter(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hone-flipped-adapter-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("lora-minilm-sst2");
    std::fs::copy(
        src.join("adapter_config.json"),
        dir.join("adapter_config.json"),
    )
    .unwrap();
    let tensors = candle_core::safetensors::load(
        src.join("adapter_model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let changed: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| {
            let t = if k.contains("lora_B") {
                (t * -1.5).unwrap()
            } else if k.contains("classifier") {
                let idx = Tensor::new(&[1u32, 0], &candle_core::Device::Cpu).unwrap();
                t.index_select(&idx, 0).unwrap()
            } else {
                t
            };
            (k, t)
        })
        .collect();
    candle_core::safetensors::save(&changed, dir.join("adapter_model.safetensors")).unwrap();
    dir
}
