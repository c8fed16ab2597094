//! The server on a loopback port, for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use hone_serve::{AppState, ServeOptions};

use crate::common::minilm_dir;

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hone-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server on 127.0.0.1 with an OS-chosen port; dropped, it shuts down.
pub struct Server {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(dirs: Vec<PathBuf>, options: ServeOptions) -> Server {
        let state = tokio::task::spawn_blocking(move || AppState::load(&dirs, options))
            .await
            .unwrap()
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(hone_serve::serve(listener, Arc::new(state), async {
            let _ = stopped.await;
        }));
        Server {
            base,
            stop: Some(stop),
            client: reqwest::Client::new(),
        }
    }

    pub async fn post(&self, route: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{route}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, route: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{route}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn close(a: &Value, b: &Value, tol: f64, what: &str) {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
        assert!((x - y).abs() <= tol, "{what}[{i}]: {x} vs {y}");
    }
}

pub fn with_base() -> ServeOptions {
    ServeOptions {
        base: Some(minilm_dir()),
        ..Default::default()
    }
}
