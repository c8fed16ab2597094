//! Random and malformed bodies against every route: the server answers each with a 4xx or a
//! 2xx, never a 500 and never a crash.

use serde_json::{json, Value};

use super::common::{fixture, minilm_dir};
use super::support::Server;
use super::{tiny_gpt2_with_tokenizer, POST_ROUTES};
use hone_serve::ServeOptions;

/// A request whose fields have the right types and random values.
fn typed_request(rng: &mut impl rand::Rng) -> Value {
    let texts = [
        "",
        " ",
        "a",
        "What is Deep Learning?",
        "\u{0}\u{fffd}é\n",
        "Ein Mann schläft.",
    ];
    fn text(rng: &mut impl rand::Rng, texts: &[&str]) -> String {
        texts[rng.gen_range(0..texts.len())].repeat(rng.gen_range(0..200))
    }
    let inputs = match rng.gen_range(0..3) {
        0 => json!(text(rng, &texts)),
        1 => {
            let n = rng.gen_range(0..40);
            json!((0..n).map(|_| text(rng, &texts)).collect::<Vec<_>>())
        }
        _ => {
            let n = rng.gen_range(0..4);
            json!((0..n)
                .map(|_| vec![text(rng, &texts), text(rng, &texts)])
                .collect::<Vec<_>>())
        }
    };
    let mut parameters = serde_json::Map::new();
    let options: [(&str, Value); 9] = [
        ("max_new_tokens", json!(rng.gen_range(0..40))),
        ("temperature", json!(rng.gen::<f64>() * 4.0 - 1.0)),
        ("top_k", json!(rng.gen_range(0..50))),
        ("top_p", json!(rng.gen::<f64>() * 2.0 - 0.5)),
        ("stop", json!([texts[rng.gen_range(0..texts.len())]])),
        ("seed", json!(rng.gen::<u32>())),
        ("num_beams", json!(rng.gen_range(0..5))),
        ("do_sample", json!(rng.gen::<bool>())),
        ("details", json!(rng.gen::<bool>())),
    ];
    for (k, v) in options {
        if rng.gen_bool(0.4) {
            parameters.insert(k.to_string(), v);
        }
    }
    json!({
        "inputs": inputs,
        "parameters": parameters,
        "truncate": rng.gen::<bool>(),
        "normalize": rng.gen::<bool>(),
        "raw_scores": rng.gen::<bool>(),
        "add_special_tokens": rng.gen::<bool>(),
    })
}

/// A random JSON value whose keys are mostly the routes' own field names, so that the
/// parser gets past the first key and reaches every field's checks.
fn random_json(rng: &mut impl rand::Rng, depth: u32) -> Value {
    const KEYS: [&str; 14] = [
        "inputs",
        "parameters",
        "truncate",
        "normalize",
        "raw_scores",
        "add_special_tokens",
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "stop",
        "seed",
        "num_beams",
        "model",
    ];
    let strings = [
        "",
        "a",
        "What is Deep Learning?",
        "\u{0}\u{fffd}é",
        "Ein Mann schläft.",
    ];
    match rng.gen_range(0..if depth == 0 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.gen()),
        2 => json!(rng.gen_range(-3i64..100_000)),
        3 => json!(rng.gen::<f64>() * 4.0 - 1.0),
        4 => Value::String(strings[rng.gen_range(0..strings.len())].repeat(rng.gen_range(0..40))),
        5 | 6 => {
            let n = rng.gen_range(0..5);
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                let key = KEYS[rng.gen_range(0..KEYS.len())].to_string();
                m.insert(key, random_json(rng, depth - 1));
            }
            Value::Object(m)
        }
        _ => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_never_crash_the_server_or_get_a_500() {
    use rand::{Rng, SeedableRng};
    let gpt2 = tiny_gpt2_with_tokenizer();
    let server = Server::start(
        vec![
            minilm_dir(),
            fixture("gpt2-seqcls"),
            gpt2,
            fixture("tiny-marian"),
        ],
        ServeOptions {
            max_new_tokens: 16,
            ..Default::default()
        },
    )
    .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..1200 {
        let route = POST_ROUTES[i % POST_ROUTES.len()];
        let body = match rng.gen_range(0..12) {
            // Well-typed fields with hostile values: the checks past the parser.
            2..=6 => typed_request(&mut rng).to_string().into_bytes(),
            // Raw bytes, truncated JSON, or a random structure.
            0 => (0..rng.gen_range(0..64))
                .map(|_| rng.gen())
                .collect::<Vec<u8>>(),
            1 => {
                let s = random_json(&mut rng, 3).to_string().into_bytes();
                s[..rng.gen_range(0..=s.len())].to_vec()
            }
            _ => {
                let mut v = random_json(&mut rng, 3);
                if rng.gen_bool(0.7) {
                    // Mostly an object with `inputs`, so deeper checks are reached.
                    let mut m = serde_json::Map::new();
                    m.insert("inputs".into(), random_json(&mut rng, 2));
                    m.insert("parameters".into(), random_json(&mut rng, 2));
                    m.insert("truncate".into(), json!(rng.gen::<bool>()));
                    v = Value::Object(m);
                }
                v.to_string().into_bytes()
            }
        };
        let shown = String::from_utf8_lossy(&body).into_owned();
        let r = server
            .client
            .post(format!("{}{route}", server.base))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{route} {shown:?}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        assert!(
            [200, 400, 404, 413, 422].contains(&status),
            "{route} {shown:?}: {status} {text}"
        );
        if status != 200 {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
            assert!(v["error"].is_string(), "{route} {shown:?}: {text}");
        }
    }
    assert_eq!(server.get("/health").await.0, 200);
    eprintln!("statuses of 1200 hostile requests: {statuses:?}");
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
    assert!(statuses.len() >= 3, "{statuses:?}");
}
