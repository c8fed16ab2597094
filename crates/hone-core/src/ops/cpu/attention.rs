//! Attention: softmax(Q K^T * scale + mask) [* dropout] V, one (batch, head) at a time.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::*;

/// A read-only strided view of a 4-d f32 tensor.
#[derive(Clone, Copy)]
struct View4<'a> {
    data: &'a [f32],
    offset: usize,
    stride: [usize; 4],
}

impl<'a> View4<'a> {
    fn new(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Self> {
        let CpuStorage::F32(data) = s else {
            bail!("{what}: expected f32 storage, got {:?}", s.dtype())
        };
        let [a, b, c, d] = l.stride() else {
            bail!("{what}: expected a 4-d tensor, got {:?}", l.shape())
        };
        Ok(Self {
            data,
            offset: l.start_offset(),
            stride: [*a, *b, *c, *d],
        })
    }

    /// Pointer to element (b, h, 0, 0).
    fn at(&self, b: usize, h: usize) -> *const f32 {
        self.data[self.offset + b * self.stride[0] + h * self.stride[1]..].as_ptr()
    }

    fn get(&self, b: usize, h: usize, i: usize, j: usize) -> f32 {
        self.data[self.offset
            + b * self.stride[0]
            + h * self.stride[1]
            + i * self.stride[2]
            + j * self.stride[3]]
    }
}

/// Borrow a CPU tensor's storage and hand `f` a strided view of it.
fn with_view4<R>(t: &Tensor, what: &str, f: impl FnOnce(View4) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(View4::new(s, layout, what)?),
        _ => bail!("{what}: fused CPU op called on a non-CPU tensor"),
    }
}

