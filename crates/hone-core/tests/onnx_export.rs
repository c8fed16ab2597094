//! ONNX export, checked in tract (a pure-Rust ONNX runtime): every architecture and head
//! hone exports reproduces hone's own outputs within 1e-4, at batch sizes and lengths other
//! than any export example (the axes are dynamic), padding included; and a model that
//! cannot be exported gets a one-line error and leaves no file.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::*;
use hone_core::export::onnx::{export, OnnxOptions, OnnxPrecision};
use hone_core::model::{Head, Model, ModelDir, Net, ProblemType};
use tract_onnx::prelude::{
    tract_ndarray, Framework, InferenceModelExt, IntoRunnable, TValue, TVec,
};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-onnx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `[B, T]` token ids below `vocab`, and a mask with row `b` padded by `b` positions
/// (the first row unpadded), as a tokenizer pads on the right.
fn batch(b: usize, t: usize, vocab: u32, seed: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let ids = (0..b)
        .map(|r| {
            (0..t)
                .map(|c| (seed + 7 * r as u32 + 13 * c as u32 * (r as u32 + 3)) % vocab)
                .collect()
        })
        .collect();
    let mask = (0..b)
        .map(|r| (0..t).map(|c| u32::from(c + r < t)).collect())
        .collect();
    (ids, mask)
}

fn i64_tensor(rows: &[Vec<u32>]) -> tract_onnx::prelude::Tensor {
    let (b, t) = (rows.len(), rows[0].len());
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    tract_ndarray::Array2::from_shape_vec((b, t), flat)
        .unwrap()
        .into()
}

/// Runs the exported graph in tract on `ids`/`mask` (and zero token types where the
/// graph takes them): its first output, flattened.
fn run_tract(path: &Path, ids: &[Vec<u32>], mask: &[Vec<u32>]) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let names: Vec<String> = model
        .model()
        .inputs
        .iter()
        .map(|o| model.model().node(o.node).name.clone())
        .collect();
    let zeros: Vec<Vec<u32>> = ids.iter().map(|r| vec![0; r.len()]).collect();
    let inputs: TVec<TValue> = names
        .iter()
        .map(|n| match n.as_str() {
            "input_ids" => i64_tensor(ids).into(),
            "attention_mask" => i64_tensor(mask).into(),
            "token_type_ids" => i64_tensor(&zeros).into(),
            other => panic!("unexpected graph input {other}"),
        })
        .collect();
    let out = model.run(inputs).unwrap();
    let out = out[0].cast_to::<f32>().unwrap();
    out.to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// hone's own output for the same rows: the head's first output, flattened.
