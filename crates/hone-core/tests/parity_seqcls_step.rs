//! One fine-tuning setup against PyTorch: all-MiniLM-L6-v2 with a 3-way classification head
//! (fixed weights from the fixture), its logits, loss, every parameter's gradient norm, and
//! the loss after each of three AdamW updates (no decay on vectors, as Hugging Face's name
//! rule, dropout off).

mod common;

use candle_core::{Device, Tensor};
use common::*;
use hone_core::model::{Head, Model, ModelDir, ProblemType, SequenceClassifier};
use hone_core::ops::CrossEntropyOptions;
use hone_core::training::optim::{select_params, AdamW, AdamWConfig, DecayRule, Optimizer};

#[test]
fn minilm_seqcls_forward_backward_and_adamw_steps_match_pytorch() {
    let fx = read_fixture("minilm_seqcls_step.json");
    let head = Head::SequenceClassification {
        id2label: vec!["0".into(), "1".into(), "2".into()],
        problem: ProblemType::SingleLabel,
    };
    let model = Model::<dyn SequenceClassifier>::load_for(
        &ModelDir::open(&minilm_dir()).unwrap(),
        head,
        &Device::Cpu,
        0,
    )
    .unwrap();
    // The head PyTorch initialised, so that both sides start from the same weights.
    let head_file = fixture(fx["head_file"].as_str().unwrap());
    let head = candle_core::safetensors::load(&head_file, &Device::Cpu).unwrap();
    for (name, t) in &head {
        let var = model
            .params
            .get(name)
            .unwrap_or_else(|| panic!("the model has no parameter {name}"));
        var.set(t).unwrap();
    }
    assert!(head.contains_key("classifier.weight") && head.contains_key("classifier.bias"));
    let clf = &model.net;

    let ids = tensor2(&u32_rows(&fx["input_ids"]));
    let mask = tensor2(&u32_rows(&fx["attention_mask"]));
    let types = ids.zeros_like().unwrap();
    let labels: Vec<i64> = i64s(&fx["labels"]);
    let labels = Tensor::new(labels, &Device::Cpu).unwrap();
    let opts = CrossEntropyOptions::default();
    let loss_of = || {
        let logits = clf.forward(&ids, &types, &mask).unwrap();
        let loss = clf.loss(&logits, &labels, &opts).unwrap();
        (logits, loss)
    };

    let (logits, loss) = loss_of();
    for (i, (got, want)) in logits
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .zip(fx["logits"].as_array().unwrap())
        .enumerate()
    {
        let d = max_abs_diff(got, &f32s(want));
        assert!(d < 1e-4, "row {i} logits differ by {d}");
    }
    let got: f32 = loss.to_scalar().unwrap();
    let want = fx["loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");

    let params = model.params.params();
    assert_eq!(params.len(), 105);
    let grads = loss.backward().unwrap();
    assert_grad_norms(&params, &grads, &fx["grad_l2"], 1e-3);

    // AdamW as the fixture ran it; biases and LayerNorm weights are not decayed (per layer:
    // six biases and two LayerNorms; plus the embeddings' LayerNorm and two head biases).
    let hp = &fx["adamw"];
    let config = AdamWConfig {
        beta1: hp["betas"][0].as_f64().unwrap(),
        beta2: hp["betas"][1].as_f64().unwrap(),
        eps: hp["eps"].as_f64().unwrap(),
        weight_decay: hp["weight_decay"].as_f64().unwrap(),
    };
    let lr = hp["lr"].as_f64().unwrap();
    let train = select_params(params, DecayRule::Matrices, &[]).unwrap();
    assert_eq!(
        train.iter().filter(|p| !p.decay).count(),
        2 + 6 * 10 + 1 + 1
    );
    let mut opt = AdamW::new(train, config).unwrap();

    let want_losses = f32s(&fx["losses_after_steps"]);
    let mut grads = grads;
    for (i, &want) in want_losses.iter().enumerate() {
        if i > 0 {
            opt.step(&grads, lr).unwrap();
            let (_, loss) = loss_of();
            let got: f32 = loss.to_scalar().unwrap();
            eprintln!("loss after {i} updates: {got} (PyTorch {want})");
            assert!(
                (got - want).abs() < 1e-4,
                "loss after {i} updates: {got} vs {want}"
            );
            grads = loss.backward().unwrap();
        } else {
            assert!((got - want).abs() < 1e-5, "loss before any update");
        }
    }
    assert_eq!(opt.step_count(), want_losses.len() as u64 - 1);
}
