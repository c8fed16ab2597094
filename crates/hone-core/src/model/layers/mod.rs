//! Transformer building blocks, each a small struct with a `forward`, written on candle ops.

mod attention;
mod block;
mod dropout;
mod embedding;
mod feed_forward;
mod linear;
mod mode;
mod norm;

pub use attention::{
    causal_mask, onnx_causal_mask, onnx_padding_mask, padding_mask, MultiHeadAttention, QkvLayout,
};
pub use block::{ResidualOrder, TransformerBlock};
pub use dropout::Dropout;
pub use embedding::{
    onnx_position_ids, position_ids, sinusoidal_table, sinusoidal_table_halves, Embedding,
    SinusoidalPositionalEncoding,
};
pub use feed_forward::{Activation, FeedForward};
pub use linear::Linear;
pub use mode::{AutocastScope, ModelMode, RouteScope};
pub use norm::LayerNorm;
// The cache's layout is the attention op's business; the models hold one per layer.
pub use crate::ops::KvCache;
