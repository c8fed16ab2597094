//! `hone serve`: hone's pipelines behind HTTP, with the routes of Hugging Face's Text
//! Embeddings Inference (`/embed`, `/predict`, `/tokenize`, `/info`, `/health`,
//! `/metrics`) and Text Generation Inference (`/generate`, `/generate_stream`), plus
//! `/ner`, so that their clients work unchanged.
//!
//! Each model directory gets a worker thread that batches its requests
//! ([`batcher`]); the async runtime only parses, validates and waits. Limits answer with
//! TEI's status codes: 413 (body or input too long), 400 (malformed JSON, naming the
//! field), 422 (well-formed but impossible), 429 (too many requests in flight), 504 (not
//! answered in time), 401 (API key).

pub mod api;
pub mod batcher;
pub mod error;
pub mod metrics;
pub mod models;
mod openapi;
pub mod routes;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use error::{ApiError, ErrorType};
pub use metrics::Metrics;
pub use models::{ServeOptions, ServedModel, Task};
pub use routes::router;

/// What every request handler shares: the models, the limits, the metrics.
pub struct AppState {
    pub models: Vec<ServedModel>,
    pub options: ServeOptions,
    pub metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    shutting_down: AtomicBool,
}

impl AppState {
    /// Load every directory (each must be servable) and start their workers.
    pub fn load(dirs: &[PathBuf], options: ServeOptions) -> Result<Self> {
        if dirs.is_empty() && options.adapters.is_empty() {
            bail!("hone serve needs at least one model directory or --adapter")
        }
        let metrics = Arc::new(Metrics::new());
        let mut models: Vec<ServedModel> = Vec::with_capacity(dirs.len() + 1);
        for dir in dirs {
            let model = ServedModel::load(dir, &options, metrics.clone())?;
            add_model(&mut models, model)?;
        }
        if !options.adapters.is_empty() {
            let model = ServedModel::load_adapters(&options.adapters, &options, metrics.clone())?;
            add_model(&mut models, model)?;
        }
        Ok(Self {
            models,
            permits: Arc::new(Semaphore::new(options.max_concurrent_requests)),
            options,
            metrics,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Whether a shutdown has begun (`/health` then answers 503).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Add a loaded model to the served ones; names must differ, since requests pick by name.
fn add_model(models: &mut Vec<ServedModel>, model: ServedModel) -> Result<()> {
    if let Some(twin) = models.iter().find(|m| m.name == model.name) {
        bail!(
            "{} and {} have the same name `{}`: requests pick models by directory name",
            twin.path.display(),
            model.path.display(),
            model.name
        )
    }
    tracing::info!(
        "serving {} ({}, {:?}) as `{}`{}",
        model.path.display(),
        model.class_name,
        model.task,
        model.name,
        match model.adapters.is_empty() {
            true => String::new(),
            false => format!(" with adapters {}", model.adapters.join(", ")),
        }
    );
    models.push(model);
    Ok(())
}

/// Serve on `listener` until `shutdown` completes; then stop accepting connections,
/// finish the requests already received, and return.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = router(state.clone());
    let flag = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            flag.shutting_down.store(true, Ordering::Relaxed);
            tracing::info!("shutting down: finishing the requests in flight");
        })
        .await?;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
