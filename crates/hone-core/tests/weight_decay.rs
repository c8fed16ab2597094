//! Weight decay by rank (matrices decay, vectors do not) picks exactly the parameters
//! Hugging Face's name rule picks (no decay for names ending in `bias` or containing
//! `LayerNorm`, `layer_norm` or `ln_`), on every BERT and GPT-2 head and the
//! encoder-decoder.

mod common;

use candle_core::{DType, Device, Var};
use common::*;
use hone_core::model::{
    EncoderDecoder, EncoderDecoderConfig, Head, Model, ModelDir, ModelMode, Net, ParamStore,
    ProblemType,
};
use hone_core::training::optim::DecayRule;

/// Hugging Face's `get_parameter_names(model, ALL_LAYERNORM_LAYERS)` + "bias" rule, as
/// hone applied it by name before.
fn decayed_by_name(name: &str) -> bool {
    !(name.ends_with("bias")
        || ["LayerNorm", "layer_norm", "ln_"]
            .iter()
            .any(|s| name.contains(s)))
}

fn assert_same_rule(what: &str, params: &[(String, Var)]) {
    assert!(!params.is_empty());
    for (name, var) in params {
        assert_eq!(
            DecayRule::Matrices.decays(var),
            decayed_by_name(name),
            "{what}: {name} {:?}",
            var.dims()
        );
    }
}

#[test]
fn decay_by_rank_is_hugging_faces_rule_on_every_head() {
    let labels = vec!["a".to_string(), "b".to_string()];
    let minilm = ModelDir::open(&minilm_dir()).unwrap();
    for head in [
        Head::Base,
        Head::SequenceClassification {
            id2label: labels.clone(),
            problem: ProblemType::SingleLabel,
        },
        Head::TokenClassification { id2label: labels },
        Head::MaskedLm { nsp: true },
        Head::MaskedLm { nsp: false },
    ] {
        let model = Model::<Net>::load_for(&minilm, head.clone(), &Device::Cpu, 0).unwrap();
        assert_same_rule(&format!("MiniLM {head:?}"), &model.params.params());
    }
    for dir in ["tiny-gpt2", "gpt2-seqcls", "tiny-bert-pretraining"] {
        let model = Model::load(&fixture(dir), &Device::Cpu).unwrap();
        assert_same_rule(dir, &model.params.params());
    }
    let store = ParamStore::fresh(0);
    let config = EncoderDecoderConfig {
        vocab_size: 50,
        d_model: 16,
        encoder_layers: 1,
        decoder_layers: 1,
        attention_heads: 2,
        ffn_dim: 32,
        normalize_before: true,
        ..Default::default()
    };
    let vb = store.var_builder(DType::F32, &Device::Cpu);
    EncoderDecoder::new(vb, &config, &ModelMode::new(0)).unwrap();
    assert_same_rule("encoder-decoder", &store.params());
}
