//! hone: build, pretrain, fine-tune, evaluate and serve Transformer models in Rust, on candle.
//!
//! Rooms, with dependencies pointing one way (cli -> pipelines -> model -> layers -> ops):
//! - [`ops`]: differentiable fused tensor ops and losses candle lacks;
//! - [`model`]: layers, architectures (BERT, GPT-2, encoder-decoder), heads, checkpoints;
//! - [`tokenization`]: the `tokenizers` crate behind our padding/truncation policy;
//! - [`inference`]: pipelines (embeddings, ...);
//! - [`io`]: atomic writes and file helpers.

pub mod inference;
pub mod io;
pub mod model;
pub mod ops;
pub mod recipe;
pub mod tasks;
pub mod tokenization;
pub mod training;

/// Let cuBLAS run f32 matrix products in TF32 on Ampere and newer GPUs (PyTorch's
/// `allow_tf32`): much faster, with a 10-bit mantissa. No effect on the CPU.
pub fn set_tf32(enabled: bool) {
    candle_core::cuda::set_gemm_reduced_precision_f32(enabled);
}

/// Pick the compute device from a `--device` string: `cpu`, `cuda` or `cuda:N`.
pub fn device_from_str(spec: &str) -> anyhow::Result<candle_core::Device> {
    match spec {
        "cpu" => Ok(candle_core::Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid device `{s}`"))?,
                None => 0,
            };
            if !candle_core::utils::cuda_is_available() {
                anyhow::bail!("device `{s}` requested but this hone was built without CUDA (rebuild with `--features cuda`)")
            }
            Ok(candle_core::Device::new_cuda(ordinal)?)
        }
        other => anyhow::bail!("unknown device `{other}` (use cpu, cuda or cuda:N)"),
    }
}