fn with_opt_view4<R>(
    t: Option<&Tensor>,
    what: &str,
    f: impl FnOnce(Option<View4>) -> Result<R>,
) -> Result<R> {
    match t {
        Some(t) => with_view4(t, what, |v| f(Some(v))),
        None => f(None),
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each parallel task writes a disjoint region through the pointer.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Through a method, so closures capture the wrapper (Send) and not the raw pointer.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst[m, n] = lhs[m, k] * rhs[k, n]` on one thread; strides as (row, column).
#[allow(clippy::too_many_arguments)]
unsafe fn small_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Fused attention over `q [B, Tq, H * D]` and `k`/`v` `[B, Tk, H * D]` (any strides; the
/// heads are read in place, never split), or over one packed `[B, T, 3 * H * D]` input
/// (the one-input op). The output and the gradients come back in the inputs' layout,
/// `[B, T, H * D]`, so neither a split nor a merge of heads costs a copy. `mask` (additive)
/// and `dropout` (multiplicative, already scaled) are broadcast to `[B, H, Tq, Tk]`;
/// neither receives a gradient.
pub(crate) struct Attention {
    pub scale: f32,
    pub heads: usize,
    pub mask: Option<Tensor>,
    pub dropout: Option<Tensor>,
}

struct Dims {
    b: usize,
    h: usize,
    tq: usize,
    tk: usize,
    d: usize,
}

/// Where one input's gradient goes: element (b, h, i, 0) lives at
/// `ptr + b * bs + h * hs + i * rs`, and the `d` values of a row are contiguous.
#[derive(Clone, Copy)]
struct Dst {
    ptr: SendPtr,
    bs: usize,
    hs: usize,
    rs: usize,
}

impl Dst {
    fn at(&self, b: usize, h: usize) -> *mut f32 {
        // SAFETY (of the callers' writes): offsets stay inside the buffer the Dst describes.
        unsafe { self.ptr.get().add(b * self.bs + h * self.hs) }
    }
}

/// A `[B, T, H * D]` layout (columns from `col` on) seen as `[B, H, T, D]`.
fn split_view<'a>(s: &'a CpuStorage, l: &Layout, d: usize, col: usize) -> Result<View4<'a>> {
    let CpuStorage::F32(data) = s else {
        bail!("hone-attention: expected f32 storage, got {:?}", s.dtype())
    };
    let [s0, s1, s2] = l.stride() else {
        bail!("hone-attention: expected a 3-d tensor, got {:?}", l.shape())
    };
    Ok(View4 {
        data,
        offset: l.start_offset() + col * s2,
        stride: [*s0, d * s2, *s1, *s2],
    })
}

impl Attention {
    /// Dimensions for `[B, T, H * D]` inputs.
    fn merged_dims(&self, ql: &Shape, kl: &Shape, vl: &Shape) -> Result<Dims> {
        let heads = self.heads;
        let (b, tq, hd) = ql.dims3()?;
        let (kb, tk, khd) = kl.dims3()?;
        if heads == 0 || hd % heads != 0 || (kb, khd) != (b, hd) || vl.dims3()? != (b, tk, hd) {
            bail!("hone-attention: q {ql:?}, k {kl:?}, v {vl:?} do not split into {heads} heads")
        }
        Ok(Dims {
            b,
            h: heads,
            tq,
            tk,
            d: hd / heads,
        })
    }

    /// Dimensions for one packed `[B, T, 3 * H * D]` input.
    fn packed_dims(&self, l: &Shape) -> Result<Dims> {
        let heads = self.heads;
        let (b, t, w) = l.dims3()?;
        if heads == 0 || w % (3 * heads) != 0 {
            bail!("hone-attention: packed qkv {l:?} does not split into 3 x {heads} heads")
        }
        Ok(Dims {
            b,
            h: heads,
            tq: t,
            tk: t,
            d: w / (3 * heads),
        })
    }

    /// Scores of one (batch, head) into `p`, turned into probabilities row by row.
    #[allow(clippy::too_many_arguments)]
    fn probs(
        &self,
        dm: &Dims,
        q: &View4,
        k: &View4,
        mask: Option<&View4>,
        b: usize,
        h: usize,
        p: &mut [f32],
    ) {
        let (tq, tk, d) = (dm.tq, dm.tk, dm.d);
        // SAFETY: the views' strides describe memory inside their storages; p is tq x tk.
        unsafe {
            small_gemm(
                tq,
                tk,
                d,
                p.as_mut_ptr(),
                tk,
                q.at(b, h),
                q.stride[2],
                q.stride[3],
                k.at(b, h),
                k.stride[3],
                k.stride[2],
            )
        }
        let scale = self.scale;
        simd_dispatch!(for (i, row) in p.chunks_exact_mut(tk).enumerate() {
            match mask {
                Some(m) if m.stride[3] == 1 => {
                    let base = m.offset + b * m.stride[0] + h * m.stride[1] + i * m.stride[2];
                    for (s, &mv) in row.iter_mut().zip(&m.data[base..base + tk]) {
                        *s = *s * scale + mv;
                    }
                }
                Some(m) => {
                    for (j, s) in row.iter_mut().enumerate() {
                        *s = *s * scale + m.get(b, h, i, j);
                    }
                }
                None => row.iter_mut().for_each(|s| *s *= scale),
            }
            let max = max16(row);
            if max == f32::NEG_INFINITY {
                row.fill(0.0);
                continue;
            }
            for s in row.iter_mut() {
                *s = exp(*s - max);
            }
            let inv = 1.0 / sum8(row);
            row.iter_mut().for_each(|s| *s *= inv);
        })
    }

    fn apply_dropout(dm: &Dims, drop: &View4, b: usize, h: usize, p: &mut [f32]) {
        for (i, row) in p.chunks_exact_mut(dm.tk).enumerate() {
            for (j, s) in row.iter_mut().enumerate() {
                *s *= drop.get(b, h, i, j);
            }
        }
    }
}

impl Attention {
    /// The forward pass over views of q, k and v; returns `[B, Tq, H, D]` contiguous.
    fn run_forward(&self, dm: &Dims, q: &View4, k: &View4, v: &View4) -> Result<Vec<f32>> {
        let (b, h, tq, tk, d) = (dm.b, dm.h, dm.tq, dm.tk, dm.d);
        let mut out = vec![0f32; b * tq * h * d];
        let out_ptr = SendPtr(out.as_mut_ptr());
        with_opt_view4(self.mask.as_ref(), "attention mask", |mask| {
            with_opt_view4(self.dropout.as_ref(), "attention dropout", |drop| {
                (0..b * h).into_par_iter().for_each_init(
                    || vec![0f32; tq * tk],
                    |p, bh| {
                        let (bi, hi) = (bh / h, bh % h);
                        self.probs(dm, q, k, mask.as_ref(), bi, hi, p);
                        if let Some(drop) = &drop {
                            Self::apply_dropout(dm, drop, bi, hi, p);
                        }
                        // SAFETY: (bi, hi) owns the rows [bi, :, hi, :] of the output.
                        unsafe {
                            small_gemm(
                                tq,
                                d,
                                tk,
                                out_ptr.get().add(bi * tq * h * d + hi * d),
                                h * d,
                                p.as_ptr(),
                                tk,
                                1,
                                v.at(bi, hi),
                                v.stride[2],
                                v.stride[3],
                            )
                        }
                    },
                );
                Ok(())
            })
        })?;
        Ok(out)
    }

    /// The backward pass: `dy` is `[B, Tq, H, D]` contiguous; dQ, dK and dV are written
    /// through `dst` (each (batch, head) owns disjoint rows of them).
    #[allow(clippy::too_many_arguments)]
    fn run_backward(
        &self,
        dm: &Dims,
        qv: &View4,
        kv: &View4,
        vv: &View4,
        dy: &[f32],
        dst: [Dst; 3],
    ) -> Result<()> {
        let (h, tq, tk, d) = (dm.h, dm.tq, dm.tk, dm.d);
        with_opt_view4(self.mask.as_ref(), "attention mask", |mask| {
            with_opt_view4(self.dropout.as_ref(), "attention dropout", |drop| {
                (0..dm.b * h).into_par_iter().for_each_init(
                    || (vec![0f32; tq * tk], vec![0f32; tq * tk]),
                    |(p, dp), bh| {
                        let (bi, hi) = (bh / h, bh % h);
                        self.probs(dm, qv, kv, mask.as_ref(), bi, hi, p);
                        let dy0 = dy[bi * tq * h * d + hi * d..].as_ptr();
                        // dP' = dO V^T
                        // SAFETY: all pointers stay inside their buffers; task (bi, hi)
                        // owns its rows of dq, dk and dv.
                        unsafe {
                            small_gemm(
                                tq,
                                tk,
                                d,
                                dp.as_mut_ptr(),
                                tk,
                                dy0,
                                h * d,
                                1,
                                vv.at(bi, hi),
                                vv.stride[3],
                                vv.stride[2],
                            )
                        }
                        if let Some(drop) = &drop {
                            // dP = dP' * M; P' = P * M for dV, kept in dp's place after dS
                            // is formed below.
                            Self::apply_dropout(dm, drop, bi, hi, dp);
                        }
                        // dS = P * (dP - rowsum(dP * P)) * scale, into dp.
                        let scale = self.scale;
                        simd_dispatch!(for (pr, dr) in
                            p.chunks_exact(tk).zip(dp.chunks_exact_mut(tk))
                        {
                            let dot = dot8(pr, dr);
                            for (g, &pv) in dr.iter_mut().zip(pr) {
                                *g = pv * (*g - dot) * scale;
                            }
                        });
                        if let Some(drop) = &drop {
                            Self::apply_dropout(dm, drop, bi, hi, p);
                        }
                        let (q0, k0) = (qv.at(bi, hi), kv.at(bi, hi));
                        let [dq, dk, dv] = dst;
                        unsafe {
                            // dV = P'^T dO
                            small_gemm(
                                tk,
                                d,
                                tq,
                                dv.at(bi, hi),
                                dv.rs,
                                p.as_ptr(),
                                1,
                                tk,
                                dy0,
                                h * d,
                                1,
                            );
                            // dQ = dS K
                            small_gemm(
                                tq,
                                d,
                                tk,
                                dq.at(bi, hi),
                                dq.rs,
                                dp.as_ptr(),
                                tk,
                                1,
                                k0,
                                kv.stride[2],
                                kv.stride[3],
                            );
                            // dK = dS^T Q
                            small_gemm(
                                tk,
                                d,
                                tq,
                                dk.at(bi, hi),
                                dk.rs,
                                dp.as_ptr(),
                                1,
                                tk,
                                q0,
                                qv.stride[2],
                                qv.stride[3],
                            );
                        }
                    },
                );
                Ok(())
            })
        })
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "hone-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.merged_dims(ql.shape(), kl.shape(), vl.shape())?;
        let q = split_view(qs, ql, dm.d, 0)?;
        let k = split_view(ks, kl, dm.d, 0)?;
        let v = split_view(vs, vl, dm.d, 0)?;
        let out = self.run_forward(&dm, &q, &k, &v)?;
        Ok((
            CpuStorage::F32(out),
            Shape::from((dm.b, dm.tq, dm.h * dm.d)),
        ))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = self.merged_dims(q.shape(), k.shape(), v.shape())?;
        let (b, h, tq, tk, d) = (dm.b, dm.h, dm.tq, dm.tk, dm.d);
        let mut dq = vec![0f32; b * tq * h * d];
        let mut dk = vec![0f32; b * tk * h * d];
        let mut dv = vec![0f32; b * tk * h * d];
        let dst = |buf: &mut Vec<f32>, t: usize| Dst {
            ptr: SendPtr(buf.as_mut_ptr()),
            bs: t * h * d,
            hs: d,
            rs: h * d,
        };
        let dsts = [dst(&mut dq, tq), dst(&mut dk, tk), dst(&mut dv, tk)];
        let view = |t: &Tensor, f: &mut dyn FnMut(View4) -> Result<()>| {
            let (storage, layout) = t.storage_and_layout();
            match &*storage {
                Storage::Cpu(s) => f(split_view(s, layout, d, 0)?),
                _ => bail!("hone-attention: fused CPU op called on a non-CPU tensor"),
            }
        };
        with_f32(dy, |dy| {
            view(q, &mut |qv| {
                view(k, &mut |kv| {
                    view(v, &mut |vv| self.run_backward(&dm, &qv, &kv, &vv, dy, dsts))
                })
            })
        })?;
        let shape = |t: usize| Shape::from((b, t, h * d));
        Ok((
            Some(cpu_tensor(dq, &shape(tq))?),
            Some(cpu_tensor(dk, &shape(tk))?),
            Some(cpu_tensor(dv, &shape(tk))?),
        ))
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "hone-attention-packed"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dm = self.packed_dims(l.shape())?;
        let hd = dm.h * dm.d;
        let q = split_view(s, l, dm.d, 0)?;
        let k = split_view(s, l, dm.d, hd)?;
        let v = split_view(s, l, dm.d, 2 * hd)?;
        let out = self.run_forward(&dm, &q, &k, &v)?;
        Ok((CpuStorage::F32(out), Shape::from((dm.b, dm.tq, hd))))
    }

    fn bwd(&self, qkv: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dm = self.packed_dims(qkv.shape())?;
        let (b, h, t, d) = (dm.b, dm.h, dm.tq, dm.d);
        let hd = h * d;
        let mut g = vec![0f32; b * t * 3 * hd];
        let base = SendPtr(g.as_mut_ptr());
        // SAFETY: the offsets stay inside `g`; q, k and v own disjoint column ranges.
        let dst = |col: usize| Dst {
            ptr: SendPtr(unsafe { base.get().add(col) }),
            bs: t * 3 * hd,
            hs: d,
            rs: 3 * hd,
        };
        let dsts = [dst(0), dst(hd), dst(2 * hd)];
        with_f32(dy, |dy| {
            let (storage, layout) = qkv.storage_and_layout();
            let Storage::Cpu(s) = &*storage else {
                bail!("hone-attention: fused CPU op called on a non-CPU tensor")
            };
            let q = split_view(s, layout, d, 0)?;
            let k = split_view(s, layout, d, hd)?;
            let v = split_view(s, layout, d, 2 * hd)?;
            self.run_backward(&dm, &q, &k, &v, dy, dsts)
        })?;
        Ok(Some(cpu_tensor(g, qkv.shape())?))
    }
}
