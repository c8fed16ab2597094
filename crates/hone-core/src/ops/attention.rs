//! Multi-head attention as one op: `softmax(Q K^T / sqrt(D) + mask) [* dropout] V` over the
//! projections' output, heads split and merged inside. The model says what to attend over;
//! this module picks the layout and the kernel ([`Kernel::select`]).

use candle_core::{bail, DType, Device, Result, Tensor};

use super::{autocast_for, cpu, scaled_masked_softmax, use_fused};

/// What attention runs over: the projections' output, heads not yet split.
#[derive(Debug, Clone)]
pub enum Qkv {
    /// `q [B, Tq, H * D]`, `k`/`v` `[B, Tk, H * D]`; Tk differs from Tq when k and v come
    /// from an encoder's memory or a cache.
    Separate { q: Tensor, k: Tensor, v: Tensor },
    /// One `[B, T, 3 * H * D]` tensor, q, k and v side by side (GPT-2's `c_attn`).
    Packed(Tensor),
}

impl Qkv {
    /// `(B, Tq, Tk, H * D)`.
    fn dims(&self) -> Result<(usize, usize, usize, usize)> {
        match self {
            Qkv::Separate { q, k, .. } => {
                let (b, tq, width) = q.dims3()?;
                Ok((b, tq, k.dim(1)?, width))
            }
            Qkv::Packed(qkv) => {
                let (b, t, w) = qkv.dims3()?;
                if w % 3 != 0 {
                    bail!("attention: packed qkv width {w} is not 3 x H x D")
                }
                Ok((b, t, t, w / 3))
            }
        }
    }

    /// The first input: its device and dtype are the op's.
    fn first(&self) -> &Tensor {
        match self {
            Qkv::Separate { q, .. } | Qkv::Packed(q) => q,
        }
    }

    /// q, k and v as `[B, T, H * D]` tensors (views into a packed input).
    fn split(self) -> Result<(Tensor, Tensor, Tensor)> {
        match self {
            Qkv::Separate { q, k, v } => Ok((q, k, v)),
            Qkv::Packed(qkv) => {
                let width = qkv.dim(2)? / 3;
                Ok((
                    qkv.narrow(2, 0, width)?,
                    qkv.narrow(2, width, width)?,
                    qkv.narrow(2, 2 * width, width)?,
                ))
            }
        }
    }
}

/// A source of dropout keep-masks (the model's `Dropout` layer): a mask of `shape` scaled by
/// 1/(1-p), or None where dropout is off. Drawing it is the op's business, so that the
/// random stream is consumed in one place, in the probabilities' shape `[B, H, Tq, Tk]`.
pub trait KeepMask {
    fn keep_mask(&self, shape: &[usize], dtype: DType, device: &Device) -> Result<Option<Tensor>>;
}

/// Keys and values of the positions decoded so far, each `[B, T, H * D]`: the projections'
/// layout, so the cached path runs the same kernel as the uncached one.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dim(1).unwrap_or(0))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keep batch rows `rows` (u32 `[N]`, repeats allowed) in that order: beam search moves
    /// each surviving hypothesis's keys and values to its new slot.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        if let Some((k, v)) = self.kv.take() {
            self.kv = Some((
                k.index_select(rows, 0)?.detach(),
                v.index_select(rows, 0)?.detach(),
            ));
        }
        Ok(())
    }

    /// Appends `k`/`v` `[B, T, H * D]`; returns all positions cached so far. The cache
    /// serves decoding only: it keeps values, not the graph that made them (else every
    /// step's concatenation would hold all earlier ones alive, memory quadratic in length).
    fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            None => (k, v),
        };
        self.kv = Some((k.detach(), v.detach()));
        Ok((k, v))
    }
}

/// Multi-head attention over `qkv` split into `heads` heads: `softmax(Q K^T / sqrt(D) + mask)
/// [* keep] V`, returning `[B, Tq, H * D]` (heads merged), with gradients for q, k and v.
/// `mask` is additive and broadcasts to `[B, H, Tq, Tk]`; `dropout` draws the keep-mask of
/// the probabilities. With a `cache`, k and v are appended to it and the queries attend
/// over every cached position. With `autocast`, both products take their operands in that
/// dtype (the softmax stays f32).
pub fn attention(
    qkv: Qkv,
    heads: usize,
    mask: Option<&Tensor>,
    dropout: Option<&dyn KeepMask>,
    cache: Option<&mut KvCache>,
    autocast: Option<DType>,
) -> Result<Tensor> {
    attention_with(None, qkv, heads, mask, dropout, cache, autocast)
}

/// The attention probabilities `softmax(Q K^T / sqrt(D) + mask)` `[B, H, Tq, Tk]` of
/// `qkv` (no cache, no dropout), with gradients: what attention transfer compares.
pub fn attention_probs(qkv: &Qkv, heads: usize, mask: Option<&Tensor>) -> Result<Tensor> {
    let (_, _, _, width) = qkv.dims()?;
    if heads == 0 || width % heads != 0 {
        bail!("attention: width {width} does not split into {heads} heads")
    }
    let (q, k, _) = qkv.clone().split()?;
    // [B, T, H * D] -> [B, H, T, D]
    let split = |t: &Tensor| -> Result<Tensor> {
        let (b, t_, _) = t.dims3()?;
        t.reshape((b, t_, heads, width / heads))?
            .transpose(1, 2)?
            .contiguous()
    };
    let scores = split(&q)?.matmul(&split(&k)?.t()?)?;
    scaled_masked_softmax(&scores, 1.0 / ((width / heads) as f64).sqrt(), mask)
}

