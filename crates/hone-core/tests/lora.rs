//! LoRA on every architecture and head: a fresh adapter changes nothing until it trains,
//! merging gives the unmerged model's outputs (GPT-2's transposed Conv1D weights
//! included), PEFT's files round-trip, training touches only the adapter and the head and
//! resumes exactly, and an adapter that does not fit its base is refused by name.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use hone_core::model::adapter::{LoraConfig, TargetModules};
use hone_core::model::{
    CausalLm, Head, Model, ModelDir, Net, ProblemType, Seq2SeqLm, SequenceClassifier,
};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn lora(targets: &[&str], base: &Path) -> LoraConfig {
    LoraConfig {
        peft_type: Default::default(),
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: TargetModules::Names(targets.iter().map(|t| t.to_string()).collect()),
        modules_to_save: None,
        bias: Default::default(),
        fan_in_fan_out: false,
        base_model_name_or_path: Some(base.display().to_string()),
        task_type: None,
        use_rslora: false,
        use_dora: false,
    }
}

/// Give every `lora_B` random values, so that the adapter changes the output.
fn perturb_b<N: ?Sized>(model: &Model<N>) {
    for (name, var) in model.params.params() {
        if name.contains("lora_B") {
            let t = (Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu).unwrap() * 0.05).unwrap();
            var.set(&t).unwrap();
        }
    }
}

