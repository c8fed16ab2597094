//! BERT (Devlin et al.): token + position + segment embeddings, a post-LN encoder stack and a
//! tanh pooler over `[CLS]`. Parameter names are Hugging Face's, under the `bert.` prefix.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::config::BertConfig;
use super::layers::{
    padding_mask, position_ids, Dropout, Embedding, FeedForward, LayerNorm, Linear,
    MultiHeadAttention, QkvLayout, ResidualOrder, TrainingMode, TransformerBlock,
};

/// Word, position and token-type embeddings, summed, normalised and dropped out.
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    pub word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    dropout: Dropout,
}

impl BertEmbeddings {
    fn new(vb: VarBuilder, c: &BertConfig, mode: &TrainingMode) -> Result<Self> {
        let std = c.initializer_range;
        Ok(Self {
            word: Embedding::new(vb.pp("word_embeddings"), c.vocab_size, c.hidden_size, std)?,
            position: Embedding::new(
                vb.pp("position_embeddings"),
                c.max_position_embeddings,
                c.hidden_size,
                std,
            )?,
            token_type: Embedding::new(
                vb.pp("token_type_embeddings"),
                c.type_vocab_size,
                c.hidden_size,
                std,
            )?,
            norm: LayerNorm::new(vb.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            dropout: Dropout::new(c.hidden_dropout_prob, mode),
        })
    }

    fn forward(&self, input_ids: &Tensor, token_type_ids: &Tensor) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let positions = position_ids(b, t, 0, input_ids.device())?;
        let x = self.word.forward(input_ids)?
            + self.token_type.forward(token_type_ids)?
            + self.position.forward(&positions)?;
        self.dropout.forward(&self.norm.forward(&x?)?)
    }
}

/// One BERT layer under `encoder.layer.{i}`.
fn bert_layer(vb: VarBuilder, c: &BertConfig, mode: &TrainingMode) -> Result<TransformerBlock> {
    let (h, std) = (c.hidden_size, c.initializer_range);
    let attn = vb.pp("attention");
    let sa = attn.pp("self");
    let qkv = QkvLayout::Separate {
        q: Linear::new(sa.pp("query"), h, h, std)?,
        k: Linear::new(sa.pp("key"), h, h, std)?,
        v: Linear::new(sa.pp("value"), h, h, std)?,
    };
    let self_attn = MultiHeadAttention::new(
        qkv,
        Linear::new(attn.pp("output").pp("dense"), h, h, std)?,
        c.num_attention_heads,
        Dropout::new(c.attention_probs_dropout_prob, mode),
    );
    let ffn = FeedForward::new(
        Linear::new(
            vb.pp("intermediate").pp("dense"),
            h,
            c.intermediate_size,
            std,
        )?,
        Linear::new(vb.pp("output").pp("dense"), c.intermediate_size, h, std)?,
        c.hidden_act,
        None,
    );
    Ok(TransformerBlock {
        self_attn,
        self_attn_norm: LayerNorm::new(attn.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        cross_attn: None,
        ffn,
        ffn_norm: LayerNorm::new(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        dropout: Dropout::new(c.hidden_dropout_prob, mode),
        order: ResidualOrder::PostLn,
    })
}

/// The BERT encoder with an optional pooler; `vb` points at the `bert` prefix.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub layers: Vec<TransformerBlock>,
    pooler: Option<Linear>,
    pub config: BertConfig,
}

/// The encoder's outputs.
pub struct BertOutput {
    /// `[B, T, H]` final hidden states.
    pub sequence: Tensor,
    /// `[B, H]`: tanh(W h_[CLS] + b), when the model has a pooler.
    pub pooled: Option<Tensor>,
}

impl BertModel {
    pub fn new(
        vb: VarBuilder,
        c: &BertConfig,
        with_pooler: bool,
        mode: &TrainingMode,
    ) -> Result<Self> {
        let embeddings = BertEmbeddings::new(vb.pp("embeddings"), c, mode)?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| bert_layer(vb.pp(format!("encoder.layer.{i}")), c, mode))
            .collect::<Result<Vec<_>>>()?;
        let pooler = if with_pooler {
            Some(Linear::new(
                vb.pp("pooler").pp("dense"),
                c.hidden_size,
                c.hidden_size,
                c.initializer_range,
            )?)
        } else {
            None
        };
        Ok(Self {
            embeddings,
            layers,
            pooler,
            config: c.clone(),
        })
    }

    /// `input_ids`, `token_type_ids` and `attention_mask` are `[B, T]` (u32; mask 1/0).
    pub fn forward(
        &self,
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<BertOutput> {
        let mask = padding_mask(attention_mask)?;
        let mut x = self.embeddings.forward(input_ids, token_type_ids)?;
        for layer in &self.layers {
            x = layer.forward(&x, Some(&mask), None, None)?;
        }
        let pooled = match &self.pooler {
            Some(p) => Some(p.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()?),
            None => None,
        };
        Ok(BertOutput {
            sequence: x,
            pooled,
        })
    }
}