/// [`attention`] run by `kernel`, or by the one [`Kernel::select`] picks when None (the
/// tests force each kernel to compare them).
pub(crate) fn attention_with(
    kernel: Option<Kernel>,
    qkv: Qkv,
    heads: usize,
    mask: Option<&Tensor>,
    dropout: Option<&dyn KeepMask>,
    cache: Option<&mut KvCache>,
    autocast: Option<DType>,
) -> Result<Tensor> {
    let qkv = match cache {
        Some(cache) => {
            let (q, k, v) = qkv.split()?;
            let (k, v) = cache.append(k, v)?;
            Qkv::Separate { q, k, v }
        }
        None => qkv,
    };
    let (b, tq, tk, width) = qkv.dims()?;
    if heads == 0 || width % heads != 0 {
        bail!("attention: width {width} does not split into {heads} heads")
    }
    let scale = 1.0 / ((width / heads) as f64).sqrt();
    let like = qkv.first();
    let keep = match dropout {
        Some(d) => d.keep_mask(&[b, heads, tq, tk], like.dtype(), like.device())?,
        None => None,
    };
    let autocast = autocast_for(like, autocast);
    let kernel = kernel.unwrap_or_else(|| Kernel::select(&qkv, mask, keep.as_ref(), autocast));
    kernel.run(qkv, heads, scale, mask, keep.as_ref(), autocast)
}

/// The attention implementations. [`Kernel::select`] is the one place that picks one for
/// the inputs' device and precision: a CUDA kernel plugs in there as another variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// [`cpu::Attention`]: f32 CPU tensors, no autocast. One pass per (batch, head) that
    /// reads the heads in place and never materialises the `[B, H, Tq, Tk]` scores (the
    /// backward pass recomputes them).
    CpuFused,
    /// candle primitives, any device and dtype. Under autocast both products take their
    /// operands in the autocast dtype and the softmax stays f32.
    Composite,
}

impl Kernel {
    /// The kernel for these inputs: the fused one on f32 CPU tensors, candle primitives
    /// elsewhere (CUDA, autocast). A CUDA kernel is chosen here for CUDA tensors.
    fn select(
        qkv: &Qkv,
        mask: Option<&Tensor>,
        keep: Option<&Tensor>,
        autocast: Option<DType>,
    ) -> Self {
        let inputs: &[&Tensor] = match qkv {
            Qkv::Separate { q, k, v } => &[q, k, v],
            Qkv::Packed(qkv) => &[qkv],
        };
        let fused = autocast.is_none()
            && inputs.iter().all(|t| use_fused(t))
            && [mask, keep].iter().flatten().all(|t| t.device().is_cpu());
        if fused {
            Kernel::CpuFused
        } else {
            Kernel::Composite
        }
    }

    fn run(
        self,
        qkv: Qkv,
        heads: usize,
        scale: f64,
        mask: Option<&Tensor>,
        keep: Option<&Tensor>,
        autocast: Option<DType>,
    ) -> Result<Tensor> {
        match self {
            Kernel::CpuFused => {
                let (b, tq, tk, _) = qkv.dims()?;
                let op = cpu::Attention {
                    scale: scale as f32,
                    heads,
                    mask: broadcast_probs(mask, (b, heads, tq, tk))?,
                    dropout: broadcast_probs(keep, (b, heads, tq, tk))?,
                };
                match qkv {
                    Qkv::Separate { q, k, v } => q.apply_op3(&k, &v, op),
                    Qkv::Packed(qkv) => qkv.apply_op1(op),
                }
            }
            Kernel::Composite => {
                let (q, k, v) = qkv.split()?;
                let (b, tq, width) = q.dims3()?;
                // [B, T, H * D] -> [B, H, T, D]
                let split = |t: &Tensor| -> Result<Tensor> {
                    let (b, t_, _) = t.dims3()?;
                    t.reshape((b, t_, heads, width / heads))?.transpose(1, 2)
                };
                let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
                let y = composite(&q, &k, &v, scale, mask, keep, autocast)?;
                y.transpose(1, 2)?.reshape((b, tq, width))
            }
        }
    }
}

/// `softmax(q k^T * scale + mask) [* keep] v` over `q [B, H, Tq, D]`, `k`/`v`
/// `[B, H, Tk, D]` in candle primitives; returns `[B, H, Tq, D]`.
fn composite(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
    keep: Option<&Tensor>,
    autocast: Option<DType>,
) -> Result<Tensor> {
    // The products in the autocast dtype if any (to_dtype is free when it is q's own).
    let dtype = autocast.unwrap_or(q.dtype());
    let low = |t: &Tensor| t.contiguous()?.to_dtype(dtype);
    let scores = low(q)?.matmul(&low(k)?.t()?)?.to_dtype(q.dtype())?;
    let probs = scaled_masked_softmax(&scores, scale, mask)?;
    let probs = match keep {
        Some(d) => probs.broadcast_mul(&d.to_dtype(probs.dtype())?)?,
        None => probs,
    };
    probs.to_dtype(dtype)?.matmul(&low(v)?)?.to_dtype(q.dtype())
}

/// An attention mask or dropout mask as f32 broadcast to the probabilities' shape.
fn broadcast_probs(
    t: Option<&Tensor>,
    shape: (usize, usize, usize, usize),
) -> Result<Option<Tensor>> {
    t.map(|t| t.to_dtype(DType::F32)?.broadcast_as(shape))
        .transpose()
}
