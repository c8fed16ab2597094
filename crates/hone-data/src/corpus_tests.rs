use crate::corpus::*;
use crate::testutil::TempDir;

fn docs(reader: DocumentReader) -> Vec<(usize, Vec<String>)> {
    reader
        .map(|d| d.map(|d| (d.line, d.lines)).unwrap())
        .collect()
}

#[test]
fn one_document_per_file() {
    let dir = TempDir::new();
    let a = dir.write("a.txt", "\n  First line.  \r\n\nSecond.\n");
    let empty = dir.write("empty.txt", "\n \n");
    let b = dir.write("b.txt", "Only");
    let got = docs(DocumentReader::new(
        [&a, &empty, &b],
        DocumentMode::OnePerFile,
    ));
    assert_eq!(
        got,
        vec![
            (2, vec!["First line.".to_string(), "Second.".to_string()]),
            (1, vec!["Only".to_string()]),
        ]
    );
}

#[test]
fn blank_line_separated_documents_never_empty() {
    let dir = TempDir::new();
    let a = dir.write("a.txt", "d1 s1\nd1 s2\n\n\n \nd2 s1\n");
    let b = dir.write("b.txt", "d3 s1\n\nd4 s1\nd4 s2\n\n");
    let mut reader = DocumentReader::new([a.clone(), b.clone()], DocumentMode::BlankLineSeparated);
    let first = reader.next().unwrap().unwrap();
    assert_eq!(&*first.path, a.as_path());
    let rest = docs(reader);
    assert_eq!(first.lines, ["d1 s1", "d1 s2"]);
    assert_eq!(
        rest,
        vec![
            (6, vec!["d2 s1".to_string()]),
            (1, vec!["d3 s1".to_string()]),
            (3, vec!["d4 s1".to_string(), "d4 s2".to_string()]),
        ]
    );
}

#[test]
fn errors_name_file_and_line_then_stop() {
    let dir = TempDir::new();
    let bad = dir.write("bad.txt", b"ok\n\nfine\n\xc3\x28\nnext\n");
    let mut reader = DocumentReader::new([&bad, &bad], DocumentMode::BlankLineSeparated);
    assert_eq!(reader.next().unwrap().unwrap().lines, ["ok"]);
    let msg = reader.next().unwrap().unwrap_err().to_string();
    assert!(msg.ends_with("bad.txt:4: invalid UTF-8"), "{msg}");
    assert!(reader.next().is_none());

    let missing = dir.path().join("missing.txt");
    let mut reader = DocumentReader::new([&missing], DocumentMode::OnePerFile);
    let msg = reader.next().unwrap().unwrap_err().to_string();
    assert!(msg.starts_with(missing.to_str().unwrap()), "{msg}");

    let msg = read_lines(&bad).unwrap_err().to_string();
    assert!(msg.ends_with("bad.txt:4: invalid UTF-8"), "{msg}");
}

#[test]
fn read_lines_keeps_empty_lines_for_alignment() {
    let dir = TempDir::new();
    let p = dir.write("l.txt", "a\r\n\nb \n");
    assert_eq!(read_lines(&p).unwrap(), ["a", "", "b "]);

    let de = dir.write("x.de", "Ein Hund.\n\nZwei.\n");
    let en = dir.write("x.en", "A dog.\n\nTwo.\n");
    let two = [
        ("Ein Hund.".to_string(), "A dog.".to_string()),
        ("Zwei.".to_string(), "Two.".to_string()),
    ];
    let text = read_parallel(&de, &en).unwrap();
    assert_eq!((text.pairs.as_slice(), text.skipped), (two.as_slice(), 1));
    let short = dir.write("y.en", "A dog.\n");
    let msg = read_parallel(&de, &short).unwrap_err().to_string();
    assert!(
        msg.contains("x.de has 3 lines but") && msg.contains("y.en has no line 2"),
        "{msg}"
    );
    // A line empty on one side only is skipped too, and counted.
    let hole = dir.write("z.en", "A dog.\nextra\nTwo.\n");
    let text = read_parallel(&de, &hole).unwrap();
    assert_eq!((text.pairs.as_slice(), text.skipped), (two.as_slice(), 1));
}

#[test]
fn text_chunks_give_back_the_files_text_in_whole_lines() {
    let dir = TempDir::new();
    let a = dir.write("a.txt", "\u{feff}first line\r\nsecond\n\nthird without end");
    let b = dir.write("b.txt", "b1\nb2\n");
    let chunks: Vec<Vec<String>> = TextChunks::new([&a, &b], 12).map(|c| c.unwrap()).collect();
    assert!(chunks.len() > 1, "small chunks: {chunks:?}");
    for c in &chunks[..chunks.len() - 1] {
        let len: usize = c.iter().map(String::len).sum();
        assert!(len >= 12, "a chunk stops only once it holds chunk_bytes");
    }
    let text: String = chunks.concat().concat();
    // The BOM goes; line endings (\r\n included) and the missing final newline stay.
    assert_eq!(text, "first line\r\nsecond\n\nthird without endb1\nb2\n");
}

#[test]
fn text_chunks_name_the_bad_line() {
    let dir = TempDir::new();
    let a = dir.write("a.txt", b"ok\nbad \xff byte\n".as_slice());
    let mut chunks = TextChunks::new([&a], 1 << 20);
    let err = chunks.next().unwrap().unwrap_err().to_string();
    assert!(err.contains("a.txt") && err.contains(":2"), "{err}");
    assert!(chunks.next().is_none(), "stops after an error");
}
