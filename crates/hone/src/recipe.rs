//! Recipes: TOML files with `[model]`, `[data]` and `[training]` sections whose keys follow
//! Hugging Face's `run_glue.py` / `run_ner.py` arguments and `TrainingArguments`, plus
//! `--set key=value` overrides from the command line.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Read a recipe file and apply `overrides` (`key=value` or `section.key=value`; values
/// are TOML literals, or plain strings when they do not parse as one).
pub fn load_recipe<R: DeserializeOwned + Serialize + Default>(
    path: &Path,
    overrides: &[String],
) -> Result<R> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read recipe {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    apply_overrides::<R>(&mut table, overrides)?;
    R::deserialize(toml::Value::Table(table)).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Apply `--set` overrides to a parsed recipe.
pub fn apply_overrides<R: Serialize + Default>(
    table: &mut toml::Table,
    overrides: &[String],
) -> Result<()> {
    // The default recipe tells which section owns a bare key (JSON keeps `None` fields as
    // null, where TOML would drop them).
    let defaults = serde_json::to_value(R::default()).context("recipe defaults must serialise")?;
    let defaults = defaults.as_object().context("a recipe is a table")?;
    for item in overrides {
        let (key, raw) = item
            .split_once('=')
            .with_context(|| format!("--set {item}: expected key=value"))?;
        let value = parse_value(raw.trim());
        // A dotted key is a path (`model.config.hidden_size`); a bare key goes to the
        // section that owns it.
        let mut path: Vec<String> = key.split('.').map(str::to_string).collect();
        if path.len() == 1 {
            let owner = defaults
                .iter()
                .find(|(_, v)| v.as_object().is_some_and(|t| t.contains_key(key)))
                .map(|(s, _)| s.clone());
            match owner {
                Some(s) => path.insert(0, s),
                None => bail!("--set {key}: no recipe section has this key"),
            }
        }
        let field = path.pop().expect("non-empty path");
        let mut table: &mut toml::Table = table;
        for part in &path {
            table = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .with_context(|| format!("--set {key}: `{part}` is not a table"))?;
        }
        table.insert(field, value);
    }
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Recipe {
        data: Data,
        training: Training,
    }
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Data {
        train_file: String,
        extra: Option<toml::Table>,
    }
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Training {
        learning_rate: f64,
        seed: u64,
        max_steps: Option<usize>,
    }

    #[test]
    fn overrides_find_their_section_and_parse_values() {
        let mut t: toml::Table = toml::from_str("[training]\nlearning_rate = 1e-3\n").unwrap();
        apply_overrides::<Recipe>(
            &mut t,
            &[
                "learning_rate=5e-5".into(),
                "data.train_file=a b.tsv".into(),
                "seed=7".into(),
                "max_steps=9".into(),
                "data.extra.depth=3".into(),
            ],
        )
        .unwrap();
        let r = Recipe::deserialize(toml::Value::Table(t)).unwrap();
        assert_eq!(r.training.learning_rate, 5e-5);
        assert_eq!(r.training.seed, 7);
        assert_eq!(r.training.max_steps, Some(9));
        assert_eq!(r.data.train_file, "a b.tsv");
        assert_eq!(r.data.extra.unwrap()["depth"].as_integer(), Some(3));
        let mut t = toml::Table::new();
        let err = apply_overrides::<Recipe>(&mut t, &["nope=1".into()]).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
