//! Word/piece alignment for NER: one labelled piece per word, overlapping windows for long
//! sentences merged back to one prediction per word, and entity offsets into the raw text.

mod common;

use candle_core::{DType, Device};
use common::*;
use hone_core::inference::ner::{
    group_entities, split_words, TextWord, TokenClassificationPipeline,
};
use hone_core::model::{Head, Model, ModelDir, TokenClassifier};
use hone_core::tasks::ner::{
    b_to_i_map, best_window, encode_words, softmax, windows, WindowedSentences, WordPrediction,
    IGNORE,
};
use hone_core::tokenization::{pad_ids, TextTokenizer};

fn labels() -> Vec<String> {
    [
        "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn tokenizer() -> TextTokenizer {
    TextTokenizer::from_dir(&minilm_dir()).unwrap()
}

/// MiniLM with a freshly initialised token-classification head (untrained, but a real
/// forward pass).
fn classifier(max_length: usize, stride: usize) -> TokenClassificationPipeline {
    let dir = ModelDir::open(&minilm_dir()).unwrap();
    let model = Model::<dyn TokenClassifier>::load_for(
        &dir,
        Head::TokenClassification { id2label: labels() },
        &Device::Cpu,
        7,
    )
    .unwrap();
    TokenClassificationPipeline::new(model, tokenizer(), max_length, stride)
}

#[test]
fn a_split_word_gets_exactly_one_labelled_piece() {
    let tok = tokenizer();
    let words = [
        "Blackburn",
        "unbelievably",
        "Schwarzenegger",
        "EU",
        "hone-toolkit",
        ".",
    ];
    let word_labels = [3usize, 8, 0, 2, 1, 8]; // B-PER O B-LOC B-ORG B-MISC O
    let pieces = encode_words(&tok, &words).unwrap();
    let count = |w: usize| pieces.word_of_piece.iter().filter(|&&x| x == w).count();
    assert!(
        (0..words.len()).filter(|&w| count(w) >= 2).count() >= 3,
        "the test needs words split into several pieces: {pieces:?}"
    );
    let ws = WindowedSentences::new(&tok, &[words.to_vec()], 128, 16).unwrap();
    assert_eq!(ws.windows.len(), 1);
    let ids = ws.input_ids(0);
    let first_only = ws.labels(0, &word_labels, None);
    assert_eq!(ids.len(), first_only.len());
    // [CLS] and [SEP] are ignored.
    assert_eq!(ids[0], tok.token_to_id("[CLS]").unwrap());
    assert_eq!(
        (first_only[0], *first_only.last().unwrap()),
        (IGNORE, IGNORE)
    );
    let body = &first_only[1..first_only.len() - 1];
    for w in 0..words.len() {
        let labelled: Vec<usize> = (0..body.len())
            .filter(|&p| pieces.word_of_piece[p] == w && body[p] != IGNORE)
            .collect();
        assert_eq!(labelled.len(), 1, "word {:?}", words[w]);
        assert_eq!(Some(labelled[0]), pieces.first_piece[w]);
        assert_eq!(body[labelled[0]], word_labels[w] as i64);
    }

    // label_all_tokens: every piece labelled, later pieces of a B-X word as I-X.
    let b_to_i = b_to_i_map(&labels());
    let all = ws.labels(0, &word_labels, Some(&b_to_i));
    let body = &all[1..all.len() - 1];
    for (p, &l) in body.iter().enumerate() {
        let w = pieces.word_of_piece[p];
        let want = if pieces.first_piece[w] == Some(p) {
            word_labels[w]
        } else {
            b_to_i[word_labels[w]]
        };
        assert_eq!(l, want as i64);
    }
    // B-LOC continues as I-LOC.
    assert_eq!(labels()[b_to_i[0]], "I-LOC");
}

#[test]
fn best_window_prefers_the_most_context() {
    let w = [(0, 10), (6, 16), (12, 20)];
    assert_eq!(best_window(8, &w), Some(1)); // margins 1 vs 2
    assert_eq!(best_window(2, &w), Some(0));
    assert_eq!(best_window(13, &w), Some(1)); // margins 2 vs 1
    assert_eq!(best_window(19, &w), Some(2));
    assert_eq!(best_window(20, &w), None);
}

fn long_sentence() -> Vec<String> {
    let vocab = [
        "The",
        "Commission",
        "of",
        "Blackburn",
        "unbelievably",
        "rejected",
        "Zürich",
        "'s",
        "counter-proposal",
        "on",
        "Thursday",
        ",",
        "said",
        "Peter",
        "Schwarzenegger",
        ".",
    ];
    (0..150)
        .map(|i| vocab[(i * 7 + i / 5) % vocab.len()].to_string())
        .collect()
}

#[test]
fn windows_cover_a_long_sentence_at_word_starts() {
    let tok = tokenizer();
    let words = long_sentence();
    let pieces = encode_words(&tok, &words).unwrap();
    let (budget, stride) = (22, 6);
    let ws = windows(&pieces, budget, stride);
    assert!(
        ws.len() > 5,
        "{} pieces in {} windows",
        pieces.ids.len(),
        ws.len()
    );
    assert_eq!(ws[0].0, 0);
    assert_eq!(ws.last().unwrap().1, pieces.ids.len());
    let starts_word = |p: usize| p == 0 || pieces.word_of_piece[p] != pieces.word_of_piece[p - 1];
    for pair in ws.windows(2) {
        let ((s0, e0), (s1, e1)) = (pair[0], pair[1]);
        assert!(e0 - s0 <= budget && e1 - s1 <= budget);
        assert!(s1 > s0 && s1 < e0, "consecutive windows overlap: {pair:?}");
        assert!(
            starts_word(s1) && starts_word(e0),
            "cut inside a word: {pair:?}"
        );
    }
}

#[test]
fn a_sentence_longer_than_the_window_gets_a_prediction_for_every_word() {
    let (max_length, stride) = (24, 6);
    let clf = classifier(max_length, stride);
    let words = long_sentence();
    let short = vec![
        "Peter".to_string(),
        "Blackburn".to_string(),
        ".".to_string(),
    ];
    let sentences = vec![words.clone(), short];
    let preds = clf.predict_words(&sentences, 8).unwrap();
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0].len(), words.len());
    assert!(
        preds.iter().flatten().all(Option::is_some),
        "a word lacks a prediction"
    );
    let tags = clf.predict_tags(&sentences, 8).unwrap();
    assert_eq!(tags[0].len(), words.len());

    // Each word's prediction is that of its first piece in the window where the piece is
    // farthest from the edges: recompute it by running that window alone.
    let ws = WindowedSentences::new(&clf.tokenizer, &sentences, max_length, stride).unwrap();
    let head = &clf.model.net;
    let mine: Vec<usize> = (0..ws.windows.len())
        .filter(|&w| ws.windows[w].0 == 0)
        .collect();
    let ranges: Vec<(usize, usize)> = mine
        .iter()
        .map(|&w| (ws.windows[w].1, ws.windows[w].2))
        .collect();
    assert!(ranges.len() > 3);
    // The length sharded evaluation sizes its logits by, without building the ids.
    for w in 0..ws.windows.len() {
        assert_eq!(ws.window_len(w), ws.input_ids(w).len(), "window {w}");
    }
    let mut checked = 0;
    for (w, pred) in preds[0].iter().enumerate() {
        let p = ws.pieces[0].first_piece[w].unwrap();
        let inside: Vec<usize> = (0..ranges.len())
            .filter(|&k| ranges[k].0 <= p && p < ranges[k].1)
            .collect();
        if inside.len() < 2 {
            continue;
        }
        let margin = |k: usize| (p - ranges[k].0).min(ranges[k].1 - 1 - p);
        let best = *inside
            .iter()
            .max_by_key(|&&k| (margin(k), std::cmp::Reverse(k)))
            .unwrap();
        let ids = ws.input_ids(mine[best]);
        let b = pad_ids(&[ids.as_slice()], &[], clf.tokenizer.pad_id(), &Device::Cpu).unwrap();
        let logits = head
            .forward(&b.input_ids, &b.token_type_ids, &b.attention_mask)
            .unwrap();
        let rows = logits
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        let probs = softmax(&rows[0][1 + p - ranges[best].0]);
        let pred = pred.unwrap();
        assert!((probs[pred.label] - pred.score).abs() < 1e-4, "word {w}");
        assert!(
            probs.iter().all(|&x| x <= pred.score + 1e-6),
            "word {w}: not the argmax"
        );
        checked += 1;
    }
    assert!(checked > 5, "too few words in overlaps: {checked}");
}

