//! Tiny GPT-2 and tiny BERT-pretraining checkpoints against PyTorch: logits, loss and the
//! L2 norm of every parameter's gradient.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use hone_core::model::{CausalLm, MaskedLm, Model};

#[test]
fn tiny_gpt2_logits_loss_and_gradients() {
    let fx = read_fixture("tiny_gpt2_expected.json");
    let model = Model::load(&fixture("tiny-gpt2"), &Device::Cpu)
        .unwrap()
        .into_kind::<dyn CausalLm>()
        .unwrap();
    let gpt = &model.net;
    let ids = tensor2(&u32_rows(&fx["input_ids"]));
    let logits = gpt.forward(&ids, None, None).unwrap();
    let t = logits.dim(1).unwrap();
    for (i, want) in fx["logits_last"].as_array().unwrap().iter().enumerate() {
        let got = logits
            .get(i)
            .unwrap()
            .get(t - 1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &f32s(want));
        assert!(d < 1e-4, "row {i} last logits differ by {d}");
    }
    let abs_sum: f32 = logits
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    let want_sum = fx["logits_abs_sum"].as_f64().unwrap() as f32;
    assert!(
        (abs_sum - want_sum).abs() / want_sum < 1e-5,
        "logit abs sum {abs_sum} vs {want_sum}"
    );

    let loss = gpt
        .loss(&logits, &ids.to_dtype(DType::I64).unwrap())
        .unwrap();
    let got: f32 = loss.to_scalar().unwrap();
    let want = fx["loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");

    let grads = loss.backward().unwrap();
    // The LM head is tied to wte, so there is no separate lm_head parameter.
    assert_grad_norms(&model.params.params(), &grads, &fx["grad_l2"], 1e-3);
}

/// The tiny BERT-pretraining checkpoint and the fixture's batch.
struct TinyBertBatch {
    fx: serde_json::Value,
    model: Model<dyn MaskedLm>,
    ids: Tensor,
    types: Tensor,
    mask: Tensor,
    label_rows: Vec<Vec<i64>>,
    nsp: Tensor,
}

fn tiny_bert_batch() -> TinyBertBatch {
    let fx = read_fixture("tiny_bert_pretraining_expected.json");
    let model = Model::load(&fixture("tiny-bert-pretraining"), &Device::Cpu)
        .unwrap()
        .into_kind::<dyn MaskedLm>()
        .unwrap();
    let ids = tensor2(&u32_rows(&fx["input_ids"]));
    let types = tensor2(&u32_rows(&fx["token_type_ids"]));
    let mask = ids.ones_like().unwrap();
    let label_rows = i64_rows(&fx["mlm_labels"]);
    let nsp: Vec<i64> = i64s(&fx["next_sentence_label"]);
    let nsp = Tensor::new(nsp, &Device::Cpu).unwrap();
    TinyBertBatch {
        fx,
        model,
        ids,
        types,
        mask,
        label_rows,
        nsp,
    }
}

#[test]
fn tiny_bert_pretraining_logits_loss_and_gradients() {
    let TinyBertBatch {
        fx,
        model,
        ids,
        types,
        mask,
        label_rows: labels_rows,
        nsp,
    } = tiny_bert_batch();
    let bert = &model.net;
    let labels = tensor2(&labels_rows);

    let out = bert.forward(&ids, &types, &mask).unwrap();
    // The fixture lists the MLM logits at the first masked position of each row.
    let want_mlm = fx["prediction_logits_at_masks"].as_array().unwrap();
    assert_eq!(want_mlm.len(), labels_rows.len());
    for (b, (row, want)) in labels_rows.iter().zip(want_mlm).enumerate() {
        let t = row
            .iter()
            .position(|&l| l != -100)
            .expect("every row has a masked token");
        let got = out
            .prediction_logits
            .get(b)
            .unwrap()
            .get(t)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &f32s(want));
        assert!(d < 1e-4, "MLM logits at ({b},{t}) differ by {d}");
    }
    let nsp_logits = out
        .seq_relationship_logits
        .as_ref()
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (got, want) in nsp_logits
        .iter()
        .zip(fx["seq_relationship_logits"].as_array().unwrap())
    {
        assert!(max_abs_diff(got, &f32s(want)) < 1e-4);
    }

    let loss = bert.loss(&out, &labels, Some(&nsp)).unwrap();
    let got: f32 = loss.to_scalar().unwrap();
    let want = fx["total_loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    assert_grad_norms(&model.params.params(), &grads, &fx["grad_l2"], 1e-3);
}

/// The training path that runs the MLM head only at masked rows must give the fixture's
/// loss and gradients too.
#[test]
fn tiny_bert_pretraining_masked_rows_loss_matches_the_full_loss() {
    let b = tiny_bert_batch();
    let bert = &b.model.net;
    let flat: Vec<i64> = b.label_rows.concat();
    let (positions, targets) = hone_core::model::masked_rows(&flat);
    assert!(positions.len() < flat.len(), "some rows are skipped");
    let loss = bert
        .masked_loss(
            &b.ids,
            &b.types,
            &b.mask,
            &Tensor::new(positions, &Device::Cpu).unwrap(),
            &Tensor::new(targets, &Device::Cpu).unwrap(),
            Some(&b.nsp),
        )
        .unwrap();
    let got: f32 = loss.to_scalar().unwrap();
    let want = b.fx["total_loss"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "loss {got} vs {want}");
    let grads = loss.backward().unwrap();
    assert_grad_norms(&b.model.params.params(), &grads, &b.fx["grad_l2"], 1e-3);
}
