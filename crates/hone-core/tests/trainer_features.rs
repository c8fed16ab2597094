//! The trainer's features on a tiny synthetic task: accumulation, freezing, early stopping,
//! NaN handling (a NaN loss, injected infinite gradients in fp32 and fp16), checkpoints.

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::Device;
use hone_core::model::{Model, SequenceClassifier};
use hone_core::training::{
    EvalStrategy, Precision, Trainer, TrainerCallback, TrainerState, UpdateStats,
};

mod common;

use common::synthetic::*;

#[test]
fn accumulating_two_half_batches_equals_one_full_batch() {
    let task = Synthetic::new(32);
    let full = tiny_model(1);
    let mut a = args("accum-full");
    a.learning_rate = 1e-3;
    a.max_grad_norm = 0.0;
    Trainer::new(a.clone(), &full, &task).train(false).unwrap();

    let halves = tiny_model(1);
    let mut b = args("accum-half");
    b.learning_rate = 1e-3;
    b.max_grad_norm = 0.0;
    b.per_device_train_batch_size = 4;
    b.gradient_accumulation_steps = 2;
    // Same examples per update only if the shuffled order is chunked the same way: it is
    // (the permutation depends on seed and epoch only), so batches of 4 pair up into 8s.
    Trainer::new(b.clone(), &halves, &task)
        .train(false)
        .unwrap();
    for ((n, x), (_, y)) in weights(&full).iter().zip(weights(&halves)) {
        assert!(max_diff(x, &y) < 1e-5, "{n} differs by {}", max_diff(x, &y));
    }
    std::fs::remove_dir_all(&a.output_dir).unwrap();
    std::fs::remove_dir_all(&b.output_dir).unwrap();
}

#[test]
fn frozen_parameters_do_not_move_and_the_rest_do() {
    let task = Synthetic::new(32);
    let model = tiny_model(2);
    let before = weights(&model);
    let mut a = args("freeze");
    a.freeze_embeddings = true;
    a.freeze_layers = 1;
    Trainer::new(a.clone(), &model, &task).train(false).unwrap();
    for ((name, x), (_, y)) in before.iter().zip(weights(&model)) {
        let frozen =
            name.starts_with("bert.embeddings.") || name.starts_with("bert.encoder.layer.0.");
        if frozen {
            assert_eq!(max_diff(x, &y), 0.0, "{name} is frozen but moved");
        } else if !name.ends_with("bias") {
            assert!(max_diff(x, &y) > 0.0, "{name} should have trained");
        }
    }
    // A freeze prefix that matches nothing is an error, not a silent no-op.
    let mut bad = args("freeze-typo");
    bad.freeze_parameters = vec!["bert.encodr.".into()];
    let err = Trainer::new(bad, &model, &task).train(false).unwrap_err();
    assert!(err.to_string().contains("bert.encodr."), "{err}");
    std::fs::remove_dir_all(&a.output_dir).unwrap();
}

#[test]
fn early_stopping_keeps_the_best_checkpoint() {
    let mut task = Synthetic::new(16);
    // Evaluations every 2 updates score 0.5, 0.9, 0.8, 0.7, 0.6, ...: best at the second.
    task.scripted_scores = vec![0.5, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3];
    let model = tiny_model(3);
    let mut a = args("early");
    a.num_train_epochs = 20.0;
    a.eval_strategy = EvalStrategy::Steps;
    a.eval_steps = 2;
    a.metric_for_best_model = "score".into();
    a.early_stopping_patience = Some(2);
    let out = Trainer::new(a.clone(), &model, &task).train(false).unwrap();
    assert!(out.stopped_early);
    assert_eq!(
        out.global_step, 8,
        "stops after two evaluations without improvement"
    );
    assert_eq!(out.best_metric, Some(0.9));
    // Only the best and the latest checkpoints remain; the model at the top is the best.
    let mut ckpts: Vec<String> = std::fs::read_dir(&a.output_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, ["checkpoint-4", "checkpoint-8"]);
    let top = std::fs::read(a.output_dir.join("model.safetensors")).unwrap();
    let best = std::fs::read(a.output_dir.join("checkpoint-4/model.safetensors")).unwrap();
    assert!(top == best, "the final model is the best checkpoint's");
    assert!(
        a.output_dir.join("extra.txt").is_file(),
        "the task's extras are saved with the model"
    );
    let log = std::fs::read_to_string(a.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("eval_score")).count(), 4);
    std::fs::remove_dir_all(&a.output_dir).unwrap();
}

