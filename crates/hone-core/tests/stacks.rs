//! The three stacks built from scratch: output shapes, masking and determinism.

use candle_core::{DType, Device, Tensor};
use hone_core::model::layers::{sinusoidal_table, sinusoidal_table_halves, Activation, ModelMode};
use hone_core::model::{
    BertConfig, BertModel, CausalLm, Gpt2Config, Gpt2LmHeadModel, MarianConfig, MarianMtModel,
    MarianSizes, ParamStore, Seq2SeqLm,
};

fn ids(rows: &[&[u32]]) -> Tensor {
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn bert_config() -> BertConfig {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 32
    }))
    .unwrap()
}

fn gpt_config() -> Gpt2Config {
    serde_json::from_value(serde_json::json!({
        "vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 32
    }))
    .unwrap()
}

fn seq2seq_config() -> MarianConfig {
    let sizes = MarianSizes {
        d_model: 32,
        layers: 2,
        heads: 4,
        ffn_dim: 64,
        max_positions: 32,
        dropout: 0.1,
    };
    MarianConfig {
        activation_function: Activation::Relu,
        ..MarianConfig::new(sizes, 40, 0, 1)
    }
}

#[test]
fn bert_padding_does_not_change_real_tokens() {
    let store = ParamStore::fresh(1);
    let bert = BertModel::new(
        store.var_builder(DType::F32, &Device::Cpu).pp("bert"),
        &bert_config(),
        true,
        &ModelMode::new(0),
    )
    .unwrap();
    let short = ids(&[&[2, 7, 9, 3]]);
    let padded = ids(&[&[2, 7, 9, 3, 0, 0, 0]]);
    let out_short = bert
        .forward(
            &short,
            &short.zeros_like().unwrap(),
            &short.ones_like().unwrap(),
        )
        .unwrap();
    let mask = ids(&[&[1, 1, 1, 1, 0, 0, 0]]);
    let out_padded = bert
        .forward(&padded, &padded.zeros_like().unwrap(), &mask)
        .unwrap();
    assert_eq!(out_padded.sequence.dims(), &[1, 7, 32]);
    let real = out_padded.sequence.narrow(1, 0, 4).unwrap();
    assert!(max_diff(&real, &out_short.sequence) < 1e-5);
    assert!(
        max_diff(
            out_padded.pooled.as_ref().unwrap(),
            out_short.pooled.as_ref().unwrap()
        ) < 1e-5
    );
}

#[test]
fn gpt2_future_tokens_do_not_change_the_past() {
    let store = ParamStore::fresh(2);
    let gpt = Gpt2LmHeadModel::new(
        store.var_builder(DType::F32, &Device::Cpu),
        &gpt_config(),
        &ModelMode::new(0),
    )
    .unwrap();
    let a = gpt.forward(&ids(&[&[5, 6, 7, 8, 9]]), None, None).unwrap();
    let b = gpt.forward(&ids(&[&[5, 6, 7, 1, 2]]), None, None).unwrap();
    assert_eq!(a.dims(), &[1, 5, 50]);
    assert!(max_diff(&a.narrow(1, 0, 3).unwrap(), &b.narrow(1, 0, 3).unwrap()) < 1e-6);
    assert!(
        max_diff(&a.narrow(1, 3, 1).unwrap(), &b.narrow(1, 3, 1).unwrap()) > 1e-4,
        "position 3 must see its own token"
    );
}

#[test]
fn gpt2_kv_cache_gives_the_same_logits() {
    let store = ParamStore::fresh(3);
    let gpt = Gpt2LmHeadModel::new(
        store.var_builder(DType::F32, &Device::Cpu),
        &gpt_config(),
        &ModelMode::new(0),
    )
    .unwrap();
    let seq: &[u32] = &[4, 8, 15, 16, 23, 42];
    let full = gpt.forward(&ids(&[seq]), None, None).unwrap();
    let mut cache = gpt.new_cache();
    let prefix = gpt
        .forward(&ids(&[&seq[..3]]), None, Some(&mut cache))
        .unwrap();
    assert!(max_diff(&prefix, &full.narrow(1, 0, 3).unwrap()) < 1e-5);
    for (i, &tok) in seq.iter().enumerate().skip(3) {
        let step = gpt
            .forward(&ids(&[&[tok]]), None, Some(&mut cache))
            .unwrap();
        assert!(
            max_diff(&step, &full.narrow(1, i, 1).unwrap()) < 1e-5,
            "position {i}"
        );
    }
    assert_eq!(cache[0].len(), seq.len());
}