#[test]
fn split_words_keeps_character_offsets() {
    let tok = tokenizer();
    let text = "Ça  marche, Zürich's café!";
    let words = split_words(&tok, text).unwrap();
    let got: Vec<(&str, usize, usize)> = words
        .iter()
        .map(|w| (w.text.as_str(), w.start, w.end))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Ça", 0, 2),
            ("marche", 4, 10),
            (",", 10, 11),
            ("Zürich", 12, 18),
            ("'", 18, 19),
            ("s", 19, 20),
            ("café", 21, 25),
            ("!", 25, 26),
        ]
    );
}

#[test]
fn words_group_into_entities_like_the_hf_pipeline() {
    let text = "Peter Blackburn met EU and UN officials in New York";
    let tok = tokenizer();
    let words = split_words(&tok, text).unwrap();
    let l = labels();
    let id = |t: &str| l.iter().position(|x| x == t).unwrap();
    // B-PER I-PER O B-ORG O B-ORG O O I-LOC I-LOC
    let tags = [
        "B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "O", "O", "I-LOC", "I-LOC",
    ];
    let scores = [0.9, 0.7, 0.99, 0.8, 0.99, 0.6, 0.9, 0.9, 0.5, 0.7];
    let preds: Vec<Option<WordPrediction>> = tags
        .iter()
        .zip(scores)
        .map(|(t, s)| {
            Some(WordPrediction {
                label: id(t),
                score: s,
            })
        })
        .collect();
    let ents = group_entities(text, &words, &preds, &l);
    let got: Vec<(&str, &str, usize, usize)> = ents
        .iter()
        .map(|e| (e.entity_group.as_str(), e.word.as_str(), e.start, e.end))
        .collect();
    assert_eq!(
        got,
        vec![
            ("PER", "Peter Blackburn", 0, 15),
            ("ORG", "EU", 20, 22),
            ("ORG", "UN", 27, 29),
            // I- after O starts an entity (HF's get_tag reads it as a continuation of
            // nothing).
            ("LOC", "New York", 43, 51),
        ]
    );
    assert!((ents[0].score - 0.8).abs() < 1e-6);
    assert!((ents[3].score - 0.6).abs() < 1e-6);
    // B- splits adjacent same-type words.
    let two = [
        Some(WordPrediction {
            label: id("B-PER"),
            score: 1.0,
        }),
        Some(WordPrediction {
            label: id("B-PER"),
            score: 1.0,
        }),
    ];
    let w2 = vec![
        TextWord {
            text: "Peter".into(),
            start: 0,
            end: 5,
        },
        TextWord {
            text: "Paul".into(),
            start: 6,
            end: 10,
        },
    ];
    assert_eq!(group_entities("Peter Paul", &w2, &two, &l).len(), 2);
}

#[test]
fn predicted_entity_offsets_slice_the_original_text() {
    let clf = classifier(16, 4);
    let texts = vec![
        "Ça  marche: Angela Merkel met Emmanuel Macron in Zürich on Thursday.".to_string(),
        "Der Bundesliga-Verein 1. FC Köln spielte gegen Borussia Mönchengladbach — 2:1!"
            .to_string(),
        "東京 and Café René, said Schwarzenegger's spokesman 🙂 in Washington D.C.".to_string(),
    ];
    let out = clf.predict_entities(&texts, 4).unwrap();
    let mut n = 0;
    for (t, r) in texts.iter().zip(&out) {
        assert_eq!(&r.text, t);
        let chars: Vec<char> = t.chars().collect();
        let words = split_words(&clf.tokenizer, t).unwrap();
        for e in &r.entities {
            let slice: String = chars[e.start..e.end].iter().collect();
            assert_eq!(slice, e.word);
            assert!(words.iter().any(|w| w.start == e.start));
            assert!(words.iter().any(|w| w.end == e.end));
            assert!(e.score > 0.0 && e.score <= 1.0);
            n += 1;
        }
    }
    // An untrained head tags most words as some entity: the check above did run.
    assert!(n > 5, "only {n} entities");
}
