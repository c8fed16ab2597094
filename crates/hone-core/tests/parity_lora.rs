//! LoRA against Hugging Face PEFT on `../shared/fixtures/lora-minilm-sst2`: a PEFT adapter
//! (r 8, alpha 16, query/value, classifier saved whole) on all-MiniLM-L6-v2 loads with the
//! fixture's probabilities, unmerged and merged; one training step has its loss and the
//! gradient of every trainable tensor; the counts are PEFT's.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use hone_core::model::adapter::from_peft_name;
use hone_core::model::{Head, Model, ModelDir, SequenceClassifier};
use hone_core::ops::CrossEntropyOptions;
use hone_core::tokenization::{pad_batch, TextTokenizer};

fn adapter_dir() -> ModelDir {
    ModelDir::open_with_base(&fixture("lora-minilm-sst2"), Some(&minilm_dir())).unwrap()
}

fn assert_close(got: &[Vec<f32>], want: &serde_json::Value, what: &str) {
    for (i, (g, w)) in got.iter().zip(want.as_array().unwrap()).enumerate() {
        let d = max_abs_diff(g, &f32s(w));
        assert!(d < 1e-5, "{what}: row {i} differs by {d}");
    }
}

#[test]
fn peft_adapter_loads_merges_and_trains_as_peft() {
    let fx = read_fixture("lora_minilm_expected.json");
    let dir = adapter_dir();
    let head = Head::from_config(&dir.config);
    assert_eq!(head.labels(), ["LABEL_0", "LABEL_1"]);
    let model = Model::<dyn SequenceClassifier>::load_for(&dir, head, &Device::Cpu, 0).unwrap();
    let mut tok = TextTokenizer::from_dir(dir.tokenizer_dir()).unwrap();
    tok.set_max_length(Some(fx["max_length"].as_u64().unwrap() as usize))
        .unwrap();
    let texts: Vec<String> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_close(
        &classifier_probabilities(&model, &tok, &texts),
        &fx["probabilities_unmerged"],
        "unmerged",
    );

    // PEFT's print_trainable_parameters.
    let count = |ps: Vec<(String, candle_core::Var)>| -> usize {
        ps.iter().map(|(_, v)| v.elem_count()).sum()
    };
    assert_eq!(
        count(model.params.trainable_params()),
        fx["trainable_params"].as_u64().unwrap() as usize
    );
    assert_eq!(
        model.num_parameters(),
        fx["total_params"].as_u64().unwrap() as usize
    );

    // merge_and_unload: a plain model directory with W + (alpha / r) B A.
    let out = std::env::temp_dir().join(format!("hone-lora-merged-{}", std::process::id()));
    model.save_merged(&out).unwrap();
    assert!(!out.join("adapter_config.json").exists());
    let merged = Model::load(&out, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn SequenceClassifier>()
        .unwrap();
    assert!(merged.adapter.is_none());
    assert!(merged
        .params
        .params()
        .iter()
        .all(|(n, _)| !n.contains("lora_")));
    assert_close(
        &classifier_probabilities(&merged, &tok, &texts),
        &fx["probabilities_merged"],
        "merged",
    );
    std::fs::remove_dir_all(&out).unwrap();

    // The training step: first 16 SST-2 rows, max length 64, dropout off.
    let step = &fx["train_step"];
    let rows: Vec<(String, i64)> =
        std::fs::read_to_string(shared_dir().join("data/sst2/train.tsv"))
            .unwrap()
            .lines()
            .skip(1)
            .take(16)
            .map(|l| {
                let (text, label) = l.rsplit_once('\t').unwrap();
                (text.to_string(), label.parse().unwrap())
            })
            .collect();
    tok.set_max_length(Some(64)).unwrap();
    let pairs: Vec<(String, Option<String>)> =
        rows.iter().map(|(t, _)| (t.clone(), None)).collect();
    let enc = tok.encode_batch(&pairs).unwrap();
    let refs: Vec<_> = enc.iter().collect();
    let b = pad_batch(&refs, tok.pad_id(), &Device::Cpu).unwrap();
    let labels = Tensor::new(rows.iter().map(|r| r.1).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let logits = model
        .net
        .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)
        .unwrap();
    let loss = model
        .net
        .loss(&logits, &labels, &CrossEntropyOptions::default())
        .unwrap();
    let got: f32 = loss.to_scalar().unwrap();
    let want = step["loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    let expected: serde_json::Map<String, serde_json::Value> = step["grad_norms_saved_names"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (from_peft_name(k), v.clone()))
        .collect();
    // Every trainable tensor and nothing else gets a gradient: the base is frozen.
    assert_grad_norms(
        &model.params.trainable_params(),
        &grads,
        &serde_json::Value::Object(expected),
        1e-3,
    );
    for (name, var) in model.params.params() {
        if !model.params.is_trainable(&name) {
            assert!(
                grads.get(var.as_tensor()).is_none(),
                "{name} got a gradient"
            );
        }
    }
}