fn run_hone(model: &Model<Net>, ids: &[Vec<u32>], mask: &[Vec<u32>]) -> Vec<f32> {
    let (ids, mask) = (tensor2(ids), tensor2(mask));
    let types = ids.zeros_like().unwrap();
    let out = match &*model.net {
        Net::Base(n) => n.encode(&ids, &types, &mask).unwrap().sequence,
        Net::SequenceClassifier(n) => n.forward(&ids, &types, &mask).unwrap(),
        Net::TokenClassifier(n) => n.forward(&ids, &types, &mask).unwrap(),
        Net::CausalLm(n) => n.forward(&ids, Some(&mask), None).unwrap(),
        _ => panic!("no exporter to compare"),
    };
    out.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Exports `model` and checks tract against hone on two batch shapes.
fn check_export(model: &Model<Net>, name: &str, vocab: u32) {
    check_export_with(model, name, vocab, &OnnxOptions::default(), 1e-4);
}

fn check_export_with(model: &Model<Net>, name: &str, vocab: u32, opts: &OnnxOptions, tol: f32) {
    let dir = temp_dir(name);
    let path = dir.join("model.onnx");
    export(model, opts, &path).unwrap();
    for (b, t, seed) in [(1, 12, 3), (3, 17, 11)] {
        let (ids, mask) = batch(b, t, vocab, seed);
        let expected = run_hone(model, &ids, &mask);
        let got = run_tract(&path, &ids, &mask);
        assert_eq!(got.len(), expected.len(), "{name}: output size at {b}x{t}");
        let diff = max_abs_diff(&got, &expected);
        assert!(
            diff < tol,
            "{name} at {b}x{t}: tract differs from hone by {diff}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `model` saved and loaded back: every tensor then comes from a checkpoint.
fn saved_and_loaded(model: &Model<Net>, name: &str) -> (Model<Net>, PathBuf) {
    let dir = temp_dir(name);
    model.save(&dir).unwrap();
    (Model::load(&dir, &Device::Cpu).unwrap(), dir)
}

#[test]
fn minilm_embeddings_export_reproduces_hone_in_tract() {
    let model = Model::load(&minilm_dir(), &Device::Cpu).unwrap();
    check_export(&model, "minilm", 30522);
}

/// A pruned model (layers with different head counts, a narrower feed-forward) exports too.
#[test]
fn a_pruned_model_exports_and_reproduces_hone() {
    use hone_core::model::surgery::{prune_dir, PrunePlan};
    let dir = temp_dir("pruned-src");
    let plan = PrunePlan {
        heads: [(0, vec![1, 7]), (3, vec![0])].into_iter().collect(),
        neurons: (0..6)
            .map(|l| (l, (0..1536).step_by(2).collect()))
            .collect(),
    };
    prune_dir(&minilm_dir(), &plan, &dir.join("pruned")).unwrap();
    let model = Model::load(&dir.join("pruned"), &Device::Cpu).unwrap();
    check_export(&model, "pruned", 30522);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Half precision: fp16 weights and activations, against hone's fp32 within fp16's error.
#[test]
fn minilm_exports_in_half_precision() {
    let model = Model::load(&minilm_dir(), &Device::Cpu).unwrap();
    let opts = OnnxOptions {
        precision: OnnxPrecision::Fp16,
        opset: 18,
    };
    check_export_with(&model, "minilm-fp16", 30522, &opts, 5e-2);
}

#[test]
fn sst2_lora_classifier_exports_merged_and_reproduces_hone() {
    // PEFT's SST-2 adapter on all-MiniLM-L6-v2, unmerged in hone: the export folds it in.
    let dir = ModelDir::open_with_base(&fixture("lora-minilm-sst2"), Some(&minilm_dir())).unwrap();
    let model = Model::open(&dir, &Device::Cpu).unwrap();
    assert!(model.adapter.is_some());
    check_export(&model, "sst2-lora", 30522);
}

#[test]
fn bert_and_gpt2_heads_export_and_reproduce_hone() {
    let device = Device::Cpu;
    let bert = ModelDir::open(&fixture("tiny-bert-pretraining")).unwrap();
    let labels = vec!["O".to_string(), "B-X".into(), "I-X".into()];
    for (head, name) in [
        (
            Head::SequenceClassification {
                id2label: labels.clone(),
                problem: ProblemType::SingleLabel,
            },
            "bert-seqcls",
        ),
        (
            Head::TokenClassification { id2label: labels },
            "bert-tokcls",
        ),
    ] {
        let fresh = Model::<Net>::load_for(&bert, head, &device, 5).unwrap();
        let (model, dir) = saved_and_loaded(&fresh, name);
        check_export(&model, name, bert.config.arch.vocab_size() as u32);
        let _ = std::fs::remove_dir_all(dir);
    }
    let gpt2 = Model::load(&fixture("tiny-gpt2"), &device).unwrap();
    check_export(&gpt2, "gpt2-lm", gpt2.config.arch.vocab_size() as u32);
    // pad_token_id 0: the logits come from each row's last token that is not 0.
    let seqcls = Model::load(&fixture("gpt2-seqcls"), &device).unwrap();
    check_export(
        &seqcls,
        "gpt2-seqcls",
        seqcls.config.arch.vocab_size() as u32,
    );
}

fn export_error(model: &Model<Net>, opts: &OnnxOptions, name: &str) -> String {
    let dir = temp_dir(name);
    let path = dir.join("model.onnx");
    let err = export(model, opts, &path).unwrap_err();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(files.is_empty(), "{name}: a failed export left {files:?}");
    let _ = std::fs::remove_dir_all(&dir);
    format!("{err:#}")
}

#[test]
fn exports_that_cannot_be_done_say_why_and_write_nothing() {
    let device = Device::Cpu;
    // A classifier whose checkpoint lacks its classifier: the head would be random.
    let bert = ModelDir::open(&fixture("tiny-bert-pretraining")).unwrap();
    let head = Head::SequenceClassification {
        id2label: vec!["a".into(), "b".into()],
        problem: ProblemType::SingleLabel,
    };
    let fresh = Model::<Net>::load_for(&bert, head, &device, 0).unwrap();
    let err = export_error(&fresh, &OnnxOptions::default(), "missing");
    assert!(err.contains("lacks tensor `classifier."), "{err}");

    // An opset older than LayerNormalization.
    let minilm = Model::load(&minilm_dir(), &device).unwrap();
    let old = OnnxOptions {
        opset: 16,
        ..Default::default()
    };
    let err = export_error(&minilm, &old, "opset");
    assert!(
        err.contains("opset 16") && err.contains("LayerNormalization"),
        "{err}"
    );

    // A head without an exporter.
    let marian = Model::load(&fixture("tiny-marian"), &device).unwrap();
    let err = export_error(&marian, &OnnxOptions::default(), "marian");
    assert!(err.contains("MarianMTModel has no ONNX exporter"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}
