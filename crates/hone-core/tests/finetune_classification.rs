//! Fine-tuning end to end on real data: learning, exact resume, bad input.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::*;
use hone_core::tasks::classification::{ClassificationData, ClassificationRecipe};
use hone_core::tasks::PeftArgs;
use hone_core::training::{EvalStrategy, Trainer};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn sst2_recipe(out: &Path, train_rows: usize, eval_rows: usize) -> ClassificationRecipe {
    let mut r = ClassificationRecipe::default();
    r.model.model_name_or_path = minilm_dir();
    r.data.train_file = shared_dir().join("data/sst2/train.tsv");
    r.data.validation_file = Some(shared_dir().join("data/sst2/validation.tsv"));
    r.data.text_column_names = vec!["sentence".into()];
    r.data.max_train_samples = Some(train_rows);
    r.data.max_eval_samples = Some(eval_rows);
    r.data.max_seq_length = 64;
    r.training.output_dir = out.to_path_buf();
    r.training.progress = false;
    r.training.per_device_train_batch_size = 32;
    r.training.learning_rate = 5e-5;
    r.training.weight_decay = 0.01;
    r.training.warmup_ratio = 0.1;
    r.training.num_train_epochs = 1.0;
    r.training.metric_for_best_model = "accuracy".into();
    r
}

fn read_tensors(file: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The CI-sized version of the SST-2 recipe: a few thousand sentences, one epoch.
#[test]
fn sst2_short_run_learns() {
    let out = temp_dir("sst2");
    let mut recipe = sst2_recipe(&out, 3000, 500);
    // Smaller batches: more updates for the same compute in a CI-sized run.
    recipe.training.per_device_train_batch_size = 16;
    let (model, task) = ClassificationData::prepare(&recipe, &Device::Cpu).unwrap();
    Trainer::<ClassificationData>::prepare_output_dir(&recipe.training, false).unwrap();
    let result = Trainer::new(recipe.training.clone(), &model, &task)
        .train(false)
        .unwrap();
    let acc = result.last_eval["eval_accuracy"];
    assert!(
        acc >= 0.80,
        "validation accuracy {acc} after one short epoch"
    );
    // The output directory is a Hugging Face model directory with labels and metrics.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["0"], "0");
    assert_eq!(config["label2id"]["1"], 1);
    let names: Vec<String> = read_tensors(&out.join("model.safetensors"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"classifier.weight".to_string()));
    assert!(names.contains(&"bert.embeddings.word_embeddings.weight".to_string()));
    assert!(out.join("tokenizer.json").is_file());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().any(|l| l.contains("eval_accuracy")));

    // The saved model predicts through the CLI pipeline with the same accuracy.
    let classifier =
        hone_core::inference::classify::TextClassificationPipeline::load(&out, &Device::Cpu, 64)
            .unwrap();
    let preds = classifier
        .predict(
            &[
                ("a wonderful , moving film".into(), None),
                ("dull and lifeless".into(), None),
            ],
            8,
        )
        .unwrap();
    assert_eq!(preds[0].label, "1");
    assert_eq!(preds[1].label, "0");
    let p: f32 = preds[0].probabilities.values().sum();
    assert!((p - 1.0).abs() < 1e-5);
    std::fs::remove_dir_all(&out).unwrap();
}

/// Train 5 updates straight, or interrupted after `interrupt` and resumed in a fresh
/// model (as a new process would); with `peft`, a LoRA adapter. The output directory.
fn train_resumable(name: &str, interrupt: Option<usize>, peft: Option<PeftArgs>) -> PathBuf {
    let out = temp_dir(name);
    let mut recipe = sst2_recipe(&out, 96, 32);
    recipe.data.max_seq_length = 24;
    recipe.training.per_device_train_batch_size = 8;
    recipe.training.gradient_accumulation_steps = 2;
    recipe.training.eval_strategy = EvalStrategy::No;
    recipe.training.max_steps = Some(5);
    recipe.training.logging_steps = 1;
    recipe.peft = peft;
    let (model, task) = ClassificationData::prepare(&recipe, &Device::Cpu).unwrap();
    Trainer::<ClassificationData>::prepare_output_dir(&recipe.training, false).unwrap();
    let mut args = recipe.training.clone();
    args.interrupt_after_steps = interrupt;
    let first = Trainer::new(args, &model, &task).train(false).unwrap();
    if interrupt.is_some() {
        assert!(first.interrupted);
        // A fresh process: rebuild everything from the recipe, then resume.
        let (model, task) = ClassificationData::prepare(&recipe, &Device::Cpu).unwrap();
        Trainer::<ClassificationData>::prepare_output_dir(&recipe.training, true).unwrap();
        let second = Trainer::new(recipe.training.clone(), &model, &task)
            .train(true)
            .unwrap();
        assert_eq!(second.global_step, 5);
    }
    out
}

/// Every tensor of two weight files is byte-identical.
fn assert_same_tensors(a: &Path, b: &Path, file: &str) {
    let (a, b) = (read_tensors(&a.join(file)), read_tensors(&b.join(file)));
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(da == db, "tensor {na} differs after resume");
    }
}

