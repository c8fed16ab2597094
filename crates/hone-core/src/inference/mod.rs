//! Inference pipelines: from text to embeddings, labels, entities or generated text.

pub mod classify;
pub mod embed;
pub mod generate;
pub mod ner;
pub mod translate;