#[test]
fn nan_loss_stops_with_the_step_and_keeps_earlier_checkpoints() {
    let mut task = Synthetic::new(32);
    task.nan_from_call = Some(3);
    let model = tiny_model(4);
    let mut a = args("nan");
    a.eval_strategy = EvalStrategy::Steps;
    a.eval_steps = 1;
    let err = Trainer::new(a.clone(), &model, &task)
        .train(false)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("NaN") && msg.contains("update 3"), "{msg}");
    // The checkpoints of updates 1 and 2 are intact and loadable.
    let ckpt = a.output_dir.join("checkpoint-2");
    let weights =
        candle_core::safetensors::load(ckpt.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(weights.contains_key("classifier.weight"));
    std::fs::remove_dir_all(&a.output_dir).unwrap();
}

#[test]
fn training_reduces_the_loss() {
    let task = Synthetic::new(64);
    let model = tiny_model(5);
    let all: Vec<usize> = (0..64).collect();
    let before: f32 = task.loss(&*model.net, &all).unwrap().to_scalar().unwrap();
    let mut a = args("learn");
    a.num_train_epochs = 15.0;
    a.learning_rate = 3e-3;
    Trainer::new(a.clone(), &model, &task).train(false).unwrap();
    let after: f32 = task.loss(&*model.net, &all).unwrap().to_scalar().unwrap();
    assert!(after < 0.5 * before, "loss {before} -> {after}");
    std::fs::remove_dir_all(&a.output_dir).unwrap();
}

/// Each update's number, whether it was applied, and every weight after it.
type Updates = Rc<RefCell<Vec<(usize, bool, Vec<(String, Vec<f32>)>)>>>;

struct RecordUpdates<'m> {
    model: &'m Model<dyn SequenceClassifier>,
    seen: Updates,
}

impl TrainerCallback for RecordUpdates<'_> {
    fn on_step_end(&mut self, _state: &TrainerState, update: &UpdateStats) -> anyhow::Result<()> {
        self.seen
            .borrow_mut()
            .push((update.step, update.applied, weights(self.model)));
        Ok(())
    }
}

#[test]
fn an_injected_infinite_gradient_stops_the_run_and_leaves_the_checkpoints_as_written() {
    let task = Synthetic::new(32);
    let model = tiny_model(6);
    let mut a = args("inf-grad");
    a.eval_strategy = EvalStrategy::Steps;
    a.eval_steps = 1;
    let mut trainer = Trainer::new(a.clone(), &model, &task);
    trainer.inject_fault("inf-grad@3".parse().unwrap());
    let msg = trainer.train(false).unwrap_err().to_string();
    assert!(
        msg.contains("the gradient of `") && msg.contains("is not finite at update 3"),
        "{msg}"
    );
    // The checkpoint of update 2 is the one an undisturbed run writes, byte for byte, and
    // nothing of update 3 was written.
    let clean = tiny_model(6);
    let mut b = args("inf-grad-clean");
    b.eval_strategy = EvalStrategy::Steps;
    b.eval_steps = 1;
    b.interrupt_after_steps = Some(2);
    Trainer::new(b.clone(), &clean, &task).train(false).unwrap();
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let hit = std::fs::read(a.output_dir.join("checkpoint-2").join(file)).unwrap();
        let undisturbed = std::fs::read(b.output_dir.join("checkpoint-2").join(file)).unwrap();
        assert!(hit == undisturbed, "checkpoint-2/{file} differs");
    }
    let names: Vec<String> = std::fs::read_dir(&a.output_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("checkpoint-3")),
        "{names:?}"
    );
    std::fs::remove_dir_all(&a.output_dir).unwrap();
    std::fs::remove_dir_all(&b.output_dir).unwrap();
}

