use super::*;
use crate::testutil::TempDir;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn reads_sentences_docstart_blank_lines_crlf() {
    let dir = TempDir::new();
    let p = dir.write(
        "t.txt",
        concat!(
            "-DOCSTART- -X- -X- O\r\n",
            "\r\n",
            "EU B-ORG  \r\n",
            "rejects\tO\r\n",
            "\r\n",
            "\r\n",
            "Peter B-PER\n",
            "Blackburn I-PER\n",
            "-DOCSTART- O\n",
            "BRUSSELS B-LOC",
        ),
    );
    let got = read_conll(&p, &ConllOptions::default()).unwrap();
    assert_eq!(
        got,
        vec![
            Sentence {
                line: 3,
                tokens: s(&["EU", "rejects"]),
                tags: s(&["B-ORG", "O"]),
                other_columns: vec![],
            },
            Sentence {
                line: 7,
                tokens: s(&["Peter", "Blackburn"]),
                tags: s(&["B-PER", "I-PER"]),
                other_columns: vec![],
            },
            Sentence {
                line: 10,
                tokens: s(&["BRUSSELS"]),
                tags: s(&["B-LOC"]),
                other_columns: vec![],
            },
        ]
    );
    assert!(read_conll(
        dir.write("e.txt", "\n\n-DOCSTART- O\n\n"),
        &ConllOptions::default()
    )
    .unwrap()
    .is_empty());
}

#[test]
fn four_columns_tag_column_and_other_columns() {
    let dir = TempDir::new();
    let p = dir.write("c.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n");
    let opts = ConllOptions {
        keep_other_columns: true,
        ..ConllOptions::default()
    };
    let got = read_conll(&p, &opts).unwrap();
    assert_eq!(got[0].tags, ["B-ORG", "O"]);
    assert_eq!(
        got[0].other_columns,
        vec![s(&["NNP", "B-NP"]), s(&["VBZ", "B-VP"])]
    );

    // Chunk tags from column 2, the rest kept in file order.
    let opts = ConllOptions {
        tag_column: Some(2),
        keep_other_columns: true,
        ..ConllOptions::default()
    };
    let got = read_conll(&p, &opts).unwrap();
    assert_eq!(got[0].tags, ["B-NP", "B-VP"]);
    assert_eq!(
        got[0].other_columns,
        vec![s(&["NNP", "B-ORG"]), s(&["VBZ", "O"])]
    );

    // POS tags are not a chunk scheme: the form check must be switched off.
    let pos = ConllOptions {
        tag_column: Some(1),
        ..ConllOptions::default()
    };
    let msg = read_conll(&p, &pos).unwrap_err().to_string();
    assert!(
        msg.ends_with("c.txt:1: tag \"NNP\" is not a valid IOB2 tag"),
        "{msg}"
    );
    let pos = ConllOptions {
        scheme: None,
        ..pos
    };
    assert_eq!(read_conll(&p, &pos).unwrap()[0].tags, ["NNP", "VBZ"]);
    let bad = ConllOptions {
        tag_column: Some(0),
        ..ConllOptions::default()
    };
    assert!(read_conll(&p, &bad).is_err());
}

#[test]
fn column_errors_name_file_line_and_counts() {
    let dir = TempDir::new();
    let p = dir.write("a.txt", "EU B-ORG\n\nlonely\n");
    let msg = read_conll(&p, &ConllOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("a.txt:3: expected 2 columns (as on line 1), found 1"),
        "{msg}"
    );

    let p = dir.write("b.txt", "lonely\n");
    let msg = read_conll(&p, &ConllOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("b.txt:1: expected at least 2 columns, found 1"),
        "{msg}"
    );

    // A token with a space in it shifts the columns.
    let p = dir.write("c.txt", "New B-LOC\nNew York I-LOC\n");
    let msg = read_conll(&p, &ConllOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("c.txt:2: expected 2 columns (as on line 1), found 3"),
        "{msg}"
    );

    let p = dir.write("d.txt", "a O\nb B-LOC\n");
    let opts = ConllOptions {
        tag_column: Some(3),
        ..ConllOptions::default()
    };
    let msg = read_conll(&p, &opts).unwrap_err().to_string();
    assert!(
        msg.ends_with("d.txt:1: expected at least 4 columns, found 2"),
        "{msg}"
    );
}

