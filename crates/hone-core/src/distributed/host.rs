//! Writable access to a CPU tensor's elements in place, for the MPI collectives. candle
//! hands out mutable storage only to in-place custom ops, so the access rides in one.

use std::cell::RefCell;

use anyhow::{bail, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, InplaceOp1, Layout};

/// A CPU tensor's elements, by type.
pub enum HostBuf<'a> {
    F32(&'a mut [f32]),
    F64(&'a mut [f64]),
    U8(&'a mut [u8]),
    Bf16(&'a mut [half::bf16]),
    F16(&'a mut [half::f16]),
}

type MutFn<'f> = Box<dyn FnOnce(HostBuf<'_>) -> Result<()> + 'f>;

/// Run `f` on the elements of `t` (contiguous, on the CPU), writable in place.
pub fn with_host_mut(
    t: &candle_core::Tensor,
    f: impl FnOnce(HostBuf<'_>) -> Result<()>,
) -> Result<()> {
    if !t.device().is_cpu() {
        bail!("expected a CPU tensor, got one on {:?}", t.device())
    }
    let op = HostOp {
        f: RefCell::new(Some(Box::new(f))),
        result: RefCell::new(None),
    };
    t.inplace_op1(&op)?;
    op.result.into_inner().unwrap_or(Ok(()))
}

struct HostOp<'f> {
    f: RefCell<Option<MutFn<'f>>>,
    result: RefCell<Option<Result<()>>>,
}

impl InplaceOp1 for HostOp<'_> {
    fn name(&self) -> &'static str {
        "hone-collective"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("collective: tensor is not contiguous")
        };
        let buf = match storage {
            CpuStorage::F32(v) => HostBuf::F32(&mut v[a..b]),
            CpuStorage::F64(v) => HostBuf::F64(&mut v[a..b]),
            CpuStorage::U8(v) => HostBuf::U8(&mut v[a..b]),
            CpuStorage::BF16(v) => HostBuf::Bf16(&mut v[a..b]),
            CpuStorage::F16(v) => HostBuf::F16(&mut v[a..b]),
            other => candle_core::bail!("collective: unsupported dtype {:?}", other.dtype()),
        };
        let f = self
            .f
            .borrow_mut()
            .take()
            .expect("the collective runs once");
        // Keep the error's full context (anyhow) rather than candle's string.
        *self.result.borrow_mut() = Some(f(buf));
        Ok(())
    }
}
