//! Fuzz targets for the readers of untrusted files in the library: recipe TOML with
//! `--set` overrides, `config.json`, `adapter_config.json`, `tokenizer.json` and the
//! safetensors header. `cargo test` runs each on random inputs for a bounded time;
//! `cargo bolero test -p hone-core --test fuzz_readers <target>` (nightly, cargo-bolero)
//! runs the same target coverage-guided. The property everywhere: no panic, and an error
//! that names the file where the reader knows it.

use std::path::{Path, PathBuf};

use hone_core::model::adapter::LoraConfig;
use hone_core::model::quantization::read_safetensors;
use hone_core::model::ModelConfig;
use hone_core::recipe::parse_recipe;
use hone_core::tasks::classification::ClassificationRecipe;
use hone_core::tokenization::TextTokenizer;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hone-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn recipe_with_overrides() {
    let path = Path::new("fuzz/recipe.toml");
    bolero::check!().for_each(|input: &[u8]| {
        // The first lines are overrides (`key=value`), the rest the recipe.
        let text = String::from_utf8_lossy(input);
        let mut parts = text.splitn(3, '\n');
        let overrides: Vec<String> = parts
            .by_ref()
            .take(2)
            .filter(|l| l.contains('='))
            .map(str::to_string)
            .collect();
        let body = parts.next().unwrap_or_default();
        if let Err(e) = parse_recipe::<ClassificationRecipe>(body, path, &overrides) {
            let e = format!("{e:#}");
            assert!(
                e.contains("fuzz/recipe.toml") || !overrides.is_empty(),
                "an error that names no file: {e}"
            );
        }
    });
}

#[test]
fn model_config_json() {
    bolero::check!().for_each(|input: &[u8]| {
        let _ = ModelConfig::parse(&String::from_utf8_lossy(input));
    });
}

#[test]
fn adapter_config_json() {
    bolero::check!().for_each(|input: &[u8]| {
        if let Ok(config) = serde_json::from_slice::<LoraConfig>(input) {
            let _ = config.validate();
        }
    });
}

#[test]
fn tokenizer_json() {
    let path = scratch("tokenizer.json");
    bolero::check!().for_each(|input: &[u8]| {
        std::fs::write(&path, input).unwrap();
        if let Err(e) = TextTokenizer::from_file(&path) {
            assert!(e.to_string().contains("tokenizer.json"), "{e}");
        }
    });
}

#[test]
fn safetensors_header() {
    let path = scratch("model.safetensors");
    bolero::check!().for_each(|input: &[u8]| {
        std::fs::write(&path, input).unwrap();
        if let Err(e) = read_safetensors(&path, &candle_core::Device::Cpu) {
            let e = format!("{e:#}");
            assert!(e.contains("model.safetensors"), "{e}");
        }
    });
}
