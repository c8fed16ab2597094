use crate::onnx;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::linear::weight_init;

/// A lookup table of `vocab` vectors; also serves learned absolute positions and token types.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
    /// PyTorch's `padding_idx`: lookups of this row send it no gradient.
    padding_idx: Option<u32>,
}

impl Embedding {
    pub fn new(vb: VarBuilder, vocab: usize, dim: usize, init_std: f64) -> Result<Self> {
        let weight = vb.get_with_hints((vocab, dim), "weight", weight_init(init_std))?;
        Ok(Self {
            weight,
            padding_idx: None,
        })
    }

    /// The same table whose row `pad` gets no gradient from lookups (`nn.Embedding`'s
    /// `padding_idx`); a tied output projection still trains it.
    pub fn with_padding_idx(self, pad: Option<u32>) -> Self {
        Self {
            padding_idx: pad,
            ..self
        }
    }

    /// The `[vocab, dim]` table (tied LM heads reuse it).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `ids` of any shape -> `[..., dim]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut out_dims = ids.dims().to_vec();
        out_dims.push(self.weight.dim(1)?);
        let ids = ids.flatten_all()?;
        let rows = self.weight.index_select(&ids, 0)?;
        let rows = match self.padding_idx {
            // [N, 1]: 1 where the gradient may flow. Same values, no gradient at pad rows.
            Some(pad) if self.weight.is_variable() => {
                let keep = ids.ne(pad)?.to_dtype(rows.dtype())?.unsqueeze(1)?;
                let stop = (1.0 - &keep)?;
                (rows.broadcast_mul(&keep)? + rows.detach().broadcast_mul(&stop)?)?
            }
            _ => rows,
        };
        rows.reshape(out_dims)
    }

    /// The ONNX twin of [`Embedding::forward`]: int64 `ids` -> `[..., dim]`.
    pub fn onnx(&self, g: &mut onnx::Graph, ids: &onnx::Value) -> Result<onnx::Value> {
        let table = g.weight("embedding", &self.weight)?;
        Ok(g.gather(&table, ids, 0))
    }
}

/// The ONNX twin of [`position_ids`] from 0: `[0, T)` (int64 `[T]`) for `ids [B, T]`,
/// which broadcasts over the batch.
pub fn onnx_position_ids(g: &mut onnx::Graph, ids: &onnx::Value) -> onnx::Value {
    let shape = g.shape(ids);
    let one = g.int(1);
    let t = g.gather(&shape, &one, 0);
    let zero = g.int(0);
    g.range(&zero, &t, &one)
}

/// The fixed encoding of Vaswani et al.: PE(pos, 2i) = sin(pos / 10000^(2i/d)),
/// PE(pos, 2i+1) = cos(pos / 10000^(2i/d)). Returns `[max_len, dim]`.
pub fn sinusoidal_table(max_len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let mut table = vec![0f32; max_len * dim];
    for pos in 0..max_len {
        for i in (0..dim).step_by(2) {
            let angle = pos as f64 / 10000f64.powf(i as f64 / dim as f64);
            table[pos * dim + i] = angle.sin() as f32;
            if i + 1 < dim {
                table[pos * dim + i + 1] = angle.cos() as f32;
            }
        }
    }
    Tensor::from_vec(table, (max_len, dim), device)
}

/// The same sinusoids laid out as Marian (and fairseq) store them: the sines of all
/// frequencies in the first `ceil(dim / 2)` columns, then the cosines. Column `j` of the
/// sine half is sin(pos / 10000^(2j/d)). Computed in f64, stored as f32. `[max_len, dim]`.
pub fn sinusoidal_table_halves(max_len: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let sines = dim.div_ceil(2);
    let mut table = vec![0f32; max_len * dim];
    for pos in 0..max_len {
        for j in 0..dim {
            // Column j of the interleaved table has frequency index j / 2.
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / dim as f64);
            let col = if j % 2 == 0 { j / 2 } else { sines + j / 2 };
            table[pos * dim + col] = if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
    }
    Tensor::from_vec(table, (max_len, dim), device)
}

/// Sinusoidal positions added to token embeddings (no parameters), in Marian's layout.
#[derive(Debug, Clone)]
pub struct SinusoidalPositionalEncoding {
    table: Tensor,
}

impl SinusoidalPositionalEncoding {
    pub fn new(max_len: usize, dim: usize, device: &Device) -> Result<Self> {
        Ok(Self {
            table: sinusoidal_table_halves(max_len, dim, device)?,
        })
    }

    /// `x`: `[batch, seq, dim]`; positions start at `offset` (for cached decoding).
    pub fn forward(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let seq = x.dim(1)?;
        if offset + seq > self.table.dim(0)? {
            candle_core::bail!(
                "sequence of {} tokens exceeds the model's {} positions",
                offset + seq,
                self.table.dim(0)?
            )
        }
        let pe = self.table.narrow(0, offset, seq)?.to_dtype(x.dtype())?;
        x.broadcast_add(&pe.unsqueeze(0)?)
    }
}

/// Position ids `offset..offset+seq` for every row of a batch: `[batch, seq]`.
pub fn position_ids(batch: usize, seq: usize, offset: usize, device: &Device) -> Result<Tensor> {
    Tensor::arange(offset as u32, (offset + seq) as u32, device)?
        .to_dtype(DType::U32)?
        .unsqueeze(0)?
        .repeat((batch, 1))
}
