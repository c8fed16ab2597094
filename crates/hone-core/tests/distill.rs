//! Distillation's student initialisation: a student made of teacher layers [0, 2, 4] holds
//! exactly those layers' tensors under its own numbers and loads as a 3-layer model;
//! keeping every layer gives the teacher back, output for output.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use hone_core::model::surgery::keep_layers;
use hone_core::model::{Encoder, Model};

#[test]
fn a_student_of_layers_0_2_4_holds_those_layers() -> anyhow::Result<()> {
    let teacher = minilm_dir();
    let out = std::env::temp_dir().join(format!("hone-student-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    keep_layers(&teacher, &[0, 2, 4], &out)?;
    let t: HashMap<String, Tensor> =
        candle_core::safetensors::load(teacher.join("model.safetensors"), &Device::Cpu)?;
    let s: HashMap<String, Tensor> =
        candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu)?;
    // all-MiniLM-L6-v2 names its tensors without `bert.`; 16 per layer: three layers fewer.
    let per_layer = t
        .keys()
        .filter(|k| k.starts_with("encoder.layer.0."))
        .count();
    assert_eq!(per_layer, 16);
    assert_eq!(s.len(), t.len() - 3 * per_layer);
    for (i, j) in [(0, 0), (1, 2), (2, 4)] {
        for (name, tensor) in &t {
            if let Some(rest) = name.strip_prefix(&format!("encoder.layer.{j}.")) {
                let mine = &s[&format!("encoder.layer.{i}.{rest}")];
                assert_eq!(
                    mine.flatten_all()?.to_vec1::<f32>()?,
                    tensor.flatten_all()?.to_vec1::<f32>()?,
                    "student layer {i} is teacher layer {j}: {rest}"
                );
            }
        }
    }
    assert!(s.keys().all(|k| !k.starts_with("encoder.layer.3.")));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json"))?)?;
    assert_eq!(config["num_hidden_layers"], 3);
    assert!(out.join("tokenizer.json").is_file());

    // It loads as a 3-layer model. Keeping every layer gives the teacher back exactly, and
    // another choice of layers another encoder.
    let student = Model::load(&out, &Device::Cpu)?.into_kind::<dyn Encoder>()?;
    assert_eq!(student.config.arch.num_layers(), 3);
    let ids = Tensor::new(&[[101u32, 7592, 2088, 102]], &Device::Cpu)?;
    let (types, mask) = (ids.zeros_like()?, ids.ones_like()?);
    let encode = |dir: &std::path::Path| -> anyhow::Result<Vec<f32>> {
        let m = Model::load(dir, &Device::Cpu)?.into_kind::<dyn Encoder>()?;
        Ok(m.net
            .encode(&ids, &types, &mask)?
            .sequence
            .flatten_all()?
            .to_vec1::<f32>()?)
    };
    let whole = out.with_extension("whole");
    keep_layers(&teacher, &[0, 1, 2, 3, 4, 5], &whole)?;
    assert_eq!(encode(&whole)?, encode(&teacher)?);
    let other = out.with_extension("other");
    keep_layers(&teacher, &[1, 3, 5], &other)?;
    assert!(max_abs_diff(&encode(&out)?, &encode(&other)?) > 1e-3);
    let err = keep_layers(&teacher, &[0, 6], &other.with_extension("bad")).unwrap_err();
    assert!(err.to_string().contains("layer 6"), "{err}");
    for dir in [&out, &whole, &other] {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

/// The BERT encoder records its embeddings' output and each layer's (the last is the
/// encoder's output), and each layer's attention probabilities when asked.
#[test]
fn the_encoder_records_hidden_states_and_attentions() -> anyhow::Result<()> {
    use hone_core::model::taps;
    let m = Model::load(&minilm_dir(), &Device::Cpu)?.into_kind::<dyn Encoder>()?;
    let ids = Tensor::new(
        &[[101u32, 7592, 2088, 102], [101, 7592, 102, 0]],
        &Device::Cpu,
    )?;
    let mask = Tensor::new(&[[1u32, 1, 1, 1], [1, 1, 1, 0]], &Device::Cpu)?;
    let types = ids.zeros_like()?;
    let (out, rec) = taps::capture(true, || Ok(m.net.encode(&ids, &types, &mask)?))?;
    assert_eq!(rec.hidden_states.len(), 7);
    assert_eq!(rec.attentions.len(), 6);
    assert_eq!(rec.attentions[0].dims(), &[2, 12, 4, 4]);
    let last = rec.hidden_states[6].flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(last, out.sequence.flatten_all()?.to_vec1::<f32>()?);
    // The padded key gets no attention; every row sums to 1.
    let p = &rec.attentions[3];
    let pad = p
        .narrow(0, 1, 1)?
        .narrow(3, 3, 1)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert!(pad < 1e-12, "{pad}");
    let sums = p.sum(3)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    // Without asking, no attention probabilities (and no extra work).
    let (_, rec) = taps::capture(false, || Ok(m.net.encode(&ids, &types, &mask)?))?;
    assert_eq!((rec.hidden_states.len(), rec.attentions.len()), (7, 0));
    Ok(())
}

/// Distillation's loss on SST-2 rows: a teacher and a student of its layers [0, 2, 4],
/// dropout off. The student's embeddings and first layer are the teacher's, so pairing
/// hidden states [0, 0] and [1, 1] or attention maps [0, 0] adds exactly nothing; pairing
/// [2, 3] (teacher layer 2 fed layer 0's output, against layers 0-2) or attention [1, 2]
/// adds a positive term, scaled by its weight.
#[test]
fn hidden_state_and_attention_terms_vanish_only_where_student_and_teacher_agree(
) -> anyhow::Result<()> {
    use hone_core::tasks::classification::ClassificationData;
    use hone_core::tasks::distill::{DistillArgs, Distillation};
    use hone_core::tasks::FinetuneRecipe;
    use hone_core::training::TrainingData;

    let tmp = tempdir("distill-terms");
    // A teacher: MiniLM with a fresh classifier for SST-2's labels, dropout off.
    let base = tmp.join("base");
    std::fs::create_dir_all(&base)?;
    for e in std::fs::read_dir(minilm_dir())? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), base.join(e.file_name()))?;
        }
    }
    let cfg_path = base.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)?;
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&cfg_path, cfg.to_string())?;
    let data_dir = shared_dir().join("data/sst2");
    let recipe_for = |model: &std::path::Path| -> anyhow::Result<_> {
        let sets = [
            format!("model.model_name_or_path={model:?}"),
            "model.classifier_dropout=0.0".into(),
            format!("data.train_file={:?}", data_dir.join("train.tsv")),
            format!("data.validation_file={:?}", data_dir.join("validation.tsv")),
            "data.max_train_samples=8".into(),
            "data.max_eval_samples=4".into(),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        match FinetuneRecipe::load(&root.join("examples/sst2.toml"), &sets)? {
            FinetuneRecipe::TextClassification(r) => Ok(r),
            _ => unreachable!(),
        }
    };
    let (teacher, _) = ClassificationData::prepare(&recipe_for(&base)?, &Device::Cpu)?;
    let teacher_dir = tmp.join("teacher");
    teacher.save(&teacher_dir)?;
    hone_core::tokenization::copy_tokenizer_files(&base, &teacher_dir)?;
    let student_dir = tmp.join("student");
    keep_layers(&teacher_dir, &[0, 2, 4], &student_dir)?;
    let student_recipe = recipe_for(&student_dir)?;
    let (student, _) = ClassificationData::prepare(&student_recipe, &Device::Cpu)?;

    let indices: Vec<usize> = (0..8).collect();
    let loss_with = |args: DistillArgs| -> anyhow::Result<f32> {
        let (_, data) = ClassificationData::prepare(&student_recipe, &Device::Cpu)?;
        let d = Distillation::new(data, &args, &Device::Cpu)?;
        Ok(d.training_loss(&*student.net, &indices)?
            .to_scalar::<f32>()?)
    };
    let plain = DistillArgs {
        teacher: teacher_dir.clone(),
        alpha: 0.5,
        temperature: 2.0,
        ..DistillArgs::default()
    };
    let base_loss = loss_with(plain.clone())?;
    let hidden = |pairs: Vec<[usize; 2]>| DistillArgs {
        hidden_weight: 3.0,
        hidden_layers: pairs,
        ..plain.clone()
    };
    let attention = |pairs: Vec<[usize; 2]>| DistillArgs {
        attention_weight: 5.0,
        attention_layers: pairs,
        ..plain.clone()
    };
    assert_eq!(loss_with(hidden(vec![[0, 0], [1, 1]]))?, base_loss);
    assert_eq!(loss_with(attention(vec![[0, 0]]))?, base_loss);
    let h = loss_with(hidden(vec![[2, 3]]))? - base_loss;
    assert!(h > 1e-4, "hidden term {h}");
    // Averaged over pairs: adding a pair that agrees halves the term.
    let h2 = loss_with(hidden(vec![[2, 3], [1, 1]]))? - base_loss;
    assert!((h2 - h / 2.0).abs() < 1e-4 * h.max(1.0), "{h2} vs {h} / 2");
    let a = loss_with(attention(vec![[1, 2]]))? - base_loss;
    assert!(a > 1e-6, "attention term {a}");
    // A pair outside the model is named.
    let err = loss_with(hidden(vec![[4, 4]])).unwrap_err().to_string();
    assert!(
        err.contains("hidden_layers") && err.contains("student has 4"),
        "{err}"
    );
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