/// Interrupt after k updates, resume, and end with bit-identical weights.
#[test]
fn resumed_run_matches_uninterrupted_run_bit_for_bit() {
    let straight = train_resumable("straight", None, None);
    let resumed = train_resumable("resumed", Some(2), None);
    assert_same_tensors(&straight, &resumed, "model.safetensors");
    // And training changed the weights at all.
    let base = candle_core::safetensors::load(minilm_dir().join("model.safetensors"), &Device::Cpu)
        .unwrap();
    let q = base["encoder.layer.0.attention.self.query.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let st =
        candle_core::safetensors::load(straight.join("model.safetensors"), &Device::Cpu).unwrap();
    let q2 = st["bert.encoder.layer.0.attention.self.query.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(max_abs_diff(&q, &q2) > 0.0);
    std::fs::remove_dir_all(&straight).unwrap();
    std::fs::remove_dir_all(&resumed).unwrap();
}

/// The same with a LoRA adapter (dropout on, so the random stream is resumed too): the
/// checkpoints hold the adapter, the optimizer's moments for it alone, and the stream.
#[test]
fn a_resumed_lora_run_matches_the_uninterrupted_one_bit_for_bit() {
    let peft = PeftArgs {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.1,
        ..Default::default()
    };
    let straight = train_resumable("lora-straight", None, Some(peft.clone()));
    let resumed = train_resumable("lora-resumed", Some(2), Some(peft));
    assert_same_tensors(&straight, &resumed, "adapter_model.safetensors");
    let adapter = read_tensors(&straight.join("adapter_model.safetensors"));
    assert_eq!(
        adapter.len(),
        2 * 2 * 6 + 2,
        "query/value A and B of 6 layers, classifier"
    );
    std::fs::remove_dir_all(&straight).unwrap();
    std::fs::remove_dir_all(&resumed).unwrap();
}

#[test]
fn bad_input_is_reported_before_anything_is_written() {
    let dir = temp_dir("badinput");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let cases: &[(&str, &str)] = &[
        ("sentence\tlabel\ngood film\t1\nbad\tfilm\t0\n", ":3"), // wrong field count
        ("sentence\tlabel\ngood film\t1\n\t0\n", ":3"),          // empty text
        ("text\tstars\ngood film\t1\n", "no column"),            // missing column
    ];
    for (i, (content, needle)) in cases.iter().enumerate() {
        let file = dir.join(format!("train{i}.tsv"));
        std::fs::write(&file, content).unwrap();
        let mut recipe = sst2_recipe(&out, 10, 10);
        recipe.data.train_file = file.clone();
        recipe.data.validation_file = None;
        let err = match ClassificationData::prepare(&recipe, &Device::Cpu) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("case {i} must fail"),
        };
        assert!(
            err.contains(file.file_name().unwrap().to_str().unwrap()),
            "case {i}: {err}"
        );
        assert!(err.contains(needle), "case {i}: {err}");
        assert!(!out.exists(), "nothing may be written for case {i}");
    }
    // Invalid UTF-8 names file and line.
    let file = dir.join("bad-utf8.tsv");
    std::fs::write(&file, b"sentence\tlabel\ngood\t1\nbad \xff\t0\n").unwrap();
    let mut recipe = sst2_recipe(&out, 10, 10);
    recipe.data.train_file = file.clone();
    let err = format!(
        "{:#}",
        ClassificationData::prepare(&recipe, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(err.contains("bad-utf8.tsv:3"), "{err}");
    // A validation label the training data never had.
    let train = dir.join("t.tsv");
    let valid = dir.join("v.tsv");
    std::fs::write(&train, "sentence\tlabel\ngood\tpos\nbad\tneg\n").unwrap();
    std::fs::write(&valid, "sentence\tlabel\nfine\tpos\nmeh\tneutral\n").unwrap();
    let mut recipe = sst2_recipe(&out, 10, 10);
    recipe.data.train_file = train;
    recipe.data.validation_file = Some(valid);
    let err = format!(
        "{:#}",
        ClassificationData::prepare(&recipe, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(err.contains("v.tsv:3") && err.contains("neutral"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn existing_output_dir_is_not_overwritten_unless_asked() {
    let out = temp_dir("nooverwrite");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("precious.txt"), "keep me").unwrap();
    let mut recipe = sst2_recipe(&out, 10, 10);
    let err =
        Trainer::<ClassificationData>::prepare_output_dir(&recipe.training, false).unwrap_err();
    assert!(err.to_string().contains("--overwrite-output-dir"), "{err}");
    assert!(out.join("precious.txt").exists());
    let err =
        Trainer::<ClassificationData>::prepare_output_dir(&recipe.training, true).unwrap_err();
    assert!(err.to_string().contains("no checkpoint"), "{err}");
    recipe.training.overwrite_output_dir = true;
    Trainer::<ClassificationData>::prepare_output_dir(&recipe.training, false).unwrap();
    assert!(!out.join("precious.txt").exists());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_model_frozen_for_inference_is_refused_for_training() {
    // Its linear layers would keep packed weights that the updates leave stale.
    let out = temp_dir("frozen");
    let recipe = sst2_recipe(&out, 16, 8);
    let (model, task) = ClassificationData::prepare(&recipe, &Device::Cpu).unwrap();
    let model = model.frozen();
    let err = Trainer::new(recipe.training.clone(), &model, &task)
        .start()
        .err()
        .expect("a frozen model must not train");
    assert!(err.to_string().contains("frozen"), "{err}");
}
