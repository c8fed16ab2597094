//! `hone serve` as a process: it binds loopback, answers, and on SIGTERM stops accepting,
//! finishes the request in flight and exits 0; a directory it cannot serve is one error
//! line and a non-zero exit.

#[path = "../../hone-core/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("serve")
        .arg(minilm_dir())
        .args(["--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log says where it listens (port 0: the system chose).
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(log.read_line(&mut line).unwrap() > 0, "hone serve exited");
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on http://".len()..].trim().to_string();
        }
    };
    assert!(
        addr.starts_with("127.0.0.1:"),
        "binds loopback by default: {addr}"
    );
    assert_eq!(request(&addr, "GET", "/health", "").0, 200);

    // A request that takes a while (32 inputs of 512 tokens), then SIGTERM during it.
    let slow = serde_json::json!({"inputs": vec!["word ".repeat(600); 32], "truncate": true});
    let in_flight = {
        let addr = addr.clone();
        std::thread::spawn(move || request(&addr, "POST", "/embed", &slow.to_string()))
    };
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let embeddings: Vec<Vec<f32>> = serde_json::from_str(&body).unwrap();
    assert_eq!(embeddings.len(), 32);
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
    let mut rest = String::new();
    log.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("shutting down"), "{rest}");
    // Nothing listens any more.
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn a_model_it_cannot_serve_is_one_error_line() {
    // A pretraining head (MLM + NSP) has no route.
    let dir = std::env::temp_dir().join(format!("hone-serve-mlm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-bert-pretraining").join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(
        minilm_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hone"))
        .arg("serve")
        .arg(&dir)
        .args(["--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("cannot be served"),
        "{err}"
    );
}
