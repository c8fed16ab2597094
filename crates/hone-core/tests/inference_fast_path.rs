//! The CPU inference path of a frozen model (weights packed once, bias + GELU fused into
//! the GEMM, the forward pass on the thread pool) against the fixtures of Transformers and
//! PEFT, to the tolerance of the parity tests; and the trainer refusing a frozen model.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use hone_core::inference::embed::mean_pool;
use hone_core::model::{Encoder, Head, Model, ModelDir, SequenceClassifier};
use hone_core::ops::softmax_last_dim;
use hone_core::runtime::on_thread_pool;
use hone_core::tokenization::{pad_ids, TextTokenizer};

fn assert_rows_close(got: &[Vec<f32>], want: &serde_json::Value, tol: f32, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = max_abs_diff(g, &f32s(w));
        assert!(d < tol, "{what}: row {i} differs by {d}");
    }
}

fn texts(fx: &serde_json::Value) -> Vec<String> {
    fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn frozen_minilm_matches_transformers() {
    let fx = read_fixture("minilm_forward.json");
    let dir = minilm_dir();
    let model = Model::load(&dir, &Device::Cpu)
        .unwrap()
        .frozen()
        .into_kind::<dyn Encoder>()
        .unwrap();
    let mut tok = TextTokenizer::from_dir(&dir).unwrap();
    tok.set_max_length(Some(fx["max_length"].as_u64().unwrap() as usize))
        .unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let enc = tok.encode(text, None).unwrap();
        let b = pad_ids(&[enc.get_ids()], &[enc.get_type_ids()], 0, &Device::Cpu).unwrap();
        let out = on_thread_pool(|| {
            model
                .net
                .encode(&b.input_ids, &b.token_type_ids, &b.attention_mask)
        })
        .unwrap();
        let mean = mean_pool(&out.sequence, &b.attention_mask).unwrap();
        let mean = mean.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let pooler = out.pooled.unwrap().flatten_all().unwrap();
        let pooler = pooler.to_vec1::<f32>().unwrap();
        for (name, got) in [("mean", &mean), ("pooler", &pooler)] {
            let d = max_abs_diff(got, &f32s(&case[name]));
            assert!(d < 1e-4, "{name} of {text:?} differs by {d}");
        }
    }
    // The padded batch: more rows than one micro-block of the GEMM, and padding.
    let pb = &fx["padded_batch"];
    let ids = u32_rows(&pb["input_ids"]);
    let mask = u32_rows(&pb["attention_mask"]);
    let types: Vec<Vec<u32>> = ids.iter().map(|r| vec![0; r.len()]).collect();
    let out = on_thread_pool(|| {
        model
            .net
            .encode(&tensor2(&ids), &tensor2(&types), &tensor2(&mask))
    })
    .unwrap();
    for (i, want) in pb["cls"].as_array().unwrap().iter().enumerate() {
        let got = out.sequence.get(i).unwrap().get(0).unwrap();
        let d = max_abs_diff(&got.to_vec1::<f32>().unwrap(), &f32s(want));
        assert!(d < 1e-4, "padded row {i}: [CLS] differs by {d}");
    }
}

#[test]
fn frozen_gpt2_classifier_matches_transformers() {
    // Conv1D weights stored [in, out], GELU's tanh form fused, a 2-column score layer
    // without bias (a partial panel).
    let fx = read_fixture("gpt2_seqcls_expected.json");
    let dir = fixture("gpt2-seqcls");
    let model = Model::load(&dir, &Device::Cpu)
        .unwrap()
        .frozen()
        .into_kind::<dyn SequenceClassifier>()
        .unwrap();
    let ids = u32_rows(&fx["input_ids"]);
    let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let b = pad_ids(&rows, &[], 0, &Device::Cpu).unwrap();
    let logits = on_thread_pool(|| {
        model
            .net
            .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)
    })
    .unwrap();
    let probs: Vec<Vec<f32>> = softmax_last_dim(&logits).unwrap().to_vec2().unwrap();
    assert_rows_close(&probs, &fx["probabilities"], 1e-5, "gpt2 seqcls");
}

#[test]
fn frozen_peft_adapter_matches_peft_unmerged() {
    // The base product packed, the adapter's branch beside it.
    let fx = read_fixture("lora_minilm_expected.json");
    let dir = ModelDir::open_with_base(&fixture("lora-minilm-sst2"), Some(&minilm_dir())).unwrap();
    let head = Head::from_config(&dir.config);
    let model = Model::<dyn SequenceClassifier>::load_for(&dir, head, &Device::Cpu, 0)
        .unwrap()
        .frozen();
    let mut tok = TextTokenizer::from_dir(dir.tokenizer_dir()).unwrap();
    tok.set_max_length(Some(fx["max_length"].as_u64().unwrap() as usize))
        .unwrap();
    let probs = classifier_probabilities(&model, &tok, &texts(&fx));
    assert_rows_close(&probs, &fx["probabilities_unmerged"], 1e-5, "unmerged");
}

#[test]
fn thread_pool_runs_nested_work_and_returns_its_value() {
    let sum = on_thread_pool(|| {
        assert!(rayon::current_thread_index().is_some(), "runs on a worker");
        // Nested: runs in place.
        on_thread_pool(|| {
            Tensor::arange(0f32, 100f32, &Device::Cpu)?
                .sum_all()?
                .to_scalar::<f32>()
        })
    })
    .unwrap();
    assert_eq!(sum, 4950.0);
}
