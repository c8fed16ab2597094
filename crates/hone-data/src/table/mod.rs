//! Labelled text tables: CSV, TSV and JSON Lines, as used for sequence classification
//! (GLUE-style single sentences or sentence pairs, with a class or regression label).

mod clean;
mod labels;
mod split;

pub use clean::CleanOptions;
pub use labels::LabelMap;
pub use split::train_validation_split;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::error::{DataError, Result};
use crate::lines::LineReader;

/// The on-disk layout of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// Comma-separated with RFC 4180 quoting (quoted fields may hold commas, `""` and newlines).
    Csv,
    /// Tab-separated with GLUE / Python `csv.QUOTE_NONE` semantics: split on tabs only,
    /// quote characters are ordinary text (SST-2 sentences contain unbalanced quotes).
    Tsv,
    /// JSON Lines: one object per line, keys are the column names.
    Jsonl,
}

impl TableFormat {
    /// Guesses the format from the extension: `.csv`, `.tsv`, `.jsonl` / `.json`.
    pub fn from_path(path: &Path) -> Option<TableFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(TableFormat::Csv),
            "tsv" => Some(TableFormat::Tsv),
            "jsonl" | "json" => Some(TableFormat::Jsonl),
            _ => None,
        }
    }
}

impl FromStr for TableFormat {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(TableFormat::Csv),
            "tsv" => Ok(TableFormat::Tsv),
            "jsonl" | "json" => Ok(TableFormat::Jsonl),
            _ => Err(DataError::Invalid(format!(
                "unknown table format {s:?}; expected csv, tsv or jsonl"
            ))),
        }
    }
}

/// Which columns to read, and how.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableSpec {
    /// One column, or two for sentence pairs. Empty: chosen from the header like HF
    /// `run_glue` (see [`default_text_columns`]).
    pub text_columns: Vec<String>,
    /// The label column; `None` reads unlabelled rows (prediction input).
    pub label_column: Option<String>,
    /// `None`: from the file extension.
    pub format: Option<TableFormat>,
    /// Read at most this many examples (quick experiments, smoke tests).
    pub max_rows: Option<usize>,
    /// Applied to every text before the empty-text check.
    pub clean: CleanOptions,
}

impl TableSpec {
    /// Texts chosen from the header, labels from `label_column`.
    pub fn with_label(label_column: impl Into<String>) -> Self {
        TableSpec {
            label_column: Some(label_column.into()),
            ..TableSpec::default()
        }
    }

    /// Sets the text column(s).
    pub fn text_columns<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.text_columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the format instead of guessing it from the extension.
    pub fn format(mut self, format: TableFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Limits the number of examples read.
    pub fn max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = Some(max_rows);
        self
    }

    /// Sets the text cleaning.
    pub fn clean(mut self, clean: CleanOptions) -> Self {
        self.clean = clean;
        self
    }
}

/// One row of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// 1-based line in the file where the row starts, for error messages downstream.
    pub line: usize,
    /// The text cells, in the order of [`Table::text_columns`].
    pub texts: Vec<String>,
    /// The label as written in the file (JSON numbers and booleans as their JSON text).
    pub label: Option<String>,
}

/// A table read from a file, with the columns that were actually used.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file it came from; errors about its examples name this path.
    pub path: PathBuf,
    /// All column names, in header order (JSONL: key order of the first object).
    pub columns: Vec<String>,
    /// The text columns used (after defaulting).
    pub text_columns: Vec<String>,
    /// The label column used, if any.
    pub label_column: Option<String>,
    /// The rows.
    pub examples: Vec<Example>,
}

impl Table {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples (only possible with `max_rows = Some(0)`).
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The labels as floats, for regression (e.g. STS-B); names file:line of a bad value.
    pub fn regression_targets(&self) -> Result<Vec<f32>> {
        self.examples
            .iter()
            .map(|ex| {
                let label = self.require_label(ex)?;
                match label.trim().parse::<f32>() {
                    Ok(v) if v.is_finite() => Ok(v),
                    _ => Err(DataError::parse(
                        &self.path,
                        ex.line,
                        format!("label {label:?} is not a finite number"),
                    )),
                }
            })
            .collect()
    }

