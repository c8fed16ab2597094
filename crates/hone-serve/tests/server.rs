//! The real server on a loopback port: every route's happy path against the fixtures of
//! Transformers and PEFT (or the library's own pipelines), payloads as TEI's and TGI's
//! documentation write them, and each failure mode with its status code.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;
#[path = "server/hostile.rs"]
mod hostile;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use candle_core::Device;
use serde_json::{json, Value};

use common::{fixture, minilm_dir, read_fixture, shared_dir};
use hone_core::inference::generate::{generate, GenerationConfig};
use hone_core::inference::ner::TokenClassificationPipeline;
use hone_core::model::{CausalLm, Head, Model, ModelConfig, Net};
use hone_core::tokenization::train::{train_tokenizer, TokenizerKind};
use hone_core::tokenization::TextTokenizer;
use hone_serve::ServeOptions;
use support::{close, temp_dir, with_base, Server};

/// The routes that take a JSON body (TEI's, TGI's and hone's own).
const POST_ROUTES: [&str; 6] = [
    "/embed",
    "/predict",
    "/tokenize",
    "/ner",
    "/generate",
    "/generate_stream",
];

/// The tiny GPT-2 fixture with a byte-level BPE of exactly its 300 ids.
fn tiny_gpt2_with_tokenizer() -> PathBuf {
    let dir = temp_dir("gpt2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-gpt2").join(f), dir.join(f)).unwrap();
    }
    let corpus: String =
        std::fs::read_to_string(shared_dir().join("data/tinyshakespeare/input.txt"))
            .unwrap()
            .lines()
            .take(3000)
            .collect::<Vec<_>>()
            .join("\n");
    let corpus_file = dir.join("corpus.txt");
    std::fs::write(&corpus_file, corpus).unwrap();
    let tok = train_tokenizer(
        TokenizerKind::ByteLevelBpe,
        &[corpus_file],
        300,
        vec![],
        0,
        false,
    )
    .unwrap();
    tok.save(&dir.join("tokenizer.json")).unwrap();
    dir
}

