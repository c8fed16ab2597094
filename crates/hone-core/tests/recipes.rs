//! Recipes: every one in `examples/` parses as the recipe of the command that runs it, so
//! a misspelt or renamed key fails here, not in a user's first run; and a misspelt key or
//! value is one line naming the file, the line, the key and what is accepted.

use std::path::PathBuf;

use hone_core::model::ProblemType;
use hone_core::recipe::load_recipe;
use hone_core::runtime::DeviceSpec;
use hone_core::sweep::{overrides_of, SweepConfig};
use hone_core::tasks::classification::ClassWeights;
use hone_core::tasks::pretrain::{PositionInit, PretrainRecipe};
use hone_core::tasks::FinetuneRecipe;
use hone_core::training::schedule::ScheduleKind;

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_recipe_parses() {
    let files = examples();
    assert!(files.len() >= 7, "{files:?}");
    let mut kinds = Vec::new();
    for path in &files {
        let table: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let kind = if table.contains_key("objective") {
            load_recipe::<PretrainRecipe>(path, &[]).map(|_| "pretrain")
        } else if table.contains_key("parameters") {
            // A sweep file: it parses, and its first trial's recipe does too.
            SweepConfig::load(path).and_then(|sweep| {
                let root = path.parent().unwrap().parent().unwrap();
                let mut sets = sweep.overrides.clone();
                sets.extend(overrides_of(&sweep.trials()[0]));
                FinetuneRecipe::load(&root.join(&sweep.recipe), &sets).map(|_| "sweep")
            })
        } else {
            FinetuneRecipe::load(path, &[]).map(|r| match r {
                FinetuneRecipe::TokenClassification(_) => "ner",
                FinetuneRecipe::TextClassification(_) => "classification",
                FinetuneRecipe::Translation(_) => "translation",
            })
        };
        match kind {
            Ok(k) => kinds.push(k),
            Err(e) => panic!("{}: {e:#}", path.display()),
        }
    }
    for k in ["pretrain", "ner", "classification", "translation", "sweep"] {
        assert!(kinds.contains(&k), "no {k} recipe among {files:?}");
    }
}

#[test]
fn domain_adaptive_recipe_starts_from_sinusoidal_positions() {
    let path = examples()
        .into_iter()
        .find(|p| p.ends_with("bert-mlm-sst2.toml"))
        .unwrap();
    let recipe: PretrainRecipe = load_recipe(&path, &[]).unwrap();
    assert_eq!(recipe.model.position_init, PositionInit::Sinusoidal);
}

/// A recipe file in a temp dir, with `line` added to its `[training]` or `[data]` section.
fn recipe_with(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hone-recipe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const BASE: &str = "[model]\nmodel_name_or_path = \"models/all-MiniLM-L6-v2\"\n\n[data]\ntrain_file = \"train.tsv\"\n";

#[test]
fn a_misspelt_value_names_file_line_key_and_the_accepted_values() {
    let cases = [
        (
            "[training]\nlearning_rate = 1e-4\nlr_scheduler_type = \"cosin\"\n",
            8,
            "lr_scheduler_type",
            "`cosine`",
        ),
        ("[training]\ndevice = \"gpu\"\n", 7, "device", "cuda:N"),
        ("[training]\noptim = \"adam\"\n", 7, "optim", "`sgd`"),
        (
            "[training]\neval_strategy = \"epochs\"\n",
            7,
            "eval_strategy",
            "`epoch`",
        ),
        (
            "[training]\nprecision = \"fp8\"\n",
            7,
            "precision",
            "`bf16`",
        ),
        (
            "[training]\nlearning_rat = 1e-4\n",
            7,
            "learning_rat",
            "learning_rate",
        ),
    ];
    for (i, (section, line, key, accepted)) in cases.iter().enumerate() {
        let path = recipe_with(&format!("bad{i}"), &format!("{BASE}{section}"));
        let err = FinetuneRecipe::load(&path, &[]).unwrap_err().to_string();
        let at = format!("{}:{line}: {key}:", path.display());
        assert!(err.starts_with(&at), "{err:?} should start with {at:?}");
        assert!(err.contains(accepted), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // In [data]: the problem type, the class weights.
    let path = recipe_with("data", &format!("{BASE}problem_type = \"multi_label\"\n"));
    let err = FinetuneRecipe::load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains(":6: problem_type:") && err.contains("multi_label_classification"),
        "{err}"
    );
    let path = recipe_with("weights", &format!("{BASE}class_weights = \"even\"\n"));
    let err = FinetuneRecipe::load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains(":6: class_weights:") && err.contains("\"balanced\" or a list"),
        "{err}"
    );
    // The task itself, and a token-classification value.
    let path = recipe_with("task", &format!("task = \"ner\"\n{BASE}"));
    let err = FinetuneRecipe::load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains(":1: task:") && err.contains("`token-classification`"),
        "{err}"
    );
    let path = recipe_with(
        "scheme",
        &format!("task = \"token-classification\"\n{BASE}tag_scheme = \"IOB3\"\n"),
    );
    let err = FinetuneRecipe::load(&path, &[]).unwrap_err().to_string();
    assert!(
        err.contains(":7: tag_scheme:") && err.contains("IOBES"),
        "{err}"
    );
    // An override that is wrong says so.
    let path = recipe_with("override", BASE);
    let err = FinetuneRecipe::load(&path, &["lr_scheduler_type=cosin".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--set lr_scheduler_type=cosin") && err.contains("`cosine`"),
        "{err}"
    );
    // Typed values that are right parse.
    let path = recipe_with(
        "good",
        &format!(
            "{BASE}class_weights = [1, 2.5]\nproblem_type = \"regression\"\n[training]\ndevice = \"cuda:1\"\nlr_scheduler_type = \"cosine\"\n"
        ),
    );
    let FinetuneRecipe::TextClassification(r) = FinetuneRecipe::load(&path, &[]).unwrap() else {
        panic!("a text-classification recipe")
    };
    assert_eq!(
        r.data.class_weights,
        Some(ClassWeights::Explicit(vec![1.0, 2.5]))
    );
    assert_eq!(r.data.problem_type, ProblemType::Regression);
    assert_eq!(r.training.device, DeviceSpec::Cuda(1));
    assert_eq!(r.training.lr_scheduler_type, ScheduleKind::Cosine);
}
