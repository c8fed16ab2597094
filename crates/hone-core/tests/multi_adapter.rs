//! Several LoRA adapters over one base model: inputs of both adapters in the same batches
//! get, row for row, what each adapter gives alone (PEFT's fixture probabilities for the
//! first), while the base weights exist once.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::*;
use hone_core::inference::classify::TextClassificationPipeline;
use hone_core::model::ModelDir;

fn probabilities(p: &[hone_core::inference::classify::Prediction]) -> Vec<Vec<f32>> {
    p.iter()
        .map(|p| p.probabilities.values().copied().collect())
        .collect()
}

#[test]
fn two_adapters_in_one_batch_answer_as_each_does_alone() {
    let fx = read_fixture("lora_minilm_expected.json");
    let max_length = fx["max_length"].as_u64().unwrap() as usize;
    let texts: Vec<String> = fx["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let second = flipped_lora_adapter("multi");
    let open = |p: &PathBuf| ModelDir::open_with_base(p, Some(&minilm_dir())).unwrap();
    let (a, b) = (open(&fixture("lora-minilm-sst2")), open(&second));
    let alone_a = TextClassificationPipeline::open(&a, &Device::Cpu, max_length).unwrap();
    let alone_b = TextClassificationPipeline::open(&b, &Device::Cpu, max_length).unwrap();
    let both = TextClassificationPipeline::open_with_adapters(
        &[("sst2".into(), a), ("flipped".into(), b)],
        &Device::Cpu,
        max_length,
    )
    .unwrap();

    // Every text through each adapter, interleaved, in batches that mix them.
    let inputs: Vec<(String, Option<String>)> = texts
        .iter()
        .flat_map(|t| [(t.clone(), None), (t.clone(), None)])
        .collect();
    let slots: Vec<u32> = (0..inputs.len()).map(|i| (i % 2) as u32).collect();
    let mixed = probabilities(&both.predict_routed(&inputs, &slots, 8).unwrap());
    let singles = |p: &TextClassificationPipeline| {
        let plain: Vec<_> = texts.iter().map(|t| (t.clone(), None)).collect();
        probabilities(&p.predict(&plain, 8).unwrap())
    };
    let (want_a, want_b) = (singles(&alone_a), singles(&alone_b));
    for (i, got) in mixed.iter().enumerate() {
        let want = match i % 2 {
            0 => &want_a[i / 2],
            _ => &want_b[i / 2],
        };
        let d = max_abs_diff(got, want);
        assert!(d < 1e-5, "row {i} (adapter {}) differs by {d}", i % 2);
    }
    // The first adapter is PEFT's: its probabilities are the fixture's.
    for (i, want) in fx["probabilities_unmerged"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let d = max_abs_diff(&mixed[2 * i], &f32s(want));
        assert!(d < 1e-5, "text {i}: {d} from PEFT");
    }
    // The second adapter really differs (else the routing would go untested).
    assert!(max_abs_diff(&want_a[0], &want_b[0]) > 1e-3);
    // The base's parameters exist once; the adapters' matrices live beside them.
    let names: Vec<String> = both
        .model
        .params
        .params()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.iter().all(|n| !n.contains("lora_")));
    assert_eq!(
        names.len(),
        alone_a
            .model
            .params
            .params()
            .iter()
            .filter(|(n, _)| !n.contains("lora_"))
            .count()
    );
    std::fs::remove_dir_all(&second).unwrap();
}
