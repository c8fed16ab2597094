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
