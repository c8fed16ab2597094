//! Where fine-tuning starts, the same for every task: the checkpoint's weights (or, with
//! `from_scratch`, fresh ones), one classifier-dropout rule, and the shared
//! train/validation split.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::*;
use hone_core::model::Model;
use hone_core::tasks::classification::{ClassificationData, ClassificationRecipe};
use hone_core::tasks::ner::{encode_words, read_sentences, NerData, NerRecipe};
use hone_core::tokenization::TextTokenizer;
use hone_core::training::TrainingData;
use hone_data::conll::TagScheme;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-start-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const WORDS: &str = "bert.embeddings.word_embeddings.weight";

/// The word embeddings of a model, flattened.
fn words<N: ?Sized>(model: &Model<N>) -> Vec<f32> {
    let var = model.params.get(WORDS).unwrap();
    var.flatten_all().unwrap().to_vec1().unwrap()
}

/// The checkpoint's own word embeddings.
fn checkpoint_words() -> Vec<f32> {
    let tensors =
        candle_core::safetensors::load(minilm_dir().join("model.safetensors"), &Device::Cpu)
            .unwrap();
    let t = tensors
        .get(WORDS)
        .or_else(|| tensors.get("embeddings.word_embeddings.weight"))
        .unwrap();
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// The first `n` sentences of the CoNLL-2003 training file.
fn conll_head(n: usize, dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(shared_dir().join("data/conll2003/train.txt")).unwrap();
    let head: Vec<&str> = text.split("\n\n").take(n).collect();
    let path = dir.join("train.txt");
    std::fs::write(&path, head.join("\n\n") + "\n").unwrap();
    path
}

#[test]
fn both_tasks_start_from_the_checkpoint_or_from_scratch() {
    let want = checkpoint_words();
    let dir = temp_dir("scratch");

    let mut clf = ClassificationRecipe::default();
    clf.model.model_name_or_path = minilm_dir();
    clf.data.train_file = shared_dir().join("data/sst2/validation.tsv");
    clf.data.text_column_names = vec!["sentence".into()];
    clf.data.max_train_samples = Some(40);
    let (model, _) = ClassificationData::prepare(&clf, &Device::Cpu).unwrap();
    assert_eq!(
        words(&model),
        want,
        "fine-tuning starts from the checkpoint"
    );
    clf.model.from_scratch = true;
    let (model, _) = ClassificationData::prepare(&clf, &Device::Cpu).unwrap();
    assert_ne!(words(&model), want, "from_scratch draws fresh weights");

    let mut ner = NerRecipe::default();
    ner.model.model_name_or_path = minilm_dir();
    ner.data.train_file = conll_head(40, &dir);
    let (model, _) = NerData::prepare(&ner, &Device::Cpu).unwrap();
    assert_eq!(words(&model), want);
    ner.model.from_scratch = true;
    let (scratch, _) = NerData::prepare(&ner, &Device::Cpu).unwrap();
    let fresh = words(&scratch);
    assert_ne!(fresh, want, "NER honours from_scratch");
    // Fresh weights are N(0, initializer_range = 0.02).
    let rms = (fresh.iter().map(|x| x * x).sum::<f32>() / fresh.len() as f32).sqrt();
    assert!((rms - 0.02).abs() < 1e-3, "rms {rms}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn classifier_dropout_and_the_validation_split_follow_one_rule() {
    let dir = temp_dir("rules");
    let mut ner = NerRecipe::default();
    ner.model.model_name_or_path = minilm_dir();
    ner.data.train_file = conll_head(200, &dir);
    ner.data.validation_split = 0.2;
    ner.model.classifier_dropout = Some(0.3);
    let (model, data) = NerData::prepare(&ner, &Device::Cpu).unwrap();
    // The recipe's dropout is saved in config.json as Hugging Face names it.
    model.save(&dir.join("out")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["classifier_dropout"], 0.3);
    // 200 sentences, 20% for validation: the shared split's 40, the rest trains (a
    // sentence is one window here).
    let (train, valid) =
        hone_data::train_validation_split((0..200).collect::<Vec<_>>(), 0.2, ner.training.seed)
            .unwrap();
    assert_eq!((train.len(), valid.len()), (160, 40));
    assert_eq!(data.num_train_examples(), 160);
    // ... and exactly its sentences: their lengths in pieces, [CLS] and [SEP] included.
    let sentences = read_sentences(&ner.data.train_file, None, TagScheme::IOB2).unwrap();
    let tok = TextTokenizer::from_dir(&minilm_dir()).unwrap();
    let pieces = |i: usize| encode_words(&tok, &sentences[i].tokens).unwrap().ids.len() + 2;
    let mut want: Vec<usize> = train.iter().map(|&i| pieces(i)).collect();
    let mut got: Vec<usize> = (0..160).map(|i| data.train_example_length(i)).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // GPT-2's sequence classifier has no dropout to set: said, not ignored.
    let mut clf = ClassificationRecipe::default();
    clf.model.model_name_or_path = fixture("gpt2-seqcls");
    clf.model.classifier_dropout = Some(0.3);
    clf.data.train_file = shared_dir().join("data/sst2/validation.tsv");
    clf.data.text_column_names = vec!["sentence".into()];
    clf.data.max_train_samples = Some(40);
    let err = match ClassificationData::prepare(&clf, &Device::Cpu) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("classifier_dropout on GPT-2 must be refused"),
    };
    assert!(
        err.contains("classifier_dropout") && err.contains("score"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
