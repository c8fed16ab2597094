use super::*;

fn sent(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn chunk(tag: &str, start: usize, end: usize) -> Chunk {
    Chunk {
        tag: tag.into(),
        start,
        end,
    }
}

#[test]
fn default_chunker_docstring_example() {
    // seqeval docstring: get_entities(['B-PER', 'I-PER', 'O', 'B-LOC']) == [('PER', 0, 1), ('LOC', 3, 3)]
    assert_eq!(
        get_entities(&sent("B-PER I-PER O B-LOC"), false),
        vec![chunk("PER", 0, 1), chunk("LOC", 3, 3)]
    );
}

#[test]
fn default_i_after_o_starts_entity_and_type_change_splits() {
    assert_eq!(
        get_entities(&sent("O I-PER I-PER I-LOC"), false),
        vec![chunk("PER", 1, 2), chunk("LOC", 3, 3)]
    );
    // B-PER B-PER: two single-token entities.
    assert_eq!(
        get_entities(&sent("B-PER B-PER"), false),
        vec![chunk("PER", 0, 0), chunk("PER", 1, 1)]
    );
    // Suffix-less tags: type '_'.
    assert_eq!(
        get_entities(&sent("B I O I"), false),
        vec![chunk("_", 0, 1), chunk("_", 3, 3)]
    );
    // Suffix style.
    assert_eq!(
        get_entities(&sent("PER-B PER-I O"), true),
        vec![chunk("PER", 0, 1)]
    );
    // IOBES tags in default mode.
    assert_eq!(
        get_entities(&sent("S-PER B-LOC E-LOC"), false),
        vec![chunk("PER", 0, 0), chunk("LOC", 1, 2)]
    );
}

#[test]
fn strict_iob2_rejects_i_after_o() {
    let e = strict_entities(&sent("O I-PER I-PER B-LOC"), Scheme::IOB2, false, 0).unwrap();
    assert_eq!(
        e,
        vec![Entity {
            sent_id: 0,
            tag: "LOC".into(),
            start: 3,
            end: 4
        }]
    );
    // B-PER I-LOC: the B-PER is complete (B->I with a different tag ends it); I-LOC is no entity.
    let e = strict_entities(&sent("B-PER I-LOC"), Scheme::IOB2, false, 0).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].start, e[0].end), (0, 1));
    assert!(strict_entities(&sent("B-PER E-PER"), Scheme::IOB2, false, 0).is_err());
}

#[test]
fn strict_iobes() {
    let tags = sent("B-PER I-PER E-PER S-LOC O B-ORG I-ORG O I-MISC E-MISC");
    let e = strict_entities(&tags, Scheme::IOBES, false, 2).unwrap();
    let got: Vec<(&str, usize, usize)> =
        e.iter().map(|e| (e.tag.as_str(), e.start, e.end)).collect();
    // B-ORG I-ORG followed by O never ends (no E-): dropped; I-MISC E-MISC lacks B-: dropped.
    assert_eq!(got, vec![("PER", 0, 3), ("LOC", 3, 4)]);
    assert!(e.iter().all(|e| e.sent_id == 2));
}