    /// The label of an example, or an error naming its line when the row has none.
    pub fn require_label<'a>(&self, ex: &'a Example) -> Result<&'a str> {
        ex.label.as_deref().ok_or_else(|| {
            DataError::parse(
                &self.path,
                ex.line,
                "row has no label (no label column was read)",
            )
        })
    }
}

/// Reads a table from a file; the format comes from `spec.format` or the extension.
pub fn read_table(path: impl AsRef<Path>, spec: &TableSpec) -> Result<Table> {
    let path = path.as_ref();
    let format = match spec.format.or_else(|| TableFormat::from_path(path)) {
        Some(f) => f,
        None => {
            return Err(DataError::Invalid(format!(
                "{}: cannot tell the table format from the extension; use .csv, .tsv or .jsonl or set it explicitly",
                path.display()
            )))
        }
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    read_table_from(BufReader::new(file), path, format, spec)
}

/// Reads a table from any reader; `name` is used in error messages.
pub fn read_table_from<R: BufRead>(
    reader: R,
    name: &Path,
    format: TableFormat,
    spec: &TableSpec,
) -> Result<Table> {
    let mut lines = LineReader::new(reader, name);
    match format {
        TableFormat::Csv | TableFormat::Tsv => read_delimited(&mut lines, format, spec),
        TableFormat::Jsonl => read_jsonl(&mut lines, spec),
    }
}

/// The text columns HF `run_glue`-style defaulting picks: `sentence1` + `sentence2` when both
/// exist (or `sentence1` alone), else `sentence`, else `text`, else the first column that is
/// not the label. The label is `label_column`, or `"label"` when none is given, so that an
/// unlabelled read of a labelled file still picks the text.
pub fn default_text_columns(columns: &[String], label_column: Option<&str>) -> Vec<String> {
    let has = |name: &str| columns.iter().any(|c| c == name);
    if has("sentence1") {
        if has("sentence2") {
            return vec!["sentence1".into(), "sentence2".into()];
        }
        return vec!["sentence1".into()];
    }
    for name in ["sentence", "text"] {
        if has(name) {
            return vec![name.into()];
        }
    }
    let label = label_column.unwrap_or("label");
    columns
        .iter()
        .find(|c| c.as_str() != label)
        .map(|c| vec![c.clone()])
        .unwrap_or_default()
}

/// Resolves the columns to read: (text columns, label column).
fn resolve_columns(
    columns: &[String],
    spec: &TableSpec,
    path: &Path,
    line: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let text_columns = if spec.text_columns.is_empty() {
        let chosen = default_text_columns(columns, spec.label_column.as_deref());
        if chosen.is_empty() {
            return Err(DataError::parse(
                path,
                line,
                format!(
                    "no text column besides the label; columns: {}",
                    columns.join(", ")
                ),
            ));
        }
        chosen
    } else {
        spec.text_columns.clone()
    };
    if text_columns.len() > 2 {
        return Err(DataError::Invalid(format!(
            "{}: give one text column or two (a sentence pair), not {}",
            path.display(),
            text_columns.len()
        )));
    }
    let wanted = text_columns.iter().chain(spec.label_column.iter());
    for column in wanted {
        if !columns.contains(column) {
            return Err(DataError::MissingColumn {
                path: path.to_path_buf(),
                line,
                column: column.clone(),
                available: columns.to_vec(),
            });
        }
    }
    Ok((text_columns, spec.label_column.clone()))
}

fn clean_text(
    raw: &str,
    spec: &TableSpec,
    path: &Path,
    line: usize,
    column: &str,
) -> Result<String> {
    let text = spec.clean.clean(raw);
    if text.trim().is_empty() {
        return Err(DataError::EmptyField {
            path: path.to_path_buf(),
            line,
            column: column.to_owned(),
        });
    }
    Ok(text)
}

fn check_label(raw: &str, path: &Path, line: usize, column: &str) -> Result<String> {
    // Labels are identifiers: stray spaces (`"1 "`) must not create a second class.
    let label = raw.trim();
    if label.is_empty() {
        return Err(DataError::EmptyField {
            path: path.to_path_buf(),
            line,
            column: column.to_owned(),
        });
    }
    Ok(label.to_owned())
}

fn read_delimited<R: BufRead>(
    lines: &mut LineReader<R>,
    format: TableFormat,
    spec: &TableSpec,
) -> Result<Table> {
    let path = lines.path().to_path_buf();
    let next = |lines: &mut LineReader<R>| match format {
        TableFormat::Csv => next_csv_record(lines),
        _ => next_tsv_record(lines),
    };
    let (header_line, columns) = match next(lines) {
        None => return Err(DataError::EmptyFile { path }),
        Some(r) => r?,
    };
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(DataError::parse(
                &path,
                header_line,
                format!("duplicate column name {c:?} in the header"),
            ));
        }
    }
    let (text_columns, label_column) = resolve_columns(&columns, spec, &path, header_line)?;
    let index = |name: &str| columns.iter().position(|c| c == name).unwrap();
    let text_idx: Vec<usize> = text_columns.iter().map(|c| index(c)).collect();
    let label_idx = label_column.as_deref().map(index);

    let mut examples = Vec::new();
    let mut saw_row = false;
    while spec.max_rows.is_none_or(|m| examples.len() < m) {
        let Some(record) = next(lines) else { break };
        let (line, fields) = record?;
        saw_row = true;
        if fields.len() != columns.len() {
            return Err(DataError::FieldCount {
                path,
                line,
                expected: columns.len(),
                found: fields.len(),
            });
        }
        let texts = text_idx
            .iter()
            .zip(&text_columns)
            .map(|(&i, name)| clean_text(&fields[i], spec, &path, line, name))
            .collect::<Result<Vec<_>>>()?;
        let label = match (label_idx, &label_column) {
            (Some(i), Some(name)) => Some(check_label(&fields[i], &path, line, name)?),
            _ => None,
        };
        examples.push(Example { line, texts, label });
    }
    if !saw_row && spec.max_rows != Some(0) {
        return Err(DataError::NoRows { path });
    }
    Ok(Table {
        path,
        columns,
        text_columns,
        label_column,
        examples,
    })
}