/// A small BERT token classifier (random weights) with MiniLM's tokenizer.
fn tiny_ner_model() -> PathBuf {
    let dir = temp_dir("ner");
    let config_text = std::fs::read_to_string(minilm_dir().join("config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&config_text).unwrap();
    for (k, v) in [
        ("hidden_size", json!(32)),
        ("num_hidden_layers", json!(2)),
        ("num_attention_heads", json!(2)),
        ("intermediate_size", json!(64)),
        ("architectures", json!(["BertForTokenClassification"])),
        (
            "id2label",
            json!({"0": "O", "1": "B-PER", "2": "I-PER", "3": "B-LOC", "4": "I-LOC"}),
        ),
        (
            "label2id",
            json!({"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}),
        ),
    ] {
        config[k] = v;
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let config = ModelConfig::load(&dir.join("config.json")).unwrap();
    let head = Head::from_config(&config);
    Model::<Net>::from_scratch(config, head, &Device::Cpu, 7)
        .unwrap()
        .save(&dir)
        .unwrap();
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_predictions_match_transformers_and_peft() {
    let server = Server::start(vec![minilm_dir(), fixture("lora-minilm-sst2")], with_base()).await;
    assert_eq!(server.get("/health").await.0, 200);

    // /embed: mean pooling as sentence-transformers does it, against Transformers.
    let fx = read_fixture("minilm_forward.json");
    let texts: Vec<&str> = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let body = json!({"inputs": texts, "normalize": false}).to_string();
    let (status, got) = server.post("/embed", &body).await;
    assert_eq!(status, 200, "{got}");
    for (i, case) in fx["cases"].as_array().unwrap().iter().enumerate() {
        close(&got[i], &case["mean"], 1e-4, &format!("embedding {i}"));
    }
    // normalize (TEI's default) gives unit vectors in the same direction.
    let (_, unit) = server
        .post("/embed", &json!({"inputs": texts[0]}).to_string())
        .await;
    let v: Vec<f64> = unit[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");

    // /predict: PEFT's adapter (unmerged) over the base, against PEFT's probabilities.
    let fx = read_fixture("lora_minilm_expected.json");
    let labels = ["LABEL_0", "LABEL_1"];
    for (i, text) in fx["texts"].as_array().unwrap().iter().enumerate() {
        let (status, got) = server
            .post("/predict", &json!({"inputs": text}).to_string())
            .await;
        assert_eq!(status, 200, "{got}");
        let scores = got.as_array().unwrap();
        assert!(
            scores[0]["score"].as_f64() >= scores[1]["score"].as_f64(),
            "best first"
        );
        for s in scores {
            let label = s["label"].as_str().unwrap();
            let j = labels.iter().position(|l| *l == label).unwrap();
            let want = fx["probabilities_unmerged"][i][j].as_f64().unwrap();
            assert!(
                (s["score"].as_f64().unwrap() - want).abs() < 1e-5,
                "text {i} label {label}"
            );
        }
    }
    // A batch answers per input, in order; raw scores are the logits.
    let batch: Vec<Value> = fx["texts"].as_array().unwrap()[..3]
        .iter()
        .map(|t| json!([t]))
        .collect();
    let (status, got) = server
        .post(
            "/predict",
            &json!({"inputs": batch, "raw_scores": true}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{got}");
    for i in 0..3 {
        for s in got[i].as_array().unwrap() {
            let j = labels.iter().position(|l| *l == s["label"]).unwrap();
            let want = fx["logits_unmerged"][i][j].as_f64().unwrap();
            assert!(
                (s["score"].as_f64().unwrap() - want).abs() < 1e-4,
                "logit {i} {j}"
            );
        }
    }

    // /tokenize: the tokenizer's ids, with offsets into the text.
    let text = "Tokenize this, please";
    let (status, got) = server
        .post("/tokenize", &json!({"inputs": text}).to_string())
        .await;
    assert_eq!(status, 200);
    let tok = TextTokenizer::from_dir(&minilm_dir()).unwrap();
    let want = tok.encode(text, None).unwrap();
    let tokens = got[0].as_array().unwrap();
    let ids: Vec<u32> = tokens
        .iter()
        .map(|t| t["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ids, want.get_ids());
    assert_eq!(tokens[0]["special"], true);
    assert_eq!(tokens[0]["start"], Value::Null);
    for t in &tokens[1..tokens.len() - 1] {
        let (a, b) = (
            t["start"].as_u64().unwrap() as usize,
            t["stop"].as_u64().unwrap() as usize,
        );
        assert_eq!(t["text"], text[a..b], "offsets slice the text");
    }

    // /info names both models; /metrics counts what happened; /openapi.json lists routes.
    let (_, info) = server.get("/info").await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["model_type"]["embedding"]["pooling"], "mean");
    assert_eq!(info["models"][1]["task"], "classification");
    assert_eq!(info["models"][1]["labels"], json!(labels));
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"hone_requests_total{route="/predict",status="200"} 9"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"hone_batch_size_count{model="lora-minilm-sst2"}"#));
    let (_, doc) = server.get("/openapi.json").await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for route in POST_ROUTES {
        assert!(doc["paths"][route].is_object(), "{route} documented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_and_tgi_documentation_payloads_are_answered() {
    let gpt2 = tiny_gpt2_with_tokenizer();
    let server = Server::start(
        vec![minilm_dir(), fixture("gpt2-seqcls"), gpt2.clone()],
        ServeOptions::default(),
    )
    .await;
    // TEI's README: embed one text; predict one text, a pair, and a batch.
    let (s, v) = server
        .post("/embed", r#"{"inputs":"What is Deep Learning?"}"#)
        .await;
    assert_eq!((s, v.as_array().unwrap().len()), (200, 1));
    assert_eq!(v[0].as_array().unwrap().len(), 384);
    let (s, v) = server
        .post("/predict", r#"{"inputs":"I like you. I love you"}"#)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "one list of label scores: {v}"
    );
    let (s, v) = server
        .post(
            "/predict",
            r#"{"inputs":["I like you.","I hate pineapples"]}"#,
        )
        .await;
    assert_eq!(s, 200);
    assert!(v[0]["label"].is_string(), "a pair is one input: {v}");
    let (s, v) = server
        .post(
            "/predict",
            r#"{"inputs":[["I like you."],["I hate pineapples"]]}"#,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2, "a batch: {v}");
    assert!(v[1][0]["label"].is_string());
    let (s, _) = server
        .post(
            "/tokenize",
            r#"{"inputs":"test", "add_special_tokens": false}"#,
        )
        .await;
    assert_eq!(s, 200);

    // TGI's README: generate, and stream, up to 20 new tokens; greedy as TGI's default.
    let tgi = r#"{"inputs":"What is Deep Learning?","parameters":{"max_new_tokens":20}}"#;
    let (s, v) = server.post("/generate", tgi).await;
    assert_eq!(s, 200, "{v}");
    let model = Model::load(&gpt2, &Device::Cpu)
        .unwrap()
        .into_kind::<dyn CausalLm>()
        .unwrap();
    let tok = TextTokenizer::from_dir(&gpt2).unwrap();
    let want = generate(
        &*model.net,
        &tok,
        "What is Deep Learning?",
        &GenerationConfig {
            greedy: true,
            ..GenerationConfig::greedy(20)
        },
        |_, _| {},
    )
    .unwrap();
    assert_eq!(v["generated_text"], want.text);

    let r = reqwest::Client::new()
        .post(format!("{}/generate_stream", server.base))
        .body(tgi)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert_eq!(events.len(), want.new_tokens, "one event per token: {body}");
    let streamed: String = events
        .iter()
        .map(|e| e["token"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, want.text);
    let last = events.last().unwrap();
    assert_eq!(last["generated_text"], want.text);
    assert_eq!(last["details"]["generated_tokens"], want.new_tokens);
    assert!(events[..events.len() - 1]
        .iter()
        .all(|e| e["generated_text"].is_null()));

    // Sampling with a seed is reproducible; details say why it stopped.
    let sampled = r#"{"inputs":"First","parameters":{"max_new_tokens":8,"do_sample":true,"temperature":0.8,"top_k":20,"seed":3,"details":true}}"#;
    let (s1, a) = server.post("/generate", sampled).await;
    let (_, b) = server.post("/generate", sampled).await;
    assert_eq!(s1, 200, "{a}");
    assert_eq!(a, b);
    assert_eq!(a["details"]["seed"], 3);
    assert!(a["details"]["generated_tokens"].as_u64().unwrap() <= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ner_gives_the_pipelines_entities() {
    let dir = tiny_ner_model();
    let server = Server::start(vec![dir.clone()], ServeOptions::default()).await;
    let texts = [
        "John Smith lives in Berlin.",
        "Angela went to Paris and Rome last year with Peter.",
    ];
    let pipeline = TokenClassificationPipeline::load(&dir, &Device::Cpu, 512, 32).unwrap();
    let want: Vec<Value> = pipeline
        .predict_entities(&texts.map(String::from), 8)
        .unwrap()
        .into_iter()
        // Through JSON text, as the server sends it (scores are f32).
        .map(|t| serde_json::from_str(&serde_json::to_string(&t.entities).unwrap()).unwrap())
        .collect();
    assert!(
        want.iter().any(|e| !e.as_array().unwrap().is_empty()),
        "random weights still tag something"
    );
    let (s, got) = server
        .post("/ner", &json!({"inputs": texts}).to_string())
        .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got, Value::Array(want.clone()));
    let (_, one) = server
        .post("/ner", &json!({"inputs": texts[1]}).to_string())
        .await;
    assert_eq!(one, want[1]);
    // No embedding model here: that route says so.
    let (s, v) = server.post("/embed", r#"{"inputs":"x"}"#).await;
    assert_eq!(s, 404, "{v}");
}

/// A request that keeps MiniLM busy for a while on a CPU: 32 inputs of 512 tokens.
fn slow_body() -> String {
    let text = "word ".repeat(600);
    json!({"inputs": vec![text; 32], "truncate": true}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_mode_has_its_status_code() {
    let server = Server::start(
        vec![minilm_dir()],
        ServeOptions {
            payload_limit: 200_000,
            max_client_batch_size: 32,
            ..Default::default()
        },
    )
    .await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/embed", r#"{"inputs":"#.into(), 400, "invalid JSON body"),
        ("/embed", r#"{"inputs": 3}"#.into(), 400, "`inputs`"),
        (
            "/embed",
            r#"{"text": "x"}"#.into(),
            400,
            "missing field `inputs`",
        ),
        (
            "/embed",
            r#"{"inputs":"x","normalize":"yes"}"#.into(),
            400,
            "`normalize`",
        ),
        (
            "/embed",
            json!({"inputs": "a ".repeat(150_000)}).to_string(),
            413,
            "length limit",
        ),
        (
            "/embed",
            json!({"inputs": "word ".repeat(600)}).to_string(),
            413,
            "must have less than 512 tokens. Given: 602",
        ),
        ("/embed", r#"{"inputs": []}"#.into(), 422, "cannot be empty"),
        (
            "/embed",
            json!({"inputs": vec!["x"; 33]}).to_string(),
            422,
            "maximum allowed batch size 32",
        ),
        (
            "/predict",
            r#"{"inputs":"x"}"#.into(),
            404,
            "no Classification model",
        ),
        ("/nothing", "{}".into(), 404, "no such route"),
    ];
    for (route, body, status, says) in cases {
        let (s, v) = server.post(route, &body).await;
        assert_eq!(s, status, "{route} {}: {v}", &body[..body.len().min(60)]);
        let message = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("JSON error: {v}"));
        assert!(message.contains(says), "{route}: {message}");
    }
    // The server is still well.
    assert_eq!(server.get("/health").await.0, 200);
    let (s, _) = server.post("/embed", r#"{"inputs":"still here"}"#).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_parameters_are_checked_by_name() {
    let gpt2 = tiny_gpt2_with_tokenizer();
    let server = Server::start(vec![gpt2], ServeOptions::default()).await;
    for (params, says) in [
        (
            json!({"repetition_penalty": 1.2}),
            "`repetition_penalty` is not supported",
        ),
        (
            json!({"temperature": 0.0}),
            "`temperature` must be strictly positive",
        ),
        (json!({"top_p": 1.5}), "`top_p` must be > 0.0 and < 1.0"),
        (
            json!({"max_new_tokens": 0}),
            "`max_new_tokens` must be between 1",
        ),
        (json!({"max_new_tokens": 60}), "must be <= 64"),
    ] {
        let body = json!({"inputs": "First Citizen", "parameters": params}).to_string();
        let (s, v) = server.post("/generate", &body).await;
        assert_eq!(s, 422, "{params}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_in_flight_limit_and_timeout() {
    let server = Server::start(
        vec![minilm_dir()],
        ServeOptions {
            api_key: Some("s3cret".into()),
            max_concurrent_requests: 1,
            ..Default::default()
        },
    )
    .await;
    // /health stays open for probes; everything else wants the key.
    assert_eq!(server.get("/health").await.0, 200);
    assert_eq!(server.get("/info").await.0, 401);
    let post = |key: Option<&'static str>, body: String| {
        let mut r = server
            .client
            .post(format!("{}/embed", server.base))
            .body(body);
        if let Some(k) = key {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r.send()
    };
    let wrong = post(Some("s3creT"), r#"{"inputs":"x"}"#.into())
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = post(Some("s3cret"), r#"{"inputs":"x"}"#.into())
        .await
        .unwrap();
    assert_eq!(right.status(), 200);

    // One request in flight at most: a second one meanwhile gets 429.
    let slow = tokio::spawn(post(Some("s3cret"), slow_body()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = post(Some("s3cret"), r#"{"inputs":"x"}"#.into())
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    let v: Value = second.json().await.unwrap();
    assert_eq!(v["error_type"], "overloaded");
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    drop(server);

    // A request not answered in time gets 504.
    let server = Server::start(
        vec![minilm_dir()],
        ServeOptions {
            request_timeout: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await;
    let (s, v) = server.post("/embed", &slow_body()).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["error_type"], "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_translation_model_generates_what_transformers_generates() {
    let fx = read_fixture("tiny_marian_expected.json");
    let server = Server::start(vec![fixture("tiny-marian")], ServeOptions::default()).await;
    // Greedy by default (no num_beams in its generation_config.json), beam 3 on request;
    // concurrent requests with different settings share the worker's batch.
    let requests: Vec<_> = (0..4)
        .flat_map(|i| [(i, None), (i, Some(3))])
        .map(|(i, beams)| {
            let source = fx["src"][i].as_str().unwrap().to_string();
            let mut parameters = json!({"max_new_tokens": 12, "details": true});
            if let Some(b) = beams {
                parameters["num_beams"] = json!(b);
            }
            let body = json!({"inputs": source, "parameters": parameters}).to_string();
            let (client, url) = (server.client.clone(), format!("{}/generate", server.base));
            tokio::spawn(async move {
                let r = client.post(url).body(body).send().await.unwrap();
                (
                    i,
                    beams,
                    r.status().as_u16(),
                    r.json::<Value>().await.unwrap(),
                )
            })
        })
        .collect();
    for r in requests {
        let (i, beams, status, v) = r.await.unwrap();
        assert_eq!(status, 200, "{v}");
        let key = if beams.is_some() {
            "beam3_text"
        } else {
            "greedy_text"
        };
        assert_eq!(v["generated_text"], fx[key][i], "sentence {i}, {key}");
        // 12 tokens without EOS, then the forced EOS: Transformers' ids less the start.
        assert_eq!(v["details"]["finish_reason"], "eos_token");
        assert_eq!(v["details"]["generated_tokens"], 12);
    }
    let (s, v) = server
        .post(
            "/generate",
            r#"{"inputs": "Ein Mann.", "parameters": {"do_sample": true}}"#,
        )
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`do_sample`"));
    let (s, _) = server
        .post("/generate_stream", r#"{"inputs": "Ein Mann."}"#)
        .await;
    assert_eq!(s, 422);
}
