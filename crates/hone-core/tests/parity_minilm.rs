//! all-MiniLM-L6-v2 forward pass against Hugging Face Transformers (fp32, CPU).

mod common;

use candle_core::Device;
use common::*;
use hone_core::inference::embed::mean_pool;
use hone_core::model::{Encoder, Model};
use hone_core::tokenization::{pad_ids, TextTokenizer};

#[test]
fn minilm_forward_matches_transformers() {
    let fx = read_fixture("minilm_forward.json");
    let dir = minilm_dir();
    let model = Model::load(&dir, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn Encoder>()
        .unwrap();
    let bert = &model.net;
    let mut tok = TextTokenizer::from_dir(&dir).unwrap();
    tok.set_max_length(Some(fx["max_length"].as_u64().unwrap() as usize))
        .unwrap();

    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let enc = tok.encode(text, None).unwrap();
        let want_ids: Vec<u32> = case["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(enc.get_ids(), &want_ids[..], "token ids of {text:?}");

        let batch = pad_ids(&[enc.get_ids()], &[enc.get_type_ids()], 0, &Device::Cpu).unwrap();
        let out = bert
            .encode(
                &batch.input_ids,
                &batch.token_type_ids,
                &batch.attention_mask,
            )
            .unwrap();
        let cls = out
            .sequence
            .narrow(1, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mean = mean_pool(&out.sequence, &batch.attention_mask)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let pooler = out
            .pooled
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (name, got) in [("cls", &cls), ("mean", &mean), ("pooler", &pooler)] {
            let d = max_abs_diff(got, &f32s(&case[name]));
            assert!(d < 1e-4, "{name} of {text:?} differs by {d}");
        }
    }

    // The padded batch gives every row the [CLS] vector it has alone.
    let pb = &fx["padded_batch"];
    let ids = u32_rows(&pb["input_ids"]);
    let mask = u32_rows(&pb["attention_mask"]);
    let types: Vec<Vec<u32>> = ids.iter().map(|r| vec![0; r.len()]).collect();
    let out = bert
        .encode(&tensor2(&ids), &tensor2(&types), &tensor2(&mask))
        .unwrap();
    for (i, want) in pb["cls"].as_array().unwrap().iter().enumerate() {
        let got = out
            .sequence
            .get(i)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &f32s(want));
        assert!(d < 1e-4, "padded row {i} [CLS] differs by {d}");
    }
}
