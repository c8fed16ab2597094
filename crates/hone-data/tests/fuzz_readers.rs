//! Fuzz targets for every reader of untrusted text in this crate: tables (TSV, CSV,
//! JSONL), CoNLL token files and token JSONL. `cargo test` runs each on random inputs for
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
