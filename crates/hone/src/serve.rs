//! `hone serve`: an HTTP server over one or more model directories (the `hone-serve`
//! crate), with Text Embeddings Inference's and Text Generation Inference's routes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use hone_core::inference::embed::Pooling;
use hone_core::runtime::DeviceSpec;
use hone_serve::{AppState, ServeOptions};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model directories (an encoder for /embed, a sequence classifier for /predict, a
    /// token classifier for /ner, a causal LM for /generate); requests name one by its
    /// directory name (`"model"`) when several could answer.
    #[arg(required_unless_present = "adapters")]
    model_dirs: Vec<PathBuf>,
    /// A LoRA adapter directory served under NAME (repeatable): all the adapters given
    /// share one base model in memory and one classifier on /predict, whose requests pick
    /// one with `"adapter": "NAME"` (the first by default) and share batches.
    #[arg(long = "adapter", value_name = "NAME=DIR", value_parser = parse_adapter)]
    adapters: Vec<(String, PathBuf)>,
    /// Address to listen on; anything but loopback must be asked for.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// For adapter directories: their base model (instead of the one their
    /// adapter_config.json names).
    #[arg(long)]
    base: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// How an embedding model turns token vectors into one vector.
    #[arg(long, value_enum, default_value = "mean")]
    pooling: Pooling,
    /// Inputs per forward pass at most.
    #[arg(long, default_value_t = 32)]
    max_batch_requests: usize,
    /// Tokens per forward pass at most.
    #[arg(long, default_value_t = 16384)]
    max_batch_tokens: usize,
    /// How long a worker waits for more requests to fill a batch (0: it batches what is
    /// queued while it was busy).
    #[arg(long, default_value_t = 0)]
    max_wait_ms: u64,
    /// Requests in flight at most; more are refused with 429.
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Inputs in one request at most.
    #[arg(long, default_value_t = 32)]
    max_client_batch_size: usize,
    /// Tokens per input at most (default: the model's positions); longer inputs get 413
    /// unless the request sets `truncate`.
    #[arg(long)]
    max_input_length: Option<usize>,
    /// Request bodies larger than this many bytes get 413.
    #[arg(long, default_value_t = 2_000_000)]
    payload_limit: usize,
    /// Requests not answered within this many milliseconds get 504.
    #[arg(long, default_value_t = 60_000)]
    request_timeout_ms: u64,
    /// Require `Authorization: Bearer KEY` on every route but /health (or set
    /// HONE_API_KEY).
    #[arg(long, env = "HONE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Token classification: pieces shared by consecutive windows of a long input.
    #[arg(long, default_value_t = 32)]
    ner_stride: usize,
    /// The largest max_new_tokens a generation request may ask for.
    #[arg(long, default_value_t = 1024)]
    max_new_tokens: usize,
}

fn parse_adapter(text: &str) -> std::result::Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_string(), PathBuf::from(dir)))
        }
        _ => Err(format!("`{text}`: expected NAME=DIR")),
    }
}

pub fn run(args: ServeArgs) -> Result<()> {
    let options = ServeOptions {
        device: args.device,
        base: args.base,
        adapters: args.adapters,
        pooling: args.pooling,
        max_batch_requests: args.max_batch_requests,
        max_batch_tokens: args.max_batch_tokens,
        max_wait: Duration::from_millis(args.max_wait_ms),
        max_concurrent_requests: args.max_concurrent_requests,
        max_client_batch_size: args.max_client_batch_size,
        max_input_length: args.max_input_length,
        payload_limit: args.payload_limit,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        api_key: args.api_key,
        ner_stride: args.ner_stride,
        max_new_tokens: args.max_new_tokens,
    };
    let state = Arc::new(AppState::load(&args.model_dirs, options)?);
    let addr = SocketAddr::new(args.host, args.port);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!("listening on http://{}", listener.local_addr()?);
        hone_serve::serve(listener, state, hone_serve::termination()).await
    })?;
    tracing::info!("stopped");
    Ok(())
}
