//! Models: the building blocks ([`layers`]), the architectures built from them (BERT, GPT-2,
//! the encoder-decoder Transformer), task heads, and loading Hugging Face checkpoints.

pub mod bert;
pub mod config;
pub mod gpt2;
pub mod heads;
pub mod layers;
pub mod loading;
pub mod params;
pub mod transformer;

pub use bert::BertModel;
pub use config::{ArchConfig, BertConfig, Gpt2Config, ModelConfig};
pub use gpt2::Gpt2LmHeadModel;
pub use heads::{
    BertForPreTraining, BertForSequenceClassification, BertForTokenClassification, ProblemType,
};
pub use layers::TrainingMode;
pub use loading::{LoadedModel, ModelDir, TaskModel};
pub use params::ParamStore;
pub use transformer::{EncoderDecoder, EncoderDecoderConfig};