#[test]
fn encoder_decoder_masks_and_determinism() {
    let store = ParamStore::fresh(4);
    let model = MarianMtModel::new(
        store.var_builder(DType::F32, &Device::Cpu),
        &seq2seq_config(),
        &ModelMode::new(0),
    )
    .unwrap();
    let src = ids(&[&[3, 4, 5, 6, 0, 0]]);
    let src_mask = ids(&[&[1, 1, 1, 1, 0, 0]]);
    let tgt = ids(&[&[1, 7, 8, 9]]);
    let logits = model.forward(&src, &src_mask, &tgt).unwrap();
    assert_eq!(logits.dims(), &[1, 4, 40]);
    // Deterministic: the same inputs give the same outputs.
    assert_eq!(
        max_diff(&logits, &model.forward(&src, &src_mask, &tgt).unwrap()),
        0.0
    );
    // Padding in the source does not change anything.
    let unpadded = model
        .forward(&ids(&[&[3, 4, 5, 6]]), &ids(&[&[1, 1, 1, 1]]), &tgt)
        .unwrap();
    assert!(max_diff(&logits, &unpadded) < 1e-5);
    // A later target token does not change earlier positions.
    let other = model
        .forward(&src, &src_mask, &ids(&[&[1, 7, 2, 2]]))
        .unwrap();
    assert!(
        max_diff(
            &logits.narrow(1, 0, 2).unwrap(),
            &other.narrow(1, 0, 2).unwrap()
        ) < 1e-6
    );
    // The source does reach the decoder through cross-attention.
    let other_src = model
        .forward(&ids(&[&[9, 9, 9, 9, 0, 0]]), &src_mask, &tgt)
        .unwrap();
    assert!(max_diff(&logits, &other_src) > 1e-4);
    // Incremental decoding with the cache matches the full pass.
    let memory = model.encode(&src, &src_mask).unwrap();
    let mut cache = model.new_cache();
    for i in 0..4 {
        let step = model
            .decode(
                &tgt.narrow(1, i, 1).unwrap(),
                &memory,
                &src_mask,
                Some(&mut cache),
            )
            .unwrap();
        assert!(
            max_diff(&step, &logits.narrow(1, i, 1).unwrap()) < 1e-5,
            "position {i}"
        );
    }
}

#[test]
fn same_seed_same_weights_and_dropout_is_seeded() {
    let build = |seed| {
        let store = ParamStore::fresh(seed);
        let mode = ModelMode::new(seed);
        let m = Gpt2LmHeadModel::new(
            store.var_builder(DType::F32, &Device::Cpu),
            &gpt_config(),
            &mode,
        )
        .unwrap();
        (m, mode)
    };
    let (a, mode_a) = build(7);
    let (b, mode_b) = build(7);
    let (c, _) = build(8);
    let x = ids(&[&[1, 2, 3]]);
    let ya = a.forward(&x, None, None).unwrap();
    assert_eq!(max_diff(&ya, &b.forward(&x, None, None).unwrap()), 0.0);
    assert!(max_diff(&ya, &c.forward(&x, None, None).unwrap()) > 1e-4);
    // Training mode turns dropout on; the same seed gives the same masks.
    mode_a.set_training(true);
    mode_b.set_training(true);
    let ta = a.forward(&x, None, None).unwrap();
    assert_eq!(max_diff(&ta, &b.forward(&x, None, None).unwrap()), 0.0);
    assert!(
        max_diff(&ta, &ya) > 1e-4,
        "dropout must change the training output"
    );
}

#[test]
fn sinusoidal_encoding_by_hand() {
    let t = sinusoidal_table(4, 6, &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    // PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    let pos = 3.0f64;
    for i in 0..3 {
        let angle = pos / 10000f64.powf((2 * i) as f64 / 6.0);
        assert!((t[3][2 * i] as f64 - angle.sin()).abs() < 1e-6);
        assert!((t[3][2 * i + 1] as f64 - angle.cos()).abs() < 1e-6);
    }
    assert_eq!(t[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    // Marian's layout: the three sines, then the three cosines.
    let h = sinusoidal_table_halves(4, 6, &Device::Cpu)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for i in 0..3 {
        assert_eq!(h[3][i], t[3][2 * i]);
        assert_eq!(h[3][3 + i], t[3][2 * i + 1]);
    }
}

#[test]
fn every_parameter_gets_a_gradient() {
    let store = ParamStore::fresh(5);
    let model = MarianMtModel::new(
        store.var_builder(DType::F32, &Device::Cpu),
        &seq2seq_config(),
        &ModelMode::new(0),
    )
    .unwrap();
    let logits = model
        .forward(
            &ids(&[&[3, 4, 5]]),
            &ids(&[&[1, 1, 1]]),
            &ids(&[&[1, 7, 8]]),
        )
        .unwrap();
    let grads = logits.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    for (name, var) in store.params() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(norm > 0.0, "zero gradient for {name}");
    }
}
