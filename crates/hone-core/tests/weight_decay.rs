//! Weight decay by rank (matrices decay, vectors do not) picks exactly the parameters
//! Hugging Face's name rule picks (no decay for names ending in `bias` or containing
//! `LayerNorm`, `layer_norm` or `ln_`), on every BERT and GPT-2 head and the
//! encoder-decoder.

mod common;

use candle_core::{Device, Var};
use common::*;
use hone_core::model::{Head, Model, ModelConfig, ModelDir, Net, ProblemType};
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
    // Marian's trainable parameters (its final_logits_bias is a buffer), post-LN and pre-LN.
    let marian = Model::load(&fixture("tiny-marian"), &Device::Cpu).unwrap();
    assert_same_rule("tiny-marian", &marian.params.trainable_params());
    let text = std::fs::read_to_string(fixture("tiny-marian").join("config.json")).unwrap();
    let mut config = ModelConfig::parse(&text).unwrap();
    config.raw.insert("normalize_before".into(), true.into());
    let config = ModelConfig::parse(&serde_json::to_string(&config.raw).unwrap()).unwrap();
    let pre_ln = Model::<Net>::from_scratch(config, Head::Seq2SeqLm, &Device::Cpu, 0).unwrap();
    assert!(pre_ln
        .params
        .get("model.decoder.layer_norm.weight")
        .is_some());
    assert_same_rule("pre-LN marian", &pre_ln.params.trainable_params());
}
