//! `--adapter`: two LoRA adapters over one base model served as one classifier. Concurrent
//! requests for both (batched together within --max-wait-ms) get each adapter's own
//! answer; an unknown adapter is 404; /info lists them.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use candle_core::Device;
use serde_json::{json, Value};

use common::{fixture, flipped_lora_adapter, minilm_dir};
use hone_core::inference::classify::TextClassificationPipeline;
use hone_core::model::ModelDir;
use hone_serve::ServeOptions;
use support::Server;

const TEXTS: [&str; 4] = [
    "a gripping, beautifully acted film",
    "dull and far too long",
    "not bad at all",
    "the plot makes no sense",
];

/// Each text's probabilities by label, from the adapter in `dir` served alone.
fn alone(dir: &std::path::Path) -> Vec<BTreeMap<String, f64>> {
    let dir = ModelDir::open_with_base(dir, Some(&minilm_dir())).unwrap();
    let p = TextClassificationPipeline::open(&dir, &Device::Cpu, 512).unwrap();
    let inputs: Vec<_> = TEXTS.iter().map(|t| (t.to_string(), None)).collect();
    p.predict(&inputs, 8)
        .unwrap()
        .into_iter()
        .map(|p| {
            p.probabilities
                .into_iter()
                .map(|(l, s)| (l, s as f64))
                .collect()
        })
        .collect()
}

fn scores(answer: &Value) -> BTreeMap<String, f64> {
    answer
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["label"].as_str().unwrap().to_string(),
                s["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_two_adapters_share_the_base_and_get_their_own_answers() {
    let flipped = flipped_lora_adapter("serve");
    let want = [alone(&fixture("lora-minilm-sst2")), alone(&flipped)];
    let options = ServeOptions {
        base: Some(minilm_dir()),
        adapters: vec![
            ("sst2".into(), fixture("lora-minilm-sst2")),
            ("flipped".into(), flipped.clone()),
        ],
        // Requests arriving together are batched together, whatever their adapter.
        max_wait: Duration::from_millis(30),
        ..Default::default()
    };
    let server = Server::start(vec![], options).await;

    let mut requests = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (adapter, text) = (["sst2", "flipped"][i % 2], TEXTS[(i / 2) % TEXTS.len()]);
        let post = server
            .client
            .post(format!("{}/predict", server.base))
            .json(&json!({"inputs": text, "adapter": adapter}));
        requests.spawn(async move {
            let r = post.send().await.unwrap();
            (i, r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
    }
    while let Some(done) = requests.join_next().await {
        let (i, status, answer) = done.unwrap();
        assert_eq!(status, 200, "{answer}");
        let expected = &want[i % 2][(i / 2) % TEXTS.len()];
        for (label, score) in scores(&answer) {
            let d = (score - expected[&label]).abs();
            assert!(
                d < 1e-5,
                "request {i}, {label}: {score} vs {}",
                expected[&label]
            );
        }
    }
    // No adapter named: the first one answers, as PEFT's active adapter does.
    let (status, answer) = server
        .post("/predict", &json!({"inputs": TEXTS[1]}).to_string())
        .await;
    assert_eq!(status, 200);
    assert!((scores(&answer)["LABEL_1"] - want[0][1]["LABEL_1"]).abs() < 1e-5);

    let (status, answer) = server
        .post(
            "/predict",
            &json!({"inputs": "x", "adapter": "nope"}).to_string(),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("sst2, flipped"),
        "{answer}"
    );

    let (_, info) = server.get("/info").await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["models"][0]["adapters"], json!(["sst2", "flipped"]));
    drop(server);
    std::fs::remove_dir_all(&flipped).unwrap();
}
