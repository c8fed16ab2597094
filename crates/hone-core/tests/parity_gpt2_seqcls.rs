//! GPT-2 sequence classification against Transformers' `GPT2ForSequenceClassification`:
//! the tokenizer's ids, the probabilities of a right-padded batch (pooled at each row's
//! last non-pad token), and a training step's loss and every gradient's L2 norm.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use hone_core::model::{Head, Model, ProblemType, SequenceClassifier};
use hone_core::ops::{softmax_last_dim, CrossEntropyOptions};
use hone_core::tokenization::{pad_ids, TextTokenizer};

#[test]
fn gpt2_sequence_classifier_matches_transformers() {
    let fx = read_fixture("gpt2_seqcls_expected.json");
    let dir = fixture("gpt2-seqcls");
    let model = Model::load(&dir, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn SequenceClassifier>()
        .unwrap();
    assert_eq!(
        model.head,
        Head::SequenceClassification {
            id2label: vec!["0".into(), "1".into()],
            problem: ProblemType::SingleLabel,
        }
    );
    assert_eq!(model.config.arch.pad_token_id(), Some(0));

    // Byte-level BPE ids as Transformers' tokenizer gives them.
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let want_ids = u32_rows(&fx["input_ids"]);
    for (text, want) in fx["texts"].as_array().unwrap().iter().zip(&want_ids) {
        let enc = tok.encode(text.as_str().unwrap(), None).unwrap();
        assert_eq!(enc.get_ids(), want.as_slice(), "{text}");
    }

    // A right-padded batch: rows of 6 to 55 tokens, pad = <|endoftext|> = 0.
    let rows: Vec<&[u32]> = want_ids.iter().map(Vec::as_slice).collect();
    let batch = pad_ids(&rows, &[], tok.pad_id(), &Device::Cpu).unwrap();
    assert_eq!(tok.pad_id(), 0);
    let logits = model
        .net
        .forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
        )
        .unwrap();
    let probs = softmax_last_dim(&logits).unwrap().to_vec2::<f32>().unwrap();
    for (i, (got, want)) in probs
        .iter()
        .zip(fx["probabilities"].as_array().unwrap())
        .enumerate()
    {
        let d = max_abs_diff(got, &f32s(want));
        assert!(d < 1e-5, "row {i}: probabilities differ by {d}");
    }

    // The training step (dropout 0 is evaluation mode, in which the model was loaded).
    let labels: Vec<i64> = i64s(&fx["labels"]);
    let labels = Tensor::new(labels, &Device::Cpu).unwrap();
    let loss = model
        .net
        .loss(&logits, &labels, &CrossEntropyOptions::default())
        .unwrap();
    let got: f32 = loss.to_scalar().unwrap();
    let want = fx["train_step"]["loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    assert_grad_norms(
        &model.params.params(),
        &grads,
        &fx["train_step"]["grad_norms"],
        1e-3,
    );
}