#[test]
fn fp16_skips_an_update_with_an_injected_infinite_gradient_and_halves_the_scale() {
    let task = Synthetic::new(32);
    let model = tiny_model(7);
    let mut a = args("fp16-inf-grad");
    a.precision = Precision::Fp16;
    a.learning_rate = 1e-3;
    let seen: Updates = Rc::default();
    let mut trainer = Trainer::new(a.clone(), &model, &task);
    trainer.inject_fault("inf-grad@3".parse().unwrap());
    trainer.add_callback(RecordUpdates {
        model: &model,
        seen: seen.clone(),
    });
    trainer.train(false).unwrap();
    let seen = seen.borrow();
    assert_eq!(seen.len(), 8, "2 epochs of 4 updates");
    for (i, (step, applied, after)) in seen.iter().enumerate() {
        assert_eq!(*applied, *step != 3, "update {step}");
        if i > 0 {
            let before = &seen[i - 1].2;
            let moved = before
                .iter()
                .zip(after)
                .any(|((_, x), (_, y))| max_diff(x, y) > 0.0);
            assert_eq!(
                moved,
                *step != 3,
                "update {step} moved the weights: {moved}"
            );
        }
    }
    assert!(seen
        .iter()
        .all(|(_, _, w)| w.iter().all(|(_, v)| v.iter().all(|x| x.is_finite()))));
    let ckpt = hone_core::training::trainer::latest_checkpoint(&a.output_dir)
        .unwrap()
        .unwrap();
    let state: TrainerState =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state.grad_scaler.unwrap().scale, 32768.0, "halved once");
    std::fs::remove_dir_all(&a.output_dir).unwrap();
}

#[test]
fn a_checkpoint_with_another_models_optimizer_or_a_newer_format_is_refused_by_name() {
    let task = Synthetic::new(32);
    let mut a = args("foreign-state");
    a.interrupt_after_steps = Some(2);
    Trainer::new(a.clone(), &tiny_model(9), &task)
        .train(false)
        .unwrap();
    let mut other = args("foreign-state-other");
    other.interrupt_after_steps = Some(2);
    Trainer::new(other.clone(), &tiny_model_of_width(9, 8), &task)
        .train(false)
        .unwrap();
    a.interrupt_after_steps = None;
    let ckpt = a.output_dir.join("checkpoint-2");
    let files = [
        "optimizer.safetensors",
        "optimizer.json",
        "trainer_state.json",
    ];
    let original: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(ckpt.join(f)).unwrap())
        .collect();
    let resume_error = |a: &hone_core::training::TrainingArguments| {
        let err = Trainer::new(a.clone(), &tiny_model(9), &task)
            .train(true)
            .unwrap_err();
        format!("{err:#}")
    };

    // The optimizer state of a model 8 wide put into this 16-wide model's checkpoint.
    for f in &files[..2] {
        let theirs = other.output_dir.join("checkpoint-2").join(f);
        std::fs::copy(theirs, ckpt.join(f)).unwrap();
    }
    let err = resume_error(&a);
    assert!(
        err.contains("cannot restore the optimizer from")
            && err.contains("checkpoint-2")
            && err.contains("has shape"),
        "{err}"
    );
    for (f, bytes) in files.iter().zip(&original) {
        std::fs::write(ckpt.join(f), bytes).unwrap();
    }

    // A checkpoint written by a newer hone.
    let state_path = ckpt.join("trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert_eq!(state["format_version"], 1);
    state["format_version"] = 99.into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let err = resume_error(&a);
    assert!(
        err.contains("trainer_state.json") && err.contains("format version 99"),
        "{err}"
    );
    // Refused before anything was written: the checkpoint is as it was, and no other.
    assert_eq!(
        std::fs::read(ckpt.join("optimizer.safetensors")).unwrap(),
        original[0]
    );
    let ckpts = hone_core::training::trainer::list_checkpoints(&a.output_dir).unwrap();
    assert_eq!(ckpts, std::slice::from_ref(&ckpt));

    // Put right, it resumes to the end.
    std::fs::write(&state_path, &original[2]).unwrap();
    let out = Trainer::new(a.clone(), &tiny_model(9), &task)
        .train(true)
        .unwrap();
    assert_eq!(out.global_step, 8);
    std::fs::remove_dir_all(&a.output_dir).unwrap();
    std::fs::remove_dir_all(&other.output_dir).unwrap();
}
