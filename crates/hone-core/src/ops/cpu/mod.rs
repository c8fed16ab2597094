//! Fused f32 CPU kernels for [`super`]'s ops, forward and backward, parallel over rows.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, Device, Layout, Result, Shape, Storage, Tensor};

mod attention;
mod gelu;
pub(crate) mod int8;
mod layer_norm;
mod linear;
pub(crate) mod packed;
mod residual;
mod simd;
mod softmax;

pub(crate) use attention::*;
pub(crate) use gelu::*;
pub(crate) use layer_norm::*;
pub(crate) use linear::*;
pub(crate) use residual::*;
pub(crate) use simd::*;
pub(crate) use softmax::*;

/// Elements per parallel task of the element-wise kernels (16 KiB of f32 per operand).
pub(crate) const ELEMWISE_CHUNK: usize = 4096;

/// Borrow a CPU f32 storage as a contiguous slice.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32 storage, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: input must be contiguous"),
    }
}

/// Run `f` on a tensor's contiguous f32 data without copying it.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(f32_slice(s, layout, "fused op")?),
        _ => bail!("fused CPU op called on a non-CPU tensor"),
    }
}

pub(crate) fn last_dim(shape: &Shape) -> usize {
    shape.dims().last().copied().unwrap_or(1).max(1)
}

pub(crate) fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &Device::Cpu)
}