#[test]
fn tags_outside_the_scheme_are_rejected_with_line() {
    let dir = TempDir::new();
    for (bad, scheme) in [
        ("B_PER", TagScheme::IOB2),
        ("X-PER", TagScheme::IOB2),
        ("B-", TagScheme::IOB2),
        ("S-PER", TagScheme::IOB1),
        ("o", TagScheme::IOBES),
    ] {
        let p = dir.write("t.txt", format!("a O\n\nb {bad}\n"));
        let opts = ConllOptions {
            scheme: Some(scheme),
            ..ConllOptions::default()
        };
        let msg = read_conll(&p, &opts).unwrap_err().to_string();
        assert!(
            msg.ends_with(&format!("t.txt:3: tag {bad:?} is not a valid {scheme} tag")),
            "{msg}"
        );
    }
    let p = dir.write("ok.txt", "a S-PER\nb E-LOC\n");
    let opts = ConllOptions {
        scheme: Some(TagScheme::IOBES),
        ..ConllOptions::default()
    };
    assert_eq!(read_conll(&p, &opts).unwrap().len(), 1);
}

#[test]
fn jsonl_token_files() {
    let dir = TempDir::new();
    let p = dir.write(
        "t.jsonl",
        concat!(
            "{\"tokens\": [\"EU\", \"rejects\"], \"tags\": [\"B-ORG\", \"O\"]}\n",
            "\n",
            "{\"tokens\": [], \"tags\": []}\n",
            "{\"id\": \"3\", \"tokens\": [\"Peter\"], \"ner_tags\": [\"B-PER\"]}\n",
        ),
    );
    let got = read_token_file(&p, &ConllOptions::default()).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].line, got[1].line), (1, 4));
    assert_eq!(got[1].tokens, ["Peter"]);
    assert_eq!(got[1].tags, ["B-PER"]);

    let cases = [
        (
            "{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}",
            "x.jsonl:2: 2 tokens but 1 tags",
        ),
        (
            "{\"tokens\": [\"a\"], \"ner_tags\": [3]}",
            "x.jsonl:2: \"ner_tags\"[0] is a number; give tag strings such as \"B-PER\" (integer ids need the label list)",
        ),
        ("{\"tokens\": [\"a\"]}", "x.jsonl:2: missing \"tags\" (or \"ner_tags\")"),
        ("[1]", "x.jsonl:2: expected a JSON object per line, found an array"),
        ("{\"tokens\": [\"a\"], \"tags\": [\"B_PER\"]}", "x.jsonl:2: tag \"B_PER\" is not a valid IOB2 tag"),
    ];
    for (line, want) in cases {
        let p = dir.write(
            "x.jsonl",
            format!("{{\"tokens\": [\"ok\"], \"tags\": [\"O\"]}}\n{line}\n"),
        );
        let msg = read_token_file(&p, &ConllOptions::default())
            .unwrap_err()
            .to_string();
        assert!(msg.ends_with(want), "{msg} / {want}");
    }
}

#[test]
fn scheme_conversions() {
    // IOB1: B- only between adjacent chunks of the same type.
    let iob1 = s(&[
        "I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG",
    ]);
    let iob2 = s(&[
        "B-PER", "I-PER", "B-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG",
    ]);
    let iobes = s(&[
        "B-PER", "E-PER", "S-PER", "O", "S-LOC", "S-ORG", "B-ORG", "E-ORG",
    ]);
    assert_eq!(iob1_to_iob2(&iob1).unwrap(), iob2);
    assert_eq!(iob2_to_iob1(&iob2).unwrap(), iob1);
    assert_eq!(iob2_to_iobes(&iob2).unwrap(), iobes);
    assert_eq!(iobes_to_iob2(&iobes).unwrap(), iob2);
    assert_eq!(
        convert(&iob1, TagScheme::IOB1, TagScheme::IOBES).unwrap(),
        iobes
    );
    assert_eq!(
        convert(&iobes, TagScheme::IOBES, TagScheme::IOB1).unwrap(),
        iob1
    );
    assert_eq!(
        convert(&iob2, TagScheme::IOB2, TagScheme::IOB2).unwrap(),
        iob2
    );
    assert_eq!(
        iob2_to_iobes(&s(&["B-X", "I-X", "I-X"])).unwrap(),
        ["B-X", "I-X", "E-X"]
    );
    assert!(iob2_to_iobes::<&str>(&[]).unwrap().is_empty());

    // Ill-formed IOB2 (I- after O) is read as a chunk start, like seqeval.
    assert_eq!(
        iob2_to_iobes(&s(&["O", "I-PER", "I-PER", "I-LOC"])).unwrap(),
        ["O", "B-PER", "E-PER", "S-LOC"]
    );
    assert!(iob2_to_iobes(&s(&["O", "E-PER"])).is_err());
    let err = iob1_to_iob2(&s(&["O", "B_PER"])).unwrap_err().to_string();
    assert!(
        err.starts_with("tag \"B_PER\" at position 1 is not valid IOB1"),
        "{err}"
    );
}

