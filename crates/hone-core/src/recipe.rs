//! Recipes: TOML files with `[model]`, `[data]` and `[training]` sections whose keys follow
//! Hugging Face's `run_glue.py` / `run_ner.py` arguments and `TrainingArguments`, plus
//! `--set key=value` overrides from the command line.

use std::marker::PhantomData;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Read a recipe file and apply `overrides` (`key=value` or `section.key=value`; values
/// are TOML literals, or plain strings when they do not parse as one). Nothing is read but
/// the file: a misspelt key or value fails here, before any data is touched.
pub fn load_recipe<R: DeserializeOwned + Serialize + Default>(
    path: &Path,
    overrides: &[String],
) -> Result<R> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read recipe {}", path.display()))?;
    parse_recipe(&text, path, overrides)
}

/// [`load_recipe`] on text already read from `path`.
pub fn parse_recipe<R: DeserializeOwned + Serialize + Default>(
    text: &str,
    path: &Path,
    overrides: &[String],
) -> Result<R> {
    // Straight from the text, so that an error carries its line.
    let from_file = toml::from_str::<R>(text).map_err(|e| located(path, text, &e));
    if overrides.is_empty() {
        return from_file;
    }
    let mut table: toml::Table = toml::from_str(text).map_err(|e| located(path, text, &e))?;
    apply_overrides::<R>(&mut table, overrides)?;
    match R::deserialize(toml::Value::Table(table)) {
        Ok(recipe) => Ok(recipe),
        // The file alone is wrong: say where.
        Err(_) if from_file.is_err() => from_file,
        Err(e) => bail!(
            "{} with --set {}: {}",
            path.display(),
            overrides.join(" --set "),
            e.message()
        ),
    }
}

/// A TOML error as one line: `file:line: key: message`.
pub(crate) fn located(path: &Path, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let Some(span) = e.span() else {
        return anyhow!("{}: {}", path.display(), e.message());
    };
    // Bytes, not a str slice: the span may start inside a multi-byte character (an invalid
    // escape before one), and slicing there would panic.
    let before = &text.as_bytes()[..span.start.min(text.len())];
    let line_no = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    let what = line.split_once('=').map_or(line, |(key, _)| key.trim());
    anyhow!("{}:{line_no}: {what}: {}", path.display(), e.message())
}

/// Deserialize a value written as a string through its [`FromStr`] (a device, a tag
/// scheme), so that a bad one fails with the parser's message at its place in the file.
pub fn deserialize_from_str<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    struct Visitor<T>(&'static str, PhantomData<T>);
    impl<T: FromStr> serde::de::Visitor<'_> for Visitor<T>
    where
        T::Err: std::fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor(expecting, PhantomData))
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

    /// Found by the `recipe_with_overrides` fuzz target: an invalid escape before a
    /// multi-byte character puts the error's span inside that character.
    #[test]
    fn an_error_inside_a_multibyte_character_is_located_without_a_panic() {
        let text = "\n\n\r\n\"\\\u{fffd}";
        let err = parse_recipe::<Recipe>(text, Path::new("r.toml"), &[]).unwrap_err();
        assert!(err.to_string().starts_with("r.toml:"), "{err}");
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
