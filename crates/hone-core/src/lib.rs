//! hone-core: the hone library. Build, pretrain, fine-tune, evaluate and use Transformer
//! models in Rust, on candle. The `hone` binary (crate `hone`) is a thin command line over
//! it; a server or any other program can embed it the same way.
//!
//! Rooms, with dependencies pointing one way (tasks, inference -> training -> model ->
//! layers -> ops):
//! - [`ops`]: differentiable fused tensor ops and losses candle lacks (CPU kernels today);
//! - [`model`]: layers, architectures (BERT, GPT-2, encoder-decoder), the head registry,
//!   and [`model::Model`], loaded from and saved to Hugging Face directories;
//! - [`tokenization`]: the `tokenizers` crate behind our padding/truncation; training;
//! - [`training`]: the trainer and its callbacks, optimizers, schedules, precision;
//! - [`tasks`]: per task (text/token classification, pretraining), data to batches, loss,
//!   evaluation; and the typed recipes that configure them ([`recipe`]);
//! - [`inference`]: pipelines from text to embeddings, labels, entities, generated text;
//! - [`runtime`]: devices and the process-wide set-up a program does once;
//! - [`io`]: atomic writes and file helpers.

pub mod distributed;
pub mod export;
pub mod inference;
pub mod io;
pub mod model;
pub mod onnx;
pub mod ops;
pub mod recipe;
pub mod runtime;
pub mod sweep;
pub mod tasks;
pub mod tokenization;
pub mod training;
