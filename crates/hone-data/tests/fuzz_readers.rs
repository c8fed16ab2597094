//! Fuzz targets for every reader of untrusted text in this crate: tables (TSV, CSV,
//! JSONL), CoNLL token files, token JSONL and parallel text; and a round-trip property
//! (rows written as each table format read back the same). `cargo test` runs each on random inputs for
//! a bounded time; `cargo bolero test -p hone-data --test fuzz_readers <target>` (nightly,
//! cargo-bolero) runs the same target coverage-guided. The property everywhere: no panic,
//! and an error names the file (and the line, where there is one).

use std::io::Cursor;
use std::path::Path;

use hone_data::conll::{parse_conll, parse_token_jsonl, ConllOptions};
use hone_data::table::read_table_from;
use hone_data::{TableFormat, TableSpec};

const NAME: &str = "fuzz/input";

fn check_error(e: impl std::fmt::Display) {
    let text = e.to_string();
    assert!(
        text.contains(NAME),
        "an error that does not name the file: {text}"
    );
}

fn table(input: &[u8], format: TableFormat, spec: &TableSpec) {
    if let Err(e) = read_table_from(Cursor::new(input), Path::new(NAME), format, spec) {
        check_error(e);
    }
}

// Each target calls `check!` itself: bolero names a target after its function.
#[test]
fn tsv_table() {
    let spec = TableSpec::with_label("label");
    bolero::check!().for_each(|input: &[u8]| table(input, TableFormat::Tsv, &spec));
}

#[test]
fn csv_table() {
    let spec = TableSpec::with_label("label");
    bolero::check!().for_each(|input: &[u8]| table(input, TableFormat::Csv, &spec));
}

#[test]
fn jsonl_table() {
    let spec = TableSpec::with_label("label").text_columns(["sentence"]);
    bolero::check!().for_each(|input: &[u8]| table(input, TableFormat::Jsonl, &spec));
}

#[test]
fn conll_file() {
    let opts = ConllOptions::default();
    bolero::check!().for_each(|input: &[u8]| {
        if let Err(e) = parse_conll(Cursor::new(input), Path::new(NAME), &opts) {
            check_error(e);
        }
    });
}

#[test]
fn token_jsonl_file() {
    let opts = ConllOptions::default();
    bolero::check!().for_each(|input: &[u8]| {
        if let Err(e) = parse_token_jsonl(Cursor::new(input), Path::new(NAME), &opts) {
            check_error(e);
        }
    });
}

#[test]
fn parallel_text() {
    // Input split at its first 0xff byte: the source file, then the target file.
    let dir = std::env::temp_dir().join(format!("hone-fuzz-parallel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (source, target) = (dir.join("source.txt"), dir.join("target.txt"));
    bolero::check!().for_each(|input: &[u8]| {
        let cut = input.iter().position(|&b| b == 0xff).unwrap_or(input.len());
        std::fs::write(&source, &input[..cut]).unwrap();
        std::fs::write(&target, input.get(cut + 1..).unwrap_or_default()).unwrap();
        match hone_data::read_parallel(&source, &target) {
            Ok(text) => assert!(text
                .pairs
                .iter()
                .all(|(s, t)| !s.trim().is_empty() && !t.trim().is_empty())),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("source.txt") || e.contains("target.txt"), "{e}");
            }
        }
    });
}

/// A table cell from arbitrary text: no tabs or line breaks (TSV cannot hold them), not
/// blank.
fn cell(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if matches!(c, '\t' | '\n' | '\r') {
                ' '
            } else {
                c
            }
        })
        .collect();
    format!("x{s}")
}

/// Round trips: rows written as TSV, CSV (every field quoted, RFC 4180) and JSONL read back
/// as the same texts and labels.
#[test]
fn tables_round_trip() {
    bolero::check!()
        .with_type::<Vec<(String, u8)>>()
        .for_each(|rows: &Vec<(String, u8)>| {
            if rows.is_empty() {
                return;
            }
            let rows: Vec<(String, String)> = rows
                .iter()
                .map(|(s, l)| (cell(s), format!("l{l}")))
                .collect();
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let mut tsv = String::from("sentence\tlabel\n");
            let mut csv = String::from("sentence,label\n");
            let mut jsonl = String::new();
            for (s, l) in &rows {
                tsv += &format!("{s}\t{l}\n");
                csv += &format!("{},{}\n", quote(s), quote(l));
                jsonl += &format!("{}\n", serde_json::json!({"sentence": s, "label": l}));
            }
            let spec = TableSpec::with_label("label").text_columns(["sentence"]);
            for (format, text) in [
                (TableFormat::Tsv, tsv),
                (TableFormat::Csv, csv),
                (TableFormat::Jsonl, jsonl),
            ] {
                let table = read_table_from(Cursor::new(text), Path::new(NAME), format, &spec)
                    .unwrap_or_else(|e| panic!("{format:?}: {e}"));
                let back: Vec<(String, String)> = table
                    .examples
                    .into_iter()
                    .map(|e| (e.texts[0].clone(), e.label.unwrap()))
                    .collect();
                assert_eq!(back, rows, "{format:?}");
            }
        });
}