#[test]
fn validation() {
    assert!(validate(&s(&["O", "I-PER"]), TagScheme::IOB2).is_ok());
    assert!(validate(&s(&["O", "S-PER"]), TagScheme::IOB2).is_err());
    assert!(validate(&s(&["O", "S-PER"]), TagScheme::IOBES).is_ok());

    assert!(validate_sequence(&s(&["B-PER", "I-PER", "O"]), TagScheme::IOB2).is_ok());
    let e = validate_sequence(&s(&["O", "I-PER"]), TagScheme::IOB2).unwrap_err();
    assert!(e.to_string().contains("position 1"), "{e}");
    assert!(validate_sequence(&s(&["B-PER", "I-LOC"]), TagScheme::IOB2).is_err());
    assert!(validate_sequence(&s(&["I-PER", "B-PER", "O", "I-LOC"]), TagScheme::IOB1).is_ok());
    assert!(validate_sequence(&s(&["O", "B-PER"]), TagScheme::IOB1).is_err());
    assert!(validate_sequence(&s(&["S-PER", "B-LOC", "I-LOC", "E-LOC"]), TagScheme::IOBES).is_ok());
    assert!(validate_sequence(&s(&["B-LOC", "O"]), TagScheme::IOBES).is_err());
    assert!(validate_sequence(&s(&["B-LOC", "E-PER"]), TagScheme::IOBES).is_err());
    assert!(validate_sequence(&s(&["S-LOC", "E-LOC"]), TagScheme::IOBES).is_err());
    let e = validate_sequence(&s(&["O", "B-LOC"]), TagScheme::IOBES).unwrap_err();
    assert!(e.to_string().contains("not closed"), "{e}");

    assert_eq!("bio".parse::<TagScheme>().unwrap(), TagScheme::IOB2);
    assert_eq!("IOBES".parse::<TagScheme>().unwrap(), TagScheme::IOBES);
    assert!("xml".parse::<TagScheme>().is_err());
}

#[test]
fn writer_formats_and_round_trip() {
    let sentences = vec![
        Sentence {
            line: 1,
            tokens: s(&["EU", "rejects"]),
            tags: s(&["B-ORG", "O"]),
            other_columns: vec![],
        },
        Sentence {
            line: 4,
            tokens: s(&["Peter"]),
            tags: s(&["B-PER"]),
            other_columns: vec![],
        },
    ];
    let pred = vec![s(&["B-ORG", "B-MISC"]), s(&["O"])];
    let mut out = Vec::new();
    write_conll(&mut out, &sentences, Some(&pred)).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "EU B-ORG B-ORG\nrejects O B-MISC\n\nPeter B-PER O\n"
    );

    let unlabelled: Vec<Sentence> = sentences
        .iter()
        .map(|x| Sentence {
            tags: vec![],
            ..x.clone()
        })
        .collect();
    let mut out = Vec::new();
    write_conll(&mut out, &unlabelled, Some(&pred)).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "EU B-ORG\nrejects B-MISC\n\nPeter O\n"
    );

    let mut out = Vec::new();
    let short = vec![s(&["O"]), s(&["O"])];
    let e = write_conll(&mut out, &sentences, Some(&short)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "sentence 1 (line 1): 2 tokens but 1 predicted tags"
    );
    assert!(write_conll(&mut Vec::new(), &sentences, Some(&pred[..1])).is_err());

    // Gold-only output reads back to the same sentences (lines shift by the blank line).
    let dir = TempDir::new();
    let p = dir.path().join("out.txt");
    write_conll_file(&p, &sentences, None).unwrap();
    let back = read_conll(&p, &ConllOptions::default()).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].tokens, sentences[0].tokens);
    assert_eq!(back[1].tags, sentences[1].tags);
    assert_eq!(back[1].line, 4);
}
