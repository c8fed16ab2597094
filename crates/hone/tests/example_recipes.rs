//! Every recipe in `examples/` parses as the recipe of the command that runs it, so a
//! misspelt or renamed key (the recipes deny unknown fields) fails here, not in a user's
//! first run.

use std::path::PathBuf;

use hone::recipe::load_recipe;
use hone::tasks::classification::ClassificationRecipe;
use hone::tasks::ner::{NerRecipe, TASK_NAME as NER_TASK};
use hone::tasks::pretrain::{PositionInit, PretrainRecipe};
use serde::Deserialize;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_recipe_parses() {
    let files = examples();
    assert!(files.len() >= 7, "{files:?}");
    let mut kinds = Vec::new();
    for path in &files {
        let mut table: toml::Table =
            toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let kind = if table.contains_key("objective") {
            load_recipe::<PretrainRecipe>(path, &[]).map(|_| "pretrain")
        } else if table.get("task").and_then(|t| t.as_str()) == Some(NER_TASK) {
            NerRecipe::deserialize(toml::Value::Table(table))
                .map(|_| "ner")
                .map_err(Into::into)
        } else {
            table.remove("task");
            ClassificationRecipe::deserialize(toml::Value::Table(table))
                .map(|_| "classification")
                .map_err(Into::into)
        };
        match kind {
            Ok(k) => kinds.push(k),
            Err(e) => panic!("{}: {e:#}", path.display()),
        }
    }
    for k in ["pretrain", "ner", "classification"] {
        assert!(kinds.contains(&k), "no {k} recipe among {files:?}");
    }
}

#[test]
fn domain_adaptive_recipe_starts_from_sinusoidal_positions() {
    let path = examples()
        .into_iter()
        .find(|p| p.ends_with("bert-mlm-sst2.toml"))
        .unwrap();
    let recipe: PretrainRecipe = load_recipe(&path, &[]).unwrap();
    assert_eq!(recipe.model.position_init, PositionInit::Sinusoidal);
}