#[test]
fn strict_bilou_and_iob1() {
    let e = strict_entities(&sent("B-PER L-PER U-LOC B-ORG"), Scheme::BILOU, false, 0).unwrap();
    let got: Vec<(&str, usize, usize)> =
        e.iter().map(|e| (e.tag.as_str(), e.start, e.end)).collect();
    assert_eq!(got, vec![("PER", 0, 2), ("LOC", 2, 3)]);
    // IOB1: I- starts entities, B- only separates same-type neighbours.
    let e = strict_entities(&sent("I-PER I-PER B-PER O I-LOC"), Scheme::IOB1, false, 0).unwrap();
    let got: Vec<(&str, usize, usize)> =
        e.iter().map(|e| (e.tag.as_str(), e.start, e.end)).collect();
    assert_eq!(got, vec![("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]);
}

#[test]
fn b_per_i_per_vs_b_per_b_per() {
    let gold = vec![sent("B-PER I-PER")];
    let pred = vec![sent("B-PER B-PER")];
    for mode in [Mode::Default, Mode::Strict(Scheme::IOB2)] {
        let r = SeqevalReport::compute(&gold, &pred, mode).unwrap();
        let m = r.get("PER").unwrap();
        // Gold: one 2-token entity; pred: two 1-token entities; no match.
        assert_eq!((m.precision, m.recall, m.f1, m.support), (0.0, 0.0, 0.0, 1));
    }
}

#[test]
fn i_start_differs_between_modes() {
    let gold = vec![sent("B-PER I-PER O")];
    let pred = vec![sent("I-PER I-PER O")];
    assert_eq!(f1_score(&gold, &pred, Mode::Default).unwrap(), 1.0);
    assert_eq!(
        f1_score(&gold, &pred, Mode::Strict(Scheme::IOB2)).unwrap(),
        0.0
    );
    let r = SeqevalReport::compute(&gold, &pred, Mode::Strict(Scheme::IOB2)).unwrap();
    assert_eq!(r.micro_avg.recall, 0.0);
}

#[test]
fn docstring_report_and_text() {
    // seqeval docstring example of classification_report.
    let gold = vec![sent("O O O B-MISC I-MISC I-MISC O"), sent("B-PER I-PER O")];
    let pred = vec![
        sent("O O B-MISC I-MISC I-MISC I-MISC O"),
        sent("B-PER I-PER O"),
    ];
    let r = SeqevalReport::compute(&gold, &pred, Mode::Default).unwrap();
    let expected = [
        "              precision    recall  f1-score   support",
        "",
        "        MISC       0.00      0.00      0.00         1",
        "         PER       1.00      1.00      1.00         1",
        "",
        "   micro avg       0.50      0.50      0.50         2",
        "   macro avg       0.50      0.50      0.50         2",
        "weighted avg       0.50      0.50      0.50         2",
        "",
    ]
    .join("\n");
    assert_eq!(r.to_text(2), expected);
    assert_eq!(accuracy_score(&gold, &pred).unwrap(), 0.8);
    assert_eq!(precision_score(&gold, &pred, Mode::Default).unwrap(), 0.5);
    assert_eq!(recall_score(&gold, &pred, Mode::Default).unwrap(), 0.5);
}

#[test]
fn predicted_only_type_is_reported_and_zero_division() {
    let gold = vec![sent("B-PER O")];
    let pred = vec![sent("B-PER B-LOC")];
    let r = SeqevalReport::compute(&gold, &pred, Mode::Default).unwrap();
    let loc = r.get("LOC").unwrap();
    assert_eq!((loc.precision, loc.recall, loc.support), (0.0, 0.0, 0));
    // Macro over {LOC, PER}.
    assert_eq!(r.macro_avg.precision, 0.5);
    let opts = SeqevalOptions {
        zero_division: ZeroDivision::One,
        ..Default::default()
    };
    let r = SeqevalReport::compute_with(&gold, &pred, &opts).unwrap();
    assert_eq!(r.get("LOC").unwrap().recall, 1.0);
    // No gold entities at all: seqeval's weighted fallback.
    let r = SeqevalReport::compute(&[sent("O")], &[sent("B-X")], Mode::Default).unwrap();
    assert_eq!(
        (
            r.weighted_avg.precision,
            r.weighted_avg.recall,
            r.weighted_avg.f1
        ),
        (0.0, 0.0, 0.0)
    );
}

#[test]
fn errors_and_auto_detect() {
    assert!(SeqevalReport::compute(&[sent("O O")], &[sent("O")], Mode::Default).is_err());
    assert!(matches!(
        SeqevalReport::compute(&[sent("X-PER")], &[sent("O")], Mode::Strict(Scheme::IOB2)),
        Err(MetricsError::InvalidTag { .. })
    ));
    assert_eq!(
        Scheme::auto_detect(&[sent("B-A I-A O")], false).unwrap(),
        Scheme::IOB2
    );
    assert_eq!(
        Scheme::auto_detect(&[sent("S-A B-A E-A")], false).unwrap(),
        Scheme::IOBES
    );
    assert_eq!(
        Scheme::auto_detect(&[sent("B-A L-A U-B O")], false).unwrap(),
        Scheme::BILOU
    );
    // seqeval's allowed prefix sets are explicit lists: {U, O} is in none of them.
    assert!(Scheme::auto_detect(&[sent("U-A O")], false).is_err());
    assert!(Scheme::auto_detect(&[sent("B-A E-A O")], false).is_ok());
    assert!(Scheme::auto_detect(&[sent("B-A L-A S-A")], false).is_err());
    assert_eq!("iobes".parse::<Scheme>().unwrap(), Scheme::IOBES);
}
