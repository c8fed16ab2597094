//! The translation task's data through the trainer: token-based batches (every pair once an
//! epoch, within the token budget, the same batches in a new order each epoch).

mod common;

use std::collections::BTreeSet;

use candle_core::Device;
use common::*;
use hone_core::recipe::load_recipe;
use hone_core::tasks::translation::{TranslationData, TranslationRecipe};
use hone_core::training::{Trainer, TrainingData};

#[test]
fn token_batches_cover_every_pair_within_the_budget() {
    let dir = std::env::temp_dir().join(format!("hone-mt-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let multi30k = shared_dir().join("data/multi30k");
    for (name, n) in [
        ("train.de", 300),
        ("train.en", 300),
        ("val.de", 8),
        ("val.en", 8),
    ] {
        let text = std::fs::read_to_string(multi30k.join(name)).unwrap();
        let lines: Vec<&str> = text.lines().take(n).collect();
        std::fs::write(dir.join(name), lines.join("\n") + "\n").unwrap();
    }
    let recipe = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/multi30k-de-en.toml"
    );
    let p = |name: &str| dir.join(name).display().to_string();
    let sets = [
        format!("train_source={}", p("train.de")),
        format!("train_target={}", p("train.en")),
        format!("validation_source={}", p("val.de")),
        format!("validation_target={}", p("val.en")),
        "tokenizer_vocab_size=300".into(),
        "model.config.d_model=16".into(),
        "model.config.encoder_layers=1".into(),
        "model.config.decoder_layers=1".into(),
        "model.config.encoder_ffn_dim=32".into(),
        "model.config.decoder_ffn_dim=32".into(),
        "max_tokens_per_batch=600".into(),
    ];
    let r: TranslationRecipe = load_recipe(std::path::Path::new(recipe), &sets).unwrap();
    let (model, data) = TranslationData::prepare(&r, &Device::Cpu).unwrap();
    assert_eq!(data.num_train_examples(), 300);
    let trainer = Trainer::new(r.training.clone(), &model, &data);
    let epoch0 = trainer.epoch_batches(0);
    let epoch1 = trainer.epoch_batches(1);
    let mut seen: Vec<usize> = epoch0.iter().flatten().copied().collect();
    seen.sort();
    assert_eq!(seen, (0..300).collect::<Vec<_>>(), "every pair once");
    for batch in &epoch0 {
        let longest = batch
            .iter()
            .map(|&i| data.train_example_length(i))
            .max()
            .unwrap();
        assert!(
            batch.len() == 1 || batch.len() * longest <= 600,
            "{} x {longest}",
            batch.len()
        );
    }
    let as_sets = |e: &[Vec<usize>]| -> BTreeSet<Vec<usize>> { e.iter().cloned().collect() };
    assert_eq!(as_sets(&epoch0), as_sets(&epoch1), "the same batches");
    assert_ne!(epoch0, epoch1, "in another order");
    assert!(
        epoch0.len() < 300 / 4,
        "token batches pack many short pairs"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
