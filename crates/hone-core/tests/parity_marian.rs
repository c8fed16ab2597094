//! The tiny random `MarianMTModel` against Transformers: teacher-forced logits, encoder
//! states, loss and every trainable parameter's gradient norm.

mod common;

use candle_core::Device;
use common::*;
use hone_core::model::{Model, Seq2SeqLm};

fn rows3(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().flat_map(f32s))
        .collect()
}

#[test]
fn tiny_marian_logits_loss_and_gradients() {
    let fx = read_fixture("tiny_marian_expected.json");
    let model = Model::load(&fixture("tiny-marian"), &Device::Cpu)
        .unwrap()
        .into_kind::<dyn Seq2SeqLm>()
        .unwrap();
    let ids = tensor2(&u32_rows(&fx["input_ids"]));
    let mask = tensor2(&u32_rows(&fx["attention_mask"]));
    let decoder_ids = tensor2(&u32_rows(&fx["decoder_input_ids"]));
    let labels = tensor2(&i64_rows(&fx["labels"]));

    let states = model.net.encode(&ids, &mask).unwrap();
    let got = states.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&got, &rows3(&fx["encoder_last_hidden_state"]));
    assert!(d < 1e-4, "encoder states differ by {d}");

    let logits = model.net.forward(&ids, &mask, &decoder_ids).unwrap();
    assert_eq!(logits.dims(), &[4, 30, 400]);
    let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&got, &rows3(&fx["logits"]));
    // The notes' independent re-implementation matched to 1.7e-5 (|logits| <= 6.2).
    assert!(d < 1e-4, "logits differ by {d}");

    let loss = model.net.loss(&logits, &labels, 0.0).unwrap();
    let got: f32 = loss.to_scalar().unwrap();
    let want = fx["loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");

    // final_logits_bias is a buffer: it never trains, and the fixture lists trainables.
    let trainable = model.params.trainable_params();
    assert_eq!(
        trainable.iter().map(|(_, v)| v.elem_count()).sum::<usize>(),
        fx["param_count"]["trainable"].as_u64().unwrap() as usize
    );
    let grads = loss.backward().unwrap();
    // k_proj biases get float32 noise (~1e-8): assert_grad_norms allows 1e-6 absolute.
    assert_grad_norms(&trainable, &grads, &fx["grad_l2"], 1e-3);
    // The embedding lookups send no gradient to the pad row; the tied projection does.
    let shared = model.params.get("model.shared.weight").unwrap();
    let pad_row = grads.get(shared.as_tensor()).unwrap().get(0).unwrap();
    let want = fx["shared_grad_pad_row_l2"].as_f64().unwrap();
    assert!(
        (l2(&pad_row) - want).abs() < 1e-3 * want,
        "pad row grad {}",
        l2(&pad_row)
    );
}
