//! `hone finetune` dispatches on the recipe's `task`; NER data errors surface with file and
//! line before the output directory is touched.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hone_core::recipe::load_recipe;
use hone_core::tasks::ner::NerRecipe;
use hone_core::tasks::FinetuneTask;

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn hone(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hone"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hone-ner-recipe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_conll2003_example_is_the_hf_recipe() {
    let r: NerRecipe = load_recipe(&repo().join("examples/conll2003.toml"), &[]).unwrap();
    assert_eq!(r.task, FinetuneTask::TokenClassification);
    assert!(r.data.train_file.ends_with("conll2003/train.txt"));
    assert!(r
        .data
        .validation_file
        .unwrap()
        .ends_with("conll2003/valid.txt"));
    assert!(!r.data.label_all_tokens);
    assert_eq!(r.data.max_seq_length, 128);
    let t = &r.training;
    assert_eq!((t.learning_rate, t.per_device_train_batch_size), (5e-5, 32));
    assert_eq!(
        (t.num_train_epochs, t.warmup_ratio, t.weight_decay),
        (3.0, 0.1, 0.01)
    );
    assert_eq!((t.metric_for_best_model.as_str(), t.seed), ("f1", 42));
    assert!(t.load_best_model_at_end);
}

fn finetune_error(recipe_text: &str, dir: &Path) -> String {
    let recipe = dir.join("recipe.toml");
    std::fs::write(&recipe, recipe_text).unwrap();
    let out = hone(&["finetune", "--config", recipe.to_str().unwrap()]);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_ner_data_fails_with_file_and_line_before_writing() {
    let dir = scratch("bad");
    let out_dir = dir.join("run");
    let valid = dir.join("valid.txt");
    std::fs::write(&valid, "Peter B-PER\nBlackburn I-PER\n").unwrap();
    let recipe = |train: &PathBuf| {
        format!(
            "task = \"token-classification\"\n[data]\ntrain_file = {:?}\nvalidation_file = {:?}\n[training]\noutput_dir = {:?}\nprogress = false\n",
            train, valid, out_dir
        )
    };
    let cases = [
        ("bad_tag.txt", "EU B-ORG\nrejects O\n\nPeter B_PER\n", 4),
        ("short.txt", "EU B-ORG\nrejects\n", 2),
        ("bad.jsonl", "{\"tokens\": [\"EU\"], \"tags\": [\"B-ORG\"]}\n{\"tokens\": [\"a\", \"b\"], \"tags\": [\"O\"]}\n", 2),
    ];
    for (name, text, line) in cases {
        let train = dir.join(name);
        std::fs::write(&train, text).unwrap();
        let err = finetune_error(&recipe(&train), &dir);
        let want = format!("{}:{line}", train.display());
        assert!(err.contains(&want), "{name}: {err:?} lacks {want:?}");
        assert!(
            !out_dir.exists(),
            "{name}: output directory written before the data check"
        );
    }
    // A validation tag the training data never had.
    let train = dir.join("train.txt");
    std::fs::write(&train, "EU B-ORG\nrejects O\n").unwrap();
    let err = finetune_error(&recipe(&train), &dir);
    assert!(err.contains(&format!("{}:1", valid.display())), "{err}");
    assert!(!out_dir.exists());
    // An unknown task is refused by name, with the tasks there are.
    let err = finetune_error("task = \"summarization\"\n", &dir);
    assert!(
        err.contains("summarization") && err.contains("`token-classification`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_misspelt_recipe_value_fails_before_reading_data_or_writing() {
    let dir = scratch("misspelt");
    let out_dir = dir.join("run");
    let recipe = format!(
        "[model]\nmodel_name_or_path = \"models/all-MiniLM-L6-v2\"\n[data]\ntrain_file = {:?}\n[training]\noutput_dir = {:?}\nlr_scheduler_type = \"cosin\"\n",
        repo().join("../shared/data/sst2/train.tsv"),
        out_dir
    );
    let err = finetune_error(&recipe, &dir);
    // One line: file, line, key, and the accepted values.
    assert_eq!(err.lines().count(), 1, "{err}");
    let at = format!(
        "error: {}:7: lr_scheduler_type:",
        dir.join("recipe.toml").display()
    );
    assert!(err.starts_with(&at), "{err:?} should start with {at:?}");
    assert!(err.contains("`cosin`") && err.contains("`cosine`"), "{err}");
    assert!(!out_dir.exists(), "nothing is written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn classification_recipes_still_dispatch_to_classification() {
    // No `task` key: text classification (its own [data] keys parse; the missing file is
    // reported by the classification reader).
    let out = hone(&[
        "finetune",
        "--config",
        "examples/sst2.toml",
        "--set",
        "data.train_file=/nonexistent/train.tsv",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent/train.tsv"), "{err}");
    // An explicit `task = "text-classification"` is accepted too.
    let dir = scratch("cls");
    let text = std::fs::read_to_string(repo().join("examples/sst2.toml")).unwrap();
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, format!("task = \"text-classification\"\n{text}")).unwrap();
    let out = hone(&[
        "finetune",
        "--config",
        recipe.to_str().unwrap(),
        "--set",
        "data.train_file=/nonexistent/train.tsv",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/train.tsv"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