/// Next non-blank TSV line split on tabs. Quotes are literal (`QUOTE_NONE`).
fn next_tsv_record<R: BufRead>(lines: &mut LineReader<R>) -> Option<Result<(usize, Vec<String>)>> {
    loop {
        let (line, text) = match lines.next_line()? {
            Ok(l) => l,
            Err(e) => return Some(Err(e)),
        };
        if text.is_empty() {
            continue;
        }
        return Some(Ok((line, text.split('\t').map(str::to_owned).collect())));
    }
}

/// Next RFC 4180 record; a quoted field may span lines. The record's line is its first line.
fn next_csv_record<R: BufRead>(lines: &mut LineReader<R>) -> Option<Result<(usize, Vec<String>)>> {
    #[derive(PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        /// Just saw a `"` inside a quoted field: either `""` or the closing quote.
        QuoteInQuoted,
    }

    let (start, mut text) = loop {
        match lines.next_line()? {
            Ok((_, t)) if t.is_empty() => continue,
            Ok(l) => break l,
            Err(e) => return Some(Err(e)),
        }
    };
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut state = State::FieldStart;
    let mut line = start;
    loop {
        for c in text.chars() {
            state = match state {
                State::FieldStart if c == '"' => State::Quoted,
                State::FieldStart | State::Unquoted if c == ',' => {
                    fields.push(std::mem::take(&mut field));
                    State::FieldStart
                }
                // Like Python's csv module, a quote inside an unquoted field is kept as text.
                State::FieldStart | State::Unquoted => {
                    field.push(c);
                    State::Unquoted
                }
                State::Quoted if c == '"' => State::QuoteInQuoted,
                State::Quoted => {
                    field.push(c);
                    State::Quoted
                }
                State::QuoteInQuoted if c == '"' => {
                    field.push('"');
                    State::Quoted
                }
                State::QuoteInQuoted if c == ',' => {
                    fields.push(std::mem::take(&mut field));
                    State::FieldStart
                }
                State::QuoteInQuoted => {
                    return Some(Err(DataError::parse(
                        lines.path(),
                        line,
                        format!(
                            "unexpected {c:?} after the closing quote of field {}; write a literal quote as \"\"",
                            fields.len() + 1
                        ),
                    )))
                }
            };
        }
        if state != State::Quoted {
            fields.push(field);
            return Some(Ok((start, fields)));
        }
        // The quoted field continues on the next line.
        field.push('\n');
        match lines.next_line() {
            Some(Ok((l, t))) => {
                line = l;
                text = t;
            }
            Some(Err(e)) => return Some(Err(e)),
            None => {
                return Some(Err(DataError::parse(
                    lines.path(),
                    start,
                    "quoted field is never closed (missing '\"')",
                )))
            }
        }
    }
}

