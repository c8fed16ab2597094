//! A closed-loop HTTP load generator: `CONCURRENCY` clients each POST the next body of
//! `BODIES` (one JSON request body per line, used round-robin) and wait for the answer,
//! for `SECONDS`. Prints one JSON line: requests, errors, throughput, latency percentiles.
//!
//!   cargo run --release -p hone-serve --example loadgen -- URL BODIES CONCURRENCY SECONDS

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, bodies, concurrency, seconds] = &args[..] else {
        eprintln!("usage: loadgen URL BODIES_FILE CONCURRENCY SECONDS");
        std::process::exit(2);
    };
    let bodies: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(bodies)
            .unwrap_or_else(|e| panic!("{bodies}: {e}"))
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    );
    assert!(!bodies.is_empty(), "no request bodies");
    let concurrency: usize = concurrency.parse().expect("CONCURRENCY is a number");
    let duration = Duration::from_secs_f64(seconds.parse().expect("SECONDS is a number"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, bodies, next, url) =
                (client.clone(), bodies.clone(), next.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed) % bodies.len();
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(bodies[i].clone())
                        .send()
                        .await;
                    let ok = match r {
                        Ok(r) => {
                            let status = r.status();
                            let body = r.bytes().await;
                            if status.is_success() && body.is_ok() {
                                true
                            } else {
                                errors.push(format!("status {status}"));
                                false
                            }
                        }
                        Err(e) => {
                            errors.push(e.to_string());
                            false
                        }
                    };
                    if ok {
                        latencies.push(t.elapsed().as_secs_f64());
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if latencies.is_empty() {
            f64::NAN
        } else {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] * 1e3
        }
    };
    let error_count = errors.len();
    errors.sort();
    errors.dedup();
    println!(
        "{}",
        serde_json::json!({
            "url": url,
            "concurrency": concurrency,
            "seconds": elapsed,
            "requests": latencies.len(),
            "errors": error_count,
            "error_kinds": errors.into_iter().take(5).collect::<Vec<_>>(),
            "throughput_rps": latencies.len() as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": pct(1.0),
        })
    );
}
