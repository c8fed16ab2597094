//! The tiny random `MarianMTModel` against Transformers: teacher-forced logits, encoder
//! states, loss and every trainable parameter's gradient norm.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use hone_core::inference::translate::{
    beam_search, generate_seq2seq, Hypothesis, TranslationConfig,
};
use hone_core::model::{Model, Seq2SeqLm};

fn rows3(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().flat_map(f32s))
        .collect()
}

/// The fixture's expectations, the model, and its source batch (ids, mask).
fn tiny_marian() -> (serde_json::Value, Model<dyn Seq2SeqLm>, Tensor, Tensor) {
    let fx = read_fixture("tiny_marian_expected.json");
    let model = Model::load(&fixture("tiny-marian"), &Device::Cpu)
        .unwrap()
        .into_kind::<dyn Seq2SeqLm>()
        .unwrap();
    let ids = tensor2(&u32_rows(&fx["input_ids"]));
    let mask = tensor2(&u32_rows(&fx["attention_mask"]));
    (fx, model, ids, mask)
}

#[test]
fn tiny_marian_logits_loss_and_gradients() {
    let (fx, model, ids, mask) = tiny_marian();
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

/// `generate` on the padded fixture batch: greedy and beam 3 give Transformers' tokens and
/// (for beams) sequence scores; a width-1 beam is greedy; the cache changes nothing.
#[test]
fn tiny_marian_greedy_and_beam_search_match_transformers() {
    let (fx, model, ids, mask) = tiny_marian();
    let run = |num_beams: usize, use_cache: bool| {
        let cfg = TranslationConfig {
            num_beams,
            max_new_tokens: 12,
            length_penalty: 1.0,
            early_stopping: true,
            use_cache,
        };
        generate_seq2seq(model.net.as_ref(), &ids, &mask, &cfg).unwrap()
    };
    // Transformers' rows: the decoder start token, then the generated ids.
    let with_start = |hyps: &[Hypothesis]| -> Vec<Vec<u32>> {
        hyps.iter()
            .map(|h| std::iter::once(0).chain(h.ids.iter().copied()).collect())
            .collect()
    };
    let greedy = run(1, true);
    assert_eq!(with_start(&greedy), u32_rows(&fx["greedy_ids"]));
    let beam3 = run(3, true);
    assert_eq!(with_start(&beam3), u32_rows(&fx["beam3_ids"]));
    for (h, want) in beam3.iter().zip(f32s(&fx["beam3_scores"])) {
        assert!(
            (h.score - want as f64).abs() < 1e-4,
            "score {} vs {want}",
            h.score
        );
    }
    // Same tokens (scores agree to float noise: the kernels differ).
    assert_eq!(
        with_start(&run(1, false)),
        with_start(&greedy),
        "greedy without the cache"
    );
    let uncached = run(3, false);
    assert_eq!(
        with_start(&uncached),
        with_start(&beam3),
        "beam 3 without the cache"
    );
    // Beam search of width 1 (generate routes it to greedy) picks greedy's tokens.
    let cfg = TranslationConfig {
        num_beams: 1,
        max_new_tokens: 12,
        ..Default::default()
    };
    let width1 = beam_search(model.net.as_ref(), &ids, &mask, &cfg).unwrap();
    assert_eq!(with_start(&width1), with_start(&greedy));
}