/// A JSON object that keeps its keys in file order, so "first non-label column" means what
/// the user sees (serde_json's `Map` sorts keys unless `preserve_order` is enabled
/// workspace-wide).
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object (JSON Lines: one object per line)")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedObject, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(OrderedObject(entries))
            }
        }
        deserializer.deserialize_map(V)
    }
}

impl OrderedObject {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for (k, _) in &self.0 {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        keys
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_jsonl<R: BufRead>(lines: &mut LineReader<R>, spec: &TableSpec) -> Result<Table> {
    let path = lines.path().to_path_buf();
    let mut resolved: Option<(Vec<String>, Vec<String>, Option<String>)> = None;
    let mut examples = Vec::new();
    while spec.max_rows.is_none_or(|m| examples.len() < m) {
        let Some(next) = lines.next_line() else { break };
        let (line, text) = next?;
        if text.trim().is_empty() {
            continue;
        }
        let obj: OrderedObject = serde_json::from_str(&text)
            .map_err(|e| DataError::parse(&path, line, format!("invalid JSON: {e}")))?;
        if resolved.is_none() {
            let columns = obj.keys();
            let (t, l) = resolve_columns(&columns, spec, &path, line)?;
            resolved = Some((columns, t, l));
        }
        let (_, text_columns, label_column) = resolved.as_ref().unwrap();
        let field = |name: &str| {
            obj.get(name).ok_or_else(|| DataError::MissingColumn {
                path: path.clone(),
                line,
                column: name.to_owned(),
                available: obj.keys(),
            })
        };
        let mut texts = Vec::with_capacity(text_columns.len());
        for name in text_columns {
            match field(name)? {
                Value::String(s) => texts.push(clean_text(s, spec, &path, line, name)?),
                v => {
                    return Err(DataError::parse(
                        &path,
                        line,
                        format!("column {name:?} must be a string, found {}", json_type(v)),
                    ))
                }
            }
        }
        let label = match label_column {
            None => None,
            Some(name) => {
                let raw = match field(name)? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    v => {
                        return Err(DataError::parse(
                            &path,
                            line,
                            format!(
                            "label column {name:?} must be a string, number or boolean, found {}",
                            json_type(v)
                        ),
                        ))
                    }
                };
                Some(check_label(&raw, &path, line, name)?)
            }
        };
        examples.push(Example { line, texts, label });
    }
    let Some((columns, text_columns, label_column)) = resolved else {
        return Err(if spec.max_rows == Some(0) {
            DataError::Invalid(format!(
                "{}: max_rows = 0 reads no row, so the columns are unknown",
                path.display()
            ))
        } else {
            DataError::EmptyFile { path }
        });
    };
    Ok(Table {
        path,
        columns,
        text_columns,
        label_column,
        examples,
    })
}

#[cfg(test)]
mod tests;
