//! Dynamic int8 quantization: a quantized directory stores its linear layers' weights as
//! I8 with per-channel scales, loads back with those layers running in int8, stays close
//! to the f32 model, and a damaged file is refused by name.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use hone_core::model::{Model, ModelDir, Net, SequenceClassifier};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-int8-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// PEFT's SST-2 adapter on all-MiniLM-L6-v2, merged: a plain classifier directory.
fn sst2_classifier(dir: &Path) {
    let adapter =
        ModelDir::open_with_base(&fixture("lora-minilm-sst2"), Some(&minilm_dir())).unwrap();
    Model::open(&adapter, &Device::Cpu)
        .unwrap()
        .save_merged(dir)
        .unwrap();
}

fn logits(model: &Model<Net>, ids: &Tensor) -> Vec<Vec<f32>> {
    let m = model.clone().into_kind::<dyn SequenceClassifier>().unwrap();
    let types = ids.zeros_like().unwrap();
    m.net
        .forward(ids, &types, &ids.ones_like().unwrap())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap()
}

#[test]
fn int8_model_round_trips_and_stays_close_to_f32() {
    let root = temp_dir("round-trip");
    let (fp32_dir, int8_dir) = (root.join("fp32"), root.join("int8"));
    sst2_classifier(&fp32_dir);
    let quantizing =
        Model::load_quantizing(&ModelDir::open(&fp32_dir).unwrap(), &Device::Cpu).unwrap();
    quantizing.save_int8(&int8_dir).unwrap();

    // The file: 6 layers x 6 linear layers, the pooler and the classifier in I8, each with
    // its scales; the embeddings and norms in F32.
    let bytes = std::fs::read(int8_dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let int8: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::I8)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(int8.len(), 6 * 6 + 2, "{int8:?}");
    for name in &int8 {
        let scale = st.tensor(&format!("{name}_scale")).unwrap();
        assert_eq!(scale.shape()[0], st.tensor(name).unwrap().shape()[0]);
    }
    let word = st.tensor("bert.embeddings.word_embeddings.weight").unwrap();
    assert_eq!(word.dtype(), safetensors::Dtype::F32);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(int8_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["quantization_config"]["quant_method"], "hone_int8");

    // Loaded back, its linear layers run in int8, close to the f32 model.
    let fp32 = Model::load(&fp32_dir, &Device::Cpu).unwrap();
    let q = Model::load(&int8_dir, &Device::Cpu).unwrap();
    assert_eq!(q.mode.int8().unwrap().modules().len(), int8.len());
    assert!(fp32.mode.int8().is_none());
    let ids = tensor2(&[
        vec![101u32, 2023, 3185, 2003, 6429, 1998, 2200, 4569, 102],
        vec![101, 1037, 6659, 1010, 11771, 2143, 1012, 102, 102],
    ]);
    let (a, b) = (logits(&fp32, &ids), logits(&q, &ids));
    let reloaded = logits(&quantizing, &ids);
    for ((ra, rb), rr) in a.iter().zip(&b).zip(&reloaded) {
        assert_eq!(rb, rr, "the saved int8 weights are the ones quantized");
        let diff = max_abs_diff(ra, rb);
        assert!(diff < 0.05, "int8 logits {rb:?} vs f32 {ra:?}");
        assert_ne!(ra, rb, "the int8 path ran");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_damaged_int8_checkpoint_is_refused_by_name() {
    let root = temp_dir("damaged");
    let (fp32_dir, int8_dir) = (root.join("fp32"), root.join("int8"));
    sst2_classifier(&fp32_dir);
    Model::load_quantizing(&ModelDir::open(&fp32_dir).unwrap(), &Device::Cpu)
        .unwrap()
        .save_int8(&int8_dir)
        .unwrap();
    // Drop one scale tensor.
    let path = int8_dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let victim = "bert.encoder.layer.0.attention.self.query.weight_scale";
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != victim)
        .collect();
    let out = safetensors::serialize(kept, None).unwrap();
    std::fs::write(&path, out).unwrap();
    let err = match Model::load(&int8_dir, &Device::Cpu) {
        Ok(_) => panic!("a missing scale must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(victim), "{err}");
    // An adapter must be merged before it is quantized.
    let adapter =
        ModelDir::open_with_base(&fixture("lora-minilm-sst2"), Some(&minilm_dir())).unwrap();
    let err = match Model::load_quantizing(&adapter, &Device::Cpu) {
        Ok(_) => panic!("an adapter must be refused"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("merge it first"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn gpt2_conv1d_layers_quantize_in_their_own_layout() {
    let root = temp_dir("gpt2");
    let int8_dir = root.join("int8");
    let fp32_dir = fixture("gpt2-seqcls");
    let quantizing =
        Model::load_quantizing(&ModelDir::open(&fp32_dir).unwrap(), &Device::Cpu).unwrap();
    quantizing.save_int8(&int8_dir).unwrap();

    // Every Conv1D (c_attn, attn.c_proj, c_fc, mlp.c_proj of each block) and the score head
    // in I8; each I8 tensor has the f32 checkpoint's shape ([in, out] for a Conv1D), its
    // scales one per output channel.
    let original = std::fs::read(fp32_dir.join("model.safetensors")).unwrap();
    let original = safetensors::SafeTensors::deserialize(&original).unwrap();
    let bytes = std::fs::read(int8_dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut int8: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::I8)
        .map(|(n, _)| n)
        .collect();
    int8.sort();
    assert_eq!(int8.len(), 2 * 4 + 1, "{int8:?}");
    for name in &int8 {
        let shape = st.tensor(name).unwrap().shape().to_vec();
        let bare = name.trim_start_matches("transformer.");
        let f32_shape = original
            .tensor(name)
            .or_else(|_| original.tensor(bare))
            .unwrap()
            .shape()
            .to_vec();
        assert_eq!(shape, f32_shape, "{name}");
        let outputs = if name.contains("score") {
            shape[0]
        } else {
            shape[1]
        };
        let scale = st.tensor(&format!("{name}_scale")).unwrap();
        assert_eq!(scale.shape(), [outputs], "{name}");
    }

    // Loaded back: the same int8 weights, close to f32, and the int8 path runs.
    let fp32 = Model::load(&fp32_dir, &Device::Cpu).unwrap();
    let q = Model::load(&int8_dir, &Device::Cpu).unwrap();
    assert_eq!(q.mode.int8().unwrap().modules().len(), int8.len());
    let ids = tensor2(&[
        vec![5u32, 17, 42, 99, 3, 250, 8],
        vec![7, 7, 300, 12, 1, 2, 511],
    ]);
    let (a, b) = (logits(&fp32, &ids), logits(&q, &ids));
    for ((ra, rb), rr) in a.iter().zip(&b).zip(&logits(&quantizing, &ids)) {
        assert_eq!(rb, rr, "the saved int8 weights are the ones quantized");
        let diff = max_abs_diff(ra, rb);
        assert!(diff < 0.05, "int8 logits {rb:?} vs f32 {ra:?}");
        assert_ne!(ra, rb, "the int8 path ran");
    }
    std::fs::remove_dir_all(&root).unwrap();
}
