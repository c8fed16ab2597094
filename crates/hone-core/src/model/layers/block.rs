use candle_core::{Result, Tensor};

use super::{Dropout, FeedForward, KvCache, LayerNorm, MultiHeadAttention};
use crate::onnx;

/// Where LayerNorm sits relative to each residual connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidualOrder {
    /// `x = LN(x + sublayer(x))`: BERT and the original Transformer.
    PostLn,
    /// `x = x + sublayer(LN(x))`: GPT-2.
    PreLn,
}

/// One Transformer layer: self-attention, optional cross-attention over an encoder's
/// memory, and a feed-forward network, each wrapped in dropout + residual + LayerNorm.
#[derive(Debug, Clone)]
pub struct TransformerBlock {
    pub self_attn: MultiHeadAttention,
    pub self_attn_norm: LayerNorm,
    pub cross_attn: Option<(MultiHeadAttention, LayerNorm)>,
    pub ffn: FeedForward,
    pub ffn_norm: LayerNorm,
    pub dropout: Dropout,
    pub order: ResidualOrder,
}

impl TransformerBlock {
    /// `x + dropout(f(LN(x)))` or `LN(x + dropout(f(x)))`.
    fn residual(
        &self,
        x: &Tensor,
        norm: &LayerNorm,
        f: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        match self.order {
            ResidualOrder::PreLn => self.dropout.residual_add(x, &f(&norm.forward(x)?)?),
            ResidualOrder::PostLn => self.dropout.residual_norm(x, &f(x)?, norm),
        }
    }

    pub fn forward(
        &self,
        x: &Tensor,
        self_mask: Option<&Tensor>,
        memory: Option<(&Tensor, Option<&Tensor>)>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let x = self.residual(x, &self.self_attn_norm, |h| {
            self.self_attn.forward(h, None, self_mask, cache)
        })?;
        let x = match (&self.cross_attn, memory) {
            (Some((attn, norm)), Some((memory, memory_mask))) => self.residual(&x, norm, |h| {
                attn.forward(h, Some(memory), memory_mask, None)
            })?,
            (Some(_), None) => candle_core::bail!("a decoder block needs the encoder's memory"),
            (None, _) => x,
        };
        self.residual(&x, &self.ffn_norm, |h| self.ffn.forward(h))
    }

    /// The ONNX twin of [`TransformerBlock::forward`] for an encoder or decoder-only block
    /// (no cross-attention, no cache).
    pub fn onnx(
        &self,
        g: &mut onnx::Graph,
        x: &onnx::Value,
        mask: &onnx::Value,
    ) -> Result<onnx::Value> {
        if self.cross_attn.is_some() {
            let msg = "ONNX export of a block with cross-attention is not supported";
            return Err(candle_core::Error::Msg(msg.into()));
        }
        let x = self.onnx_residual(g, x, &self.self_attn_norm, |g, h| {
            self.self_attn.onnx(g, h, mask)
        })?;
        self.onnx_residual(g, &x, &self.ffn_norm, |g, h| self.ffn.onnx(g, h))
    }

    fn onnx_residual(
        &self,
        g: &mut onnx::Graph,
        x: &onnx::Value,
        norm: &LayerNorm,
        f: impl FnOnce(&mut onnx::Graph, &onnx::Value) -> Result<onnx::Value>,
    ) -> Result<onnx::Value> {
        match self.order {
            ResidualOrder::PreLn => {
                let h = norm.onnx(g, x)?;
                let h = f(g, &h)?;
                Ok(g.add(x, &h))
            }
            ResidualOrder::PostLn => {
                let h = f(g, x)?;
                let h = g.add(x, &h);
                norm.onnx(g, &h)
            }
        }
    }
}