/// A classifier's logits for one all-MiniLM-L6-v2 sentence.
fn sentence_logits(m: &Model<dyn SequenceClassifier>) -> Vec<f32> {
    let x = ids(&[&[101, 2023, 3185, 2001, 2307, 102]]);
    m.net
        .forward(&x, &x.zeros_like().unwrap(), &x.ones_like().unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn ids(rows: &[&[u32]]) -> Tensor {
    tensor2(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>())
}

#[test]
fn gpt2_adapters_on_conv1d_layers_merge_exactly() {
    let dir = ModelDir::open(&fixture("tiny-gpt2")).unwrap();
    let base = Model::<dyn CausalLm>::load_for(&dir, Head::CausalLm, &Device::Cpu, 0).unwrap();
    // c_attn is [64, 192] (not square), c_proj [64, 64]: both orientations are exercised.
    let config = lora(&["c_attn", "c_proj"], &fixture("tiny-gpt2"));
    let model =
        Model::<dyn CausalLm>::load_with_new_adapter(&dir, Head::CausalLm, config, &Device::Cpu, 1)
            .unwrap();
    let x = ids(&[&[1, 5, 9, 33, 2, 7]]);
    let logits = |m: &Model<dyn CausalLm>| m.net.forward(&x, None, None).unwrap();
    let before = logits(&base);
    assert_eq!(
        max_abs_diff(
            &before.flatten_all().unwrap().to_vec1().unwrap(),
            &logits(&model).flatten_all().unwrap().to_vec1().unwrap()
        ),
        0.0,
        "a fresh adapter (B = 0) changes nothing"
    );
    // Adapters on attn.c_attn, attn.c_proj and mlp.c_proj of each of the 2 layers.
    let adapters = model
        .params
        .trainable_params()
        .iter()
        .filter(|(n, _)| n.contains("lora_"))
        .count();
    assert_eq!(adapters, 2 * 3 * 2);
    perturb_b(&model);
    let adapted = logits(&model);
    let out = temp_dir("gpt2-merged");
    model.save_merged(&out).unwrap();
    let merged = Model::load(&out, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn CausalLm>()
        .unwrap();
    let d = max_abs_diff(
        &adapted.flatten_all().unwrap().to_vec1().unwrap(),
        &logits(&merged).flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert!(d < 1e-4, "merged differs from adapted by {d}");
    let moved = max_abs_diff(
        &adapted.flatten_all().unwrap().to_vec1().unwrap(),
        &before.flatten_all().unwrap().to_vec1().unwrap(),
    );
    assert!(moved > 1e-3, "the adapter changed the output ({moved})");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn peft_files_round_trip_and_name_what_peft_needs() {
    let minilm = ModelDir::open(&minilm_dir()).unwrap();
    let head = Head::SequenceClassification {
        id2label: vec!["neg".into(), "pos".into()],
        problem: ProblemType::SingleLabel,
    };
    let config = LoraConfig {
        target_modules: TargetModules::AllLinear,
        ..lora(&[], &minilm_dir())
    };
    let model = Model::<dyn SequenceClassifier>::load_with_new_adapter(
        &minilm,
        head.clone(),
        config,
        &Device::Cpu,
        5,
    )
    .unwrap();
    // all-linear: the 6 linear layers of each of the 6 layers, and the pooler.
    let adapted: Vec<String> = model
        .params
        .trainable_params()
        .into_iter()
        .filter_map(|(n, _)| n.strip_suffix(".lora_A.weight").map(str::to_string))
        .collect();
    assert_eq!(adapted.len(), 6 * 6 + 1, "{adapted:?}");
    assert!(
        adapted.iter().all(|m| m.starts_with("bert.")),
        "not the head"
    );
    perturb_b(&model);
    let out = temp_dir("round-trip");
    model.save(&out).unwrap();
    assert!(
        !out.join("model.safetensors").exists(),
        "only the adapter is saved"
    );

    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    assert_eq!(cfg["target_modules"], "all-linear");
    assert_eq!(cfg["r"], 4);
    assert_eq!(
        cfg["modules_to_save"],
        serde_json::json!(["classifier", "score"])
    );
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut keys = st.names();
    keys.sort();
    assert!(keys.contains(&"base_model.model.classifier.weight"));
    assert!(
        keys.contains(&"base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight")
    );
    assert!(keys.iter().all(|k| k.starts_with("base_model.model.")));
    assert_eq!(keys.len(), 2 * adapted.len() + 2);

    let reloaded = Model::load(&out, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn SequenceClassifier>()
        .unwrap();
    assert_eq!(reloaded.head, head, "hone's config.json keeps the labels");
    assert_eq!(sentence_logits(&model), sentence_logits(&reloaded));
    std::fs::remove_dir_all(&out).unwrap();
}

/// A module saved whole (`pooler`) and trained biases (`bias = "all"`) come back from the
/// adapter file, not from the base checkpoint, whose names lack the `bert.` prefix.
#[test]
fn modules_to_save_and_trained_biases_reload_from_the_adapter() {
    let minilm = ModelDir::open(&minilm_dir()).unwrap();
    let head = Head::SequenceClassification {
        id2label: vec!["neg".into(), "pos".into()],
        problem: ProblemType::SingleLabel,
    };
    let config = LoraConfig {
        modules_to_save: Some(vec!["classifier".into(), "pooler".into()]),
        bias: hone_core::model::adapter::LoraBias::All,
        ..lora(&["query", "value"], &minilm_dir())
    };
    let model = Model::<dyn SequenceClassifier>::load_with_new_adapter(
        &minilm,
        head,
        config,
        &Device::Cpu,
        5,
    )
    .unwrap();
    // Move every trained tensor off its base value, as training would.
    for (_, var) in model.params.trainable_params() {
        let noise = (Tensor::randn(0f32, 1.0, var.shape(), &Device::Cpu).unwrap() * 0.05).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    let out = temp_dir("saved-modules");
    model.save(&out).unwrap();
    let reloaded = Model::load(&out, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn SequenceClassifier>()
        .unwrap();
    assert_eq!(sentence_logits(&model), sentence_logits(&reloaded));
    std::fs::remove_dir_all(&out).unwrap();
}

/// Copy the PEFT fixture adapter into a temp dir, with its config edited by `edit`.
fn edited_fixture(name: &str, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let dir = temp_dir(name);
    let src = fixture("lora-minilm-sst2");
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    dir
}

fn load_error(dir: &Path, base: &Path) -> String {
    let model_dir = match ModelDir::open_with_base(dir, Some(base)) {
        Ok(d) => d,
        Err(e) => return format!("{e:#}"),
    };
    match Model::<Net>::open(&model_dir, &Device::Cpu) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn an_adapter_that_does_not_fit_its_base_is_refused_by_name() {
    // Target modules the base does not have.
    let dir = edited_fixture("targets", |c| {
        c["target_modules"] = serde_json::json!(["c_attn"])
    });
    let err = load_error(&dir, &minilm_dir());
    assert!(
        err.contains("match no linear layer") && err.contains("query"),
        "{err}"
    );
    // A rank that is not the tensors'.
    let dir = edited_fixture("rank", |c| c["r"] = serde_json::json!(4));
    let err = load_error(&dir, &minilm_dir());
    assert!(
        err.contains("bert.encoder.layer.0.attention.self.query.lora_A.weight")
            && err.contains("[8, 384]")
            && err.contains("[4, 384]"),
        "{err}"
    );
    // Tensors for layers the config does not target.
    let dir = edited_fixture("stray", |c| {
        c["target_modules"] = serde_json::json!(["query"])
    });
    let err = load_error(&dir, &minilm_dir());
    assert!(
        err.contains("value.lora_") && err.contains("has no place"),
        "{err}"
    );
    // Another base: a GPT-2 classifier's head (score) is not in a BERT adapter.
    let dir = edited_fixture("base", |_| {});
    let err = load_error(&dir, &fixture("tiny-gpt2"));
    assert!(
        err.contains("`score.weight`") && err.contains("adapter_model.safetensors"),
        "{err}"
    );
    // An unsupported variant.
    let dir = edited_fixture("dora", |c| c["use_dora"] = serde_json::json!(true));
    let err = load_error(&dir, &minilm_dir());
    assert!(err.contains("use_dora"), "{err}");
    for name in ["targets", "rank", "stray", "base", "dora"] {
        let _ = std::fs::remove_dir_all(temp_dir(name));
    }
}

#[test]
fn frozen_base_weights_stay_put_while_the_adapter_trains() {
    use hone_core::tasks::classification::{ClassificationData, ClassificationRecipe};
    use hone_core::tasks::PeftArgs;
    use hone_core::training::{EvalStrategy, Trainer};
    let out = temp_dir("train");
    let mut r = ClassificationRecipe::default();
    r.model.model_name_or_path = minilm_dir();
    r.data.train_file = shared_dir().join("data/sst2/validation.tsv");
    r.data.text_column_names = vec!["sentence".into()];
    r.data.max_train_samples = Some(64);
    r.data.max_seq_length = 32;
    r.peft = Some(PeftArgs {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.1,
        ..Default::default()
    });
    r.training.output_dir = out.clone();
    r.training.progress = false;
    r.training.eval_strategy = EvalStrategy::No;
    r.training.max_steps = Some(4);
    r.training.per_device_train_batch_size = 16;
    r.training.learning_rate = 1e-2;
    let (model, data) = ClassificationData::prepare(&r, &Device::Cpu).unwrap();
    let snapshot = |m: &Model<dyn SequenceClassifier>| -> Vec<(String, Vec<f32>)> {
        m.params
            .params()
            .into_iter()
            .map(|(n, v)| {
                let t = v.as_tensor().to_dtype(DType::F32).unwrap();
                (n, t.flatten_all().unwrap().to_vec1().unwrap())
            })
            .collect()
    };
    let before = snapshot(&model);
    Trainer::<ClassificationData>::prepare_output_dir(&r.training, false).unwrap();
    Trainer::new(r.training.clone(), &model, &data)
        .train(false)
        .unwrap();
    for ((name, a), (_, b)) in before.iter().zip(snapshot(&model)) {
        let trains = name.contains("lora_") || name.starts_with("classifier.");
        assert_eq!(&b != a, trains, "{name}: changed = {}", &b != a);
    }
    // The output directory is a PEFT adapter with hone's config beside it.
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "config.json",
        "tokenizer.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(!out.join("model.safetensors").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn every_head_takes_an_adapter_and_trains_its_head_whole() {
    let labels = vec!["O".to_string(), "B-PER".to_string(), "I-PER".to_string()];
    let cases = [
        (
            minilm_dir(),
            Head::TokenClassification { id2label: labels },
            Some("classifier."),
        ),
        (
            fixture("gpt2-seqcls"),
            Head::SequenceClassification {
                id2label: vec!["0".into(), "1".into()],
                problem: ProblemType::SingleLabel,
            },
            Some("score."),
        ),
        (fixture("tiny-gpt2"), Head::CausalLm, None),
        (
            fixture("tiny-bert-pretraining"),
            Head::MaskedLm { nsp: true },
            None,
        ),
    ];
    for (path, head, head_module) in cases {
        let dir = ModelDir::open(&path).unwrap();
        let targets = dir.config.arch.default_lora_targets();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let config = lora(&targets, &path);
        let model =
            Model::<Net>::load_with_new_adapter(&dir, head.clone(), config, &Device::Cpu, 0)
                .unwrap();
        let trainable: Vec<String> = model
            .params
            .trainable_params()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let layers = dir.config.arch.num_layers();
        let adapters = trainable.iter().filter(|n| n.contains(".lora_")).count();
        assert_eq!(
            adapters,
            2 * targets.len() * layers,
            "{head:?}: {trainable:?}"
        );
        let others: Vec<&String> = trainable.iter().filter(|n| !n.contains(".lora_")).collect();
        match head_module {
            Some(m) => assert!(
                !others.is_empty() && others.iter().all(|n| n.starts_with(m)),
                "{head:?}: {others:?}"
            ),
            None => assert!(others.is_empty(), "{head:?}: {others:?}"),
        }
    }
}

/// Marian with PEFT's default targets (`q_proj`, `v_proj`): adapters on every self- and
/// cross-attention, nothing else trains (final_logits_bias is a buffer), the adapted model
/// starts out equal to the base (B = 0) and gradients reach every adapter matrix.
#[test]
fn marian_takes_adapters_on_self_and_cross_attention() {
    let path = fixture("tiny-marian");
    let dir = ModelDir::open(&path).unwrap();
    let base = Model::load(&path, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn Seq2SeqLm>()
        .unwrap();
    let config = lora(&["q_proj", "v_proj"], &path);
    let model = Model::<dyn Seq2SeqLm>::load_with_new_adapter(
        &dir,
        Head::Seq2SeqLm,
        config,
        &Device::Cpu,
        0,
    )
    .unwrap();
    let trainable = model.params.trainable_params();
    // 2 encoder layers x self_attn + 2 decoder layers x (self_attn, encoder_attn); q and v;
    // A and B.
    assert_eq!(
        trainable.len(),
        (2 + 2 * 2) * 2 * 2,
        "{:?}",
        trainable.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    assert!(trainable.iter().all(|(n, _)| n.contains(".lora_")));
    let fx = read_fixture("tiny_marian_expected.json");
    let ids = tensor2(&u32_rows(&fx["input_ids"]));
    let mask = tensor2(&u32_rows(&fx["attention_mask"]));
    let dec = tensor2(&u32_rows(&fx["decoder_input_ids"]));
    let labels = tensor2(&i64_rows(&fx["labels"]));
    let logits = model.net.forward(&ids, &mask, &dec).unwrap();
    let same = base.net.forward(&ids, &mask, &dec).unwrap();
    let d: f32 = (&logits - &same)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0, "B starts at zero: the adapter changes nothing yet");
    let grads = model
        .net
        .loss(&logits, &labels, 0.1)
        .unwrap()
        .backward()
        .unwrap();
    for (name, var) in &trainable {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "no gradient for {name}"
        );
    }
}
