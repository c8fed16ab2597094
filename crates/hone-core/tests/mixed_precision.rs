//! bf16 / fp16 mixed precision in the trainer, on the CPU (where candle emulates the
//! low-precision products): it must track fp32 training, and fp16's loss scaling must skip
//! overflowing updates, recover, and resume exactly.

mod common;

use common::synthetic::*;
use hone_core::training::{Precision, Trainer, TrainerState, TrainingArguments};

/// The logged training loss of every update.
fn losses(args: &TrainingArguments) -> Vec<f64> {
    std::fs::read_to_string(args.output_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

fn run(name: &str, precision: Precision, task: &Synthetic) -> (TrainingArguments, Vec<f64>) {
    let model = tiny_model(11);
    let mut a = args(name);
    a.precision = precision;
    a.num_train_epochs = 1.0;
    a.logging_steps = 1;
    a.learning_rate = 3e-3;
    Trainer::new(a.clone(), &model, task).train(false).unwrap();
    // The precision is the model's for the run only.
    assert_eq!(model.mode.autocast(), None);
    let l = losses(&a);
    (a, l)
}

#[test]
fn bf16_and_fp16_track_fp32_over_20_updates() {
    let task = Synthetic::new(160); // 20 updates of 8
    let (a, fp32) = run("mp-fp32", Precision::Fp32, &task);
    assert_eq!(fp32.len(), 20);
    assert!(fp32[19] < fp32[0], "the run learns: {fp32:?}");
    for precision in [Precision::Bf16, Precision::Fp16] {
        let (b, low) = run(&format!("mp-{precision:?}"), precision, &task);
        assert_eq!(low.len(), 20);
        let worst = fp32
            .iter()
            .zip(&low)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        eprintln!("{precision:?}: largest loss difference from fp32 {worst:.2e}");
        assert!(worst < 1e-2, "{precision:?} strays {worst} from fp32");
        // The products really ran in low precision: the losses are not bit-identical.
        assert!(worst > 0.0, "{precision:?} gave fp32's losses exactly");
        std::fs::remove_dir_all(&b.output_dir).unwrap();
    }
    std::fs::remove_dir_all(&a.output_dir).unwrap();
}

fn final_state(args: &TrainingArguments) -> TrainerState {
    let ckpt = hone_core::training::trainer::latest_checkpoint(&args.output_dir)
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn fp16_overflow_skips_updates_lowers_the_scale_and_resumes_exactly() {
    // A loss of ~1e5 times 65536 overflows fp16's gradients until the scale has backed off.
    let mut task = Synthetic::new(240);
    task.loss_multiplier = 1e5;
    let whole = tiny_model(12);
    let before = weights(&whole);
    let mut a = args("fp16-overflow");
    a.precision = Precision::Fp16;
    a.num_train_epochs = 1.0;
    a.learning_rate = 1e-3;
    Trainer::new(a.clone(), &whole, &task).train(false).unwrap();
    let scaler = final_state(&a).grad_scaler.expect("fp16 keeps a scaler");
    eprintln!("fp16 loss scale after the run: {scaler:?}");
    assert!(scaler.scale < 65536.0, "scale {}", scaler.scale);
    assert!(
        scaler.good_steps > 0,
        "updates went through after the back-off"
    );
    let after = weights(&whole);
    let moved = before
        .iter()
        .zip(&after)
        .any(|((_, x), (_, y))| max_diff(x, y) > 0.0);
    assert!(moved, "some updates were applied");
    assert!(after.iter().all(|(_, w)| w.iter().all(|v| v.is_finite())));

    // Interrupted during the back-off and resumed: bit-identical to the uninterrupted run.
    let resumed = tiny_model(12);
    let mut b = args("fp16-resume");
    b.precision = Precision::Fp16;
    b.num_train_epochs = 1.0;
    b.learning_rate = 1e-3;
    b.interrupt_after_steps = Some(7);
    Trainer::new(b.clone(), &resumed, &task)
        .train(false)
        .unwrap();
    b.interrupt_after_steps = None;
    Trainer::new(b.clone(), &resumed, &task)
        .train(true)
        .unwrap();
    assert_eq!(final_state(&b).grad_scaler, Some(scaler));
    for ((n, x), (_, y)) in after.iter().zip(weights(&resumed)) {
        assert_eq!(x, &y, "{n} differs after resume");
    }
    std::fs::remove_dir_all(&a.output_dir).unwrap();
    std::fs::remove_dir_all(&b.output_dir).unwrap();
}

#[test]
fn hugging_face_switches_select_the_precision() {
    let mut a = TrainingArguments {
        bf16: true,
        ..Default::default()
    };
    assert_eq!(a.effective_precision().unwrap(), Precision::Bf16);
    a.fp16 = true;
    assert!(a.effective_precision().is_err(), "both switches on");
    a.bf16 = false;
    assert_eq!(a.effective_precision().unwrap(), Precision::Fp16);
    a.precision = Precision::Bf16;
    assert!(
        a.effective_precision().is_err(),
        "precision contradicts fp16"
    );
}
