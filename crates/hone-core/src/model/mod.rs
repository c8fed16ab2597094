//! Models: the building blocks ([`layers`]), the architectures built from them (one module
//! each: [`bert`], [`gpt2`], the encoder-decoder [`marian`]), the [`heads`] put on
//! them (with their registry), and [`Model`]: a network with its parameters, loaded from or
//! saved to a Hugging Face model directory.

pub mod adapter;
pub mod adapter_set;
pub mod bert;
pub mod config;
pub mod gpt2;
pub mod heads;
pub mod layers;
pub mod loading;
pub mod marian;
pub mod params;
pub mod quantization;
pub mod surgery;
pub mod taps;

pub use bert::{
    BertConfig, BertForPreTraining, BertForSequenceClassification, BertForTokenClassification,
    BertModel,
};
pub use config::{ArchConfig, Architecture, ModelConfig, ModelType};
pub use gpt2::{Gpt2Config, Gpt2ForSequenceClassification, Gpt2LmHeadModel, Gpt2Model};
pub use heads::{
    masked_rows, CausalLm, Encoder, EncoderOutput, Head, HeadKind, MaskedLm, Net, NetKind,
    PreTrainingOutput, ProblemType, Seq2SeqLm, Seq2SeqTokens, SequenceClassifier, TokenClassifier,
};
pub use layers::{AutocastScope, ModelMode};
pub use loading::{Model, ModelDir};
pub use marian::{MarianConfig, MarianModel, MarianMtModel, MarianSizes};
pub use params::ParamStore;
