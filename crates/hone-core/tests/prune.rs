//! Structured pruning (issue 21) against the model: removing heads and feed-forward neurons
//! whose contribution is zero leaves the encoder's output unchanged; removing nothing leaves
//! it bit for bit; the saved config names the pruned heads as Transformers does.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::*;
use hone_core::model::surgery::{prune_dir, PrunePlan};
use hone_core::model::{Encoder, Model};

fn encode(dir: &Path) -> Vec<f32> {
    let m = Model::load(dir, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn Encoder>()
        .unwrap();
    let ids = Tensor::new(
        &[
            [101u32, 7592, 2088, 2003, 2307, 102],
            [101, 2204, 3185, 102, 0, 0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
    let out = m
        .net
        .encode(&ids, &ids.zeros_like().unwrap(), &mask)
        .unwrap();
    // The padded positions are not compared (their values are arbitrary).
    out.sequence
        .narrow(1, 0, 4)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// all-MiniLM-L6-v2 with the output columns of some heads and neurons set to zero.
fn zeroed_minilm(dir: &Path, heads: &BTreeMap<usize, Vec<usize>>, neurons: &[usize]) -> PathBuf {
    let src = minilm_dir();
    let out = dir.join("zeroed");
    std::fs::create_dir_all(&out).unwrap();
    let mut t: HashMap<String, Tensor> =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let zero_columns = |t: &Tensor, cols: &[usize]| -> Tensor {
        let mut m = t.to_vec2::<f32>().unwrap();
        for row in m.iter_mut() {
            for &c in cols {
                row[c] = 0.0;
            }
        }
        Tensor::new(m, &Device::Cpu).unwrap()
    };
    for l in 0..6 {
        let name = format!("encoder.layer.{l}.attention.output.dense.weight");
        let cols: Vec<usize> = heads
            .get(&l)
            .into_iter()
            .flatten()
            .flat_map(|&h| h * 32..(h + 1) * 32)
            .collect();
        let z = zero_columns(&t[&name], &cols);
        t.insert(name, z);
        let name = format!("encoder.layer.{l}.output.dense.weight");
        let z = zero_columns(&t[&name], neurons);
        t.insert(name, z);
    }
    hone_core::io::safetensors_file::write(&out.join("model.safetensors"), &t, HashMap::new())
        .unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    out
}

#[test]
fn pruning_what_contributes_nothing_changes_nothing() {
    let tmp = tempdir("prune");
    // MiniLM: 12 heads of 32 in a 384-wide model, 1,536 feed-forward neurons.
    let heads = BTreeMap::from([(0, vec![3]), (2, vec![0, 5])]);
    let neurons = [5usize, 100, 1535];
    let zeroed = zeroed_minilm(&tmp, &heads, &neurons);
    let keep: Vec<usize> = (0..1536).filter(|j| !neurons.contains(j)).collect();
    let plan = PrunePlan {
        heads: heads.clone(),
        neurons: (0..6).map(|l| (l, keep.clone())).collect(),
    };
    let pruned = tmp.join("pruned");
    prune_dir(&zeroed, &plan, &pruned).unwrap();
    let (a, b) = (encode(&zeroed), encode(&pruned));
    let d = max_abs_diff(&a, &b);
    assert!(
        d < 1e-5,
        "pruning zero heads and neurons moved the output by {d}"
    );

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(pruned.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["pruned_heads"],
        serde_json::json!({"0": [3], "2": [0, 5]})
    );
    assert_eq!(config["intermediate_size"], 1533);
    assert_eq!(config["num_attention_heads"], 12);
    let t = candle_core::safetensors::load(pruned.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(
        t["encoder.layer.2.attention.self.query.weight"].dims(),
        &[320, 384]
    );
    assert_eq!(
        t["encoder.layer.2.attention.output.dense.weight"].dims(),
        &[384, 320]
    );
    assert_eq!(
        t["encoder.layer.1.attention.self.key.weight"].dims(),
        &[384, 384]
    );
    assert_eq!(
        t["encoder.layer.4.intermediate.dense.weight"].dims(),
        &[1533, 384]
    );

    // A second pruning counts heads as they are now: position 0 of layer 2 is head 1.
    let again = tmp.join("again");
    let plan2 = PrunePlan {
        heads: BTreeMap::from([(2, vec![0])]),
        neurons: BTreeMap::new(),
    };
    prune_dir(&pruned, &plan2, &again).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["pruned_heads"]["2"], serde_json::json!([0, 1, 5]));

    // Removing nothing leaves the model as it was, bit for bit.
    let same = tmp.join("same");
    prune_dir(&minilm_dir(), &PrunePlan::default(), &same).unwrap();
    assert_eq!(encode(&same), encode(&minilm_dir()));

    // A head that is not there, or a layer left without heads, is refused and nothing written.
    let bad = PrunePlan {
        heads: BTreeMap::from([(1, vec![12])]),
        neurons: BTreeMap::new(),
    };
    let err = prune_dir(&minilm_dir(), &bad, &tmp.join("bad")).unwrap_err();
    assert!(err.to_string().contains("head 12"), "{err}");
    let all = PrunePlan {
        heads: BTreeMap::from([(1, (0..12).collect())]),
        neurons: BTreeMap::new(),
    };
    assert!(prune_dir(&minilm_dir(), &all, &tmp.join("bad")).is_err());
    assert!(!tmp.join("bad").exists());
    std::fs::remove_dir_all(&tmp).unwrap();
}
