//! Fused f32 CPU kernels for [`super`]'s ops, forward and backward, parallel over rows.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage,
    Tensor,
};
use rayon::prelude::*;

/// Borrow a CPU f32 storage as a contiguous slice.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{what}: expected f32 storage, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{what}: input must be contiguous"),
    }
}

/// Run `f` on a tensor's contiguous f32 data without copying it.
pub(super) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => f(f32_slice(s, layout, "fused op")?),
        _ => bail!("fused CPU op called on a non-CPU tensor"),
    }
}

fn last_dim(shape: &Shape) -> usize {
    shape.dims().last().copied().unwrap_or(1).max(1)
}

fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &Device::Cpu)
}

// ----------------------------------------------------------------------------------------
// Softmax

/// Row-wise softmax over the last dimension.
pub(super) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "hone-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_slice(s, l, self.name())?;
        let n = last_dim(l.shape());
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(n)
            .zip(src.par_chunks(n))
            .for_each(|(d, s)| simd_dispatch!(softmax_row(s, d)));
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(dy, &SoftmaxBackward)?))
    }
}

#[inline(always)]
pub(super) fn softmax_row(s: &[f32], d: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        // A fully masked row: attend nowhere rather than produce NaN.
        d.fill(0.0);
        return;
    }
    for (d, &s) in d.iter_mut().zip(s) {
        *d = exp(s - max);
    }
    let inv = 1.0 / sum8(d);
    d.iter_mut().for_each(|d| *d *= inv);
}

/// Sum with eight partial sums, so that it vectorises.
#[inline(always)]
pub(super) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().sum::<f32>() + tail
}

/// Dot product with eight partial sums, so that it vectorises.
#[inline(always)]
pub(super) fn dot8(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// dx = y * (dy - sum(dy * y)) row by row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "hone-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_slice(ys, yl, self.name())?;
        let g = f32_slice(gs, gl, self.name())?;
        let n = last_dim(yl.shape());
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(n)
            .zip(y.par_chunks(n).zip(g.par_chunks(n)))
            .for_each(|(dx, (y, g))| {
                simd_dispatch!({
                    let dot = dot8(y, g);
                    for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                        *dx = y * (g - dot);
                    }
                })
            });
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

// ----------------------------------------------------------------------------------------
// LayerNorm

/// LayerNorm over the last dimension with affine weight and bias.
pub(super) struct LayerNorm {
    pub eps: f32,
}

/// Mean and 1/std of one row, two-pass for accuracy (eight partial sums, so it vectorises).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum8(x) / n;
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    let var = (acc.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "hone-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let w = f32_slice(ws, wl, "layer-norm weight")?;
        let b = f32_slice(bs, bl, "layer-norm bias")?;
        let n = last_dim(xl.shape());
        if w.len() != n || b.len() != n {
            bail!(
                "layer-norm: weight {} / bias {} do not match hidden size {n}",
                w.len(),
                b.len()
            )
        }
        let mut y = vec![0f32; x.len()];
        let eps = self.eps;
        let chunk_rows = (ELEMWISE_CHUNK / n).max(1);
        y.par_chunks_mut(n * chunk_rows)
            .zip(x.par_chunks(n * chunk_rows))
            .for_each(|(y, x)| {
                simd_dispatch!(for (y, x) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                    let (mean, rstd) = row_stats(x, eps);
                    for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                        *y = (x - mean) * rstd * w + b;
                    }
                })
            });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(candle_core::D::Minus1)?;
        let eps = self.eps;
        let (dx, dw, db) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(dy, |dy| Ok(layer_norm_backward(x, w, dy, n, eps)))
            })
        })?;
        let wshape = w.shape().clone();
        Ok((
            Some(cpu_tensor(dx, x.shape())?),
            Some(cpu_tensor(dw, &wshape)?),
            Some(cpu_tensor(db, &wshape)?),
        ))
    }
}

/// Gradients of LayerNorm: with xhat = (x - mean) * rstd and g = dy * w,
/// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dw = sum(dy * xhat), db = sum(dy).
fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    n: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / n;
    let mut dx = vec![0f32; x.len()];
    // Rows are processed in chunks; each chunk keeps its own dw/db partial sums.
    let chunk_rows = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(n * chunk_rows)
        .zip(
            x.par_chunks(n * chunk_rows)
                .zip(dy.par_chunks(n * chunk_rows)),
        )
        .map(|(dx, (x, dy))| {
            let mut dw = vec![0f32; n];
            let mut db = vec![0f32; n];
            let mut xhat = vec![0f32; n];
            simd_dispatch!(
                for ((dx, x), dy) in dx.chunks_mut(n).zip(x.chunks(n)).zip(dy.chunks(n)) {
                    let (mean, rstd) = row_stats(x, eps);
                    for i in 0..n {
                        xhat[i] = (x[i] - mean) * rstd;
                        dw[i] += dy[i] * xhat[i];
                        db[i] += dy[i];
                    }
                    // g = dy * w, reduced with eight partial sums.
                    let (mut sg, mut sgx) = ([0f32; 8], [0f32; 8]);
                    let full = n / 8 * 8;
                    for c in (0..full).step_by(8) {
                        for j in 0..8 {
                            let g = dy[c + j] * w[c + j];
                            sg[j] += g;
                            sgx[j] += g * xhat[c + j];
                        }
                    }
                    let (mut sum_g, mut sum_gx) = (sg.iter().sum::<f32>(), sgx.iter().sum::<f32>());
                    for i in full..n {
                        let g = dy[i] * w[i];
                        sum_g += g;
                        sum_gx += g * xhat[i];
                    }
                    let (mg, mgx) = (sum_g / n as f32, sum_gx / n as f32);
                    for i in 0..n {
                        dx[i] = rstd * (dy[i] * w[i] - mg - xhat[i] * mgx);
                    }
                }
            );
            (dw, db)
        })
        .collect();
    let mut dw = vec![0f32; n];
    let mut db = vec![0f32; n];
    for (pw, pb) in partials {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}

// ----------------------------------------------------------------------------------------
// GELU

/// GELU, exact (erf) or with the tanh approximation.
pub(super) struct Gelu {
    pub tanh: bool,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
fn gelu_value(x: f32, use_tanh: bool) -> f32 {
    if use_tanh {
        let t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
        0.5 * x * (1.0 + t)
    } else {
        0.5 * x * (1.0 + erf(x * INV_SQRT_2))
    }
}

#[inline(always)]
fn gelu_derivative(x: f32, use_tanh: bool) -> f32 {
    if use_tanh {
        let inner = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
        let t = tanh(inner);
        let dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner
    } else {
        let cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2));
        cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x)
    }
}

/// erf(x) as a rational function on [-4, 4] (the f32 approximation of Eigen and XLA; beyond
/// +-4 erf is +-1 in f32). Branch-free, so loops over it vectorise; error about 1e-7.
#[inline(always)]
pub(super) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let p = x * p;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// exp(x) by range reduction to 2^n * exp(r), |r| <= ln2/2, and the Cephes polynomial;
/// relative error about 1e-7, 0 below -87.3. Branch-free, so loops over it vectorise.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    // Round to nearest without a libm call: adding 1.5 * 2^23 pushes the fraction out.
    let n = (xc * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let pow2 = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * pow2
    }
}

/// tanh through [`exp`], branch-free.
#[inline(always)]
fn tanh(z: f32) -> f32 {
    let e = exp(2.0 * z.clamp(-20.0, 20.0));
    1.0 - 2.0 / (e + 1.0)
}

/// Run a slice kernel compiled for the best instruction set the CPU has: the loops in
/// this file are written branch-free so that LLVM vectorises them for AVX2/AVX-512.
macro_rules! simd_dispatch {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
            unsafe fn v4<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v3<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if *$crate::ops::cpu::HAS_AVX512 {
                // SAFETY: the CPU has the features (checked at run time).
                unsafe { v4(|| $body) }
            } else if *$crate::ops::cpu::HAS_AVX2 {
                // SAFETY: as above.
                unsafe { v3(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}
pub(crate) use simd_dispatch;

#[cfg(target_arch = "x86_64")]
pub(super) static HAS_AVX512: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
});
#[cfg(target_arch = "x86_64")]
pub(super) static HAS_AVX2: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
});

const ELEMWISE_CHUNK: usize = 4096;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "hone-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let tanh = self.tanh;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(ELEMWISE_CHUNK)
            .zip(x.par_chunks(ELEMWISE_CHUNK))
            .for_each(|(y, x)| {
                simd_dispatch!(if tanh {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = gelu_value(x, true);
                    }
                } else {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = gelu_value(x, false);
                    }
                })
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let tanh = self.tanh;
        let dx = with_f32(x, |x| {
            with_f32(dy, |dy| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(ELEMWISE_CHUNK)
                    .zip(
                        x.par_chunks(ELEMWISE_CHUNK)
                            .zip(dy.par_chunks(ELEMWISE_CHUNK)),
                    )
                    .for_each(|(dx, (x, dy))| {
                        simd_dispatch!(if tanh {
                            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                                *dx = dy * gelu_derivative(x, true);
                            }
                        } else {
                            for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                                *dx = dy * gelu_derivative(x, false);
                            }
                        })
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}

// ----------------------------------------------------------------------------------------
// Residual add after dropout: y = x + h * keep

/// `x + h * keep` element-wise; `keep` (no gradient) is the dropout keep-mask.
pub(super) struct ResidualAdd {
    pub keep: Option<Tensor>,
}

impl CustomOp2 for ResidualAdd {
    fn name(&self) -> &'static str {
        "hone-residual-add"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        hs: &CpuStorage,
        hl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let h = f32_slice(hs, hl, self.name())?;
        if x.len() != h.len() {
            bail!(
                "hone-residual-add: {:?} and {:?} differ",
                xl.shape(),
                hl.shape()
            )
        }
        let mut y = vec![0f32; x.len()];
        let mut run = |keep: Option<&[f32]>| {
            y.par_chunks_mut(ELEMWISE_CHUNK)
                .enumerate()
                .for_each(|(c, y)| {
                    let r = c * ELEMWISE_CHUNK..c * ELEMWISE_CHUNK + y.len();
                    let (x, h) = (&x[r.clone()], &h[r.clone()]);
                    simd_dispatch!(match keep {
                        Some(k) => {
                            for (((y, &x), &h), &k) in y.iter_mut().zip(x).zip(h).zip(&k[r]) {
                                *y = x + h * k;
                            }
                        }
                        None => {
                            for ((y, &x), &h) in y.iter_mut().zip(x).zip(h) {
                                *y = x + h;
                            }
                        }
                    })
                });
        };
        match &self.keep {
            Some(k) => with_f32(k, |k| {
                if k.len() != x.len() {
                    bail!(
                        "hone-residual-add: mask has {} elements, not {}",
                        k.len(),
                        x.len()
                    )
                }
                run(Some(k));
                Ok(())
            })?,
            None => run(None),
        }
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        h: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dh = match &self.keep {
            None => dy.clone(),
            Some(k) => {
                let dh = with_f32(dy, |dy| {
                    with_f32(k, |k| {
                        let mut dh = vec![0f32; dy.len()];
                        dh.par_chunks_mut(ELEMWISE_CHUNK)
                            .zip(
                                dy.par_chunks(ELEMWISE_CHUNK)
                                    .zip(k.par_chunks(ELEMWISE_CHUNK)),
                            )
                            .for_each(|(dh, (dy, k))| {
                                simd_dispatch!(for ((dh, &g), &k) in dh.iter_mut().zip(dy).zip(k) {
                                    *dh = g * k;
                                })
                            });
                        Ok(dh)
                    })
                })?;
                cpu_tensor(dh, h.shape())?
            }
        };
        Ok((Some(dy.clone()), Some(dh)))
    }
}

// ----------------------------------------------------------------------------------------
// Linear: y = x W^T + b in one GEMM that starts from the bias

/// `x [N, in]` times the weight (`[out, in]`, or `[in, out]` when `transposed`) plus an
/// optional bias, with the bias written first and the product accumulated onto it.
pub(super) struct Linear {
    pub transposed: bool,
}

fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    // Small products are faster on one thread than split across the pool.
    if threads > 1 && m * n * k >= 32 * 32 * 32 * 4 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

impl Linear {
    fn forward(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (xs, ws) else {
            bail!("hone-linear: expected f32 inputs")
        };
        // Leading dimensions fold into rows; beyond 2-d the input must be contiguous.
        let dims = xl.shape().dims();
        let (n, k, xrs, xcs) = match (dims, xl.stride()) {
            ([n, k], [rs, cs]) => (*n, *k, *rs, *cs),
            ([.., k], _) if dims.len() > 2 && xl.is_contiguous() => {
                (xl.shape().elem_count() / (*k).max(1), *k, *k, 1)
            }
            _ => bail!(
                "hone-linear: input must be 2-d or contiguous, got {:?}",
                xl.shape()
            ),
        };
        let (w0, w1) = wl.shape().dims2()?;
        let (out, wk) = if self.transposed { (w1, w0) } else { (w0, w1) };
        if wk != k {
            bail!("hone-linear: input has {k} features, the weight expects {wk}")
        }
        let [wrs, wcs] = wl.stride() else {
            bail!("hone-linear: weight must be 2-d")
        };
        // rhs is the k x out matrix W^T (or W when stored transposed).
        let (rrs, rcs) = if self.transposed {
            (*wrs, *wcs)
        } else {
            (*wcs, *wrs)
        };
        let mut y = match bias {
            Some(b) => {
                if b.len() != out {
                    bail!("hone-linear: bias has {} entries, expected {out}", b.len())
                }
                let mut y = Vec::with_capacity(n * out);
                for _ in 0..n {
                    y.extend_from_slice(b);
                }
                y
            }
            None => vec![0f32; n * out],
        };
        if n > 0 && out > 0 {
            // SAFETY: the strides and sizes describe memory inside `x`, `w` and `y`.
            unsafe {
                par_gemm(
                    (n, out, k),
                    (y.as_mut_ptr(), out, bias.is_some()),
                    (x[xl.start_offset()..].as_ptr(), xrs, xcs),
                    (w[wl.start_offset()..].as_ptr(), rrs, rcs),
                )
            }
        }
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 2") = out;
        Ok((CpuStorage::F32(y), Shape::from(out_dims)))
    }

    /// `dx = dy R^T` and the weight's gradient (`dy^T x`, or `x^T dy` when stored
    /// transposed), each one GEMM over strided operands: no transposed copies.
    fn grads(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = x.dim(candle_core::D::Minus1)?;
        let n = x.elem_count() / k.max(1);
        let (w0, w1) = w.dims2()?;
        let out = if self.transposed { w1 } else { w0 };
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(dy, |dy| {
                    let mut dx = vec![0f32; n * k];
                    let mut dw = vec![0f32; out * k];
                    if n > 0 && out > 0 && k > 0 {
                        // R^T is [out, k]: W itself, or W^T when stored [k, out].
                        let (rt_rs, rt_cs) = if self.transposed { (1, out) } else { (k, 1) };
                        // SAFETY: all operands are contiguous buffers of the sizes given.
                        unsafe {
                            par_gemm(
                                (n, k, out),
                                (dx.as_mut_ptr(), k, false),
                                (dy.as_ptr(), out, 1),
                                (w.as_ptr(), rt_rs, rt_cs),
                            );
                            if self.transposed {
                                // dW [k, out] = x^T dy
                                par_gemm(
                                    (k, out, n),
                                    (dw.as_mut_ptr(), out, false),
                                    (x.as_ptr(), 1, k),
                                    (dy.as_ptr(), out, 1),
                                );
                            } else {
                                // dW [out, k] = dy^T x
                                par_gemm(
                                    (out, k, n),
                                    (dw.as_mut_ptr(), k, false),
                                    (dy.as_ptr(), 1, out),
                                    (x.as_ptr(), k, 1),
                                );
                            }
                        }
                    }
                    Ok((dx, dw))
                })
            })
        })?;
        Ok((cpu_tensor(dx, x.shape())?, cpu_tensor(dw, w.shape())?))
    }
}

/// `dst[m, n] (+)= lhs[m, k] * rhs[k, n]` with the pool's threads; strides as (row, column).
/// gemm splits the output, never the sum over `k`, so the result does not depend on the
/// number of threads or their scheduling.
unsafe fn par_gemm(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, accumulate): (*mut f32, usize, bool),
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        if accumulate { 1.0 } else { 0.0 },
        1.0,
        false,
        false,
        false,
        gemm_parallelism(m, n, k),
    )
}

/// Column sums of a row-major `[rows, cols]` matrix (the bias gradient), parallel over
/// blocks of columns; each column is summed in row order, so the result is deterministic.
pub(super) fn column_sums(x: &[f32], cols: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let mut out = vec![0f32; cols];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(BLOCK).enumerate().for_each(|(bi, acc)| {
        let (c0, w) = (bi * BLOCK, acc.len());
        simd_dispatch!(for row in x.chunks_exact(cols) {
            for (a, &v) in acc.iter_mut().zip(&row[c0..c0 + w]) {
                *a += v;
            }
        })
    });
    out
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "hone-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.forward(xs, xl, ws, wl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "hone-linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let b = f32_slice(bs, bl, "hone-linear bias")?;
        self.forward(xs, xl, ws, wl, Some(b))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        let out = dw.dim(if self.transposed { 1 } else { 0 })?;
        let db = with_f32(dy, |dy| Ok(column_sums(dy, out)))?;
        Ok((Some(dx), Some(dw), Some(cpu_tensor(db, &Shape::from(out))?)))
    }
}

// ----------------------------------------------------------------------------------------
// Attention: softmax(Q K^T * scale + mask) [* dropout] V, one (batch, head) at a time

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

/// Fused attention over `q [B, H, Tq, D]`, `k`/`v` `[B, H, Tk, D]` (any strides). The output
/// is stored `[B, Tq, H, D]`, the layout the output projection reads. `mask` (additive) and
/// `dropout` (multiplicative, already scaled) are broadcast to `[B, H, Tq, Tk]`; neither
/// receives a gradient. `input` says how q, k and v arrive (and so the gradients' layout).
pub(super) struct Attention {
    pub scale: f32,
    pub mask: Option<Tensor>,
    pub dropout: Option<Tensor>,
    pub input: QkvInput,
}

/// How the fused attention op receives q, k and v.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum QkvInput {
    /// Three `[B, H, T, D]` tensors, any strides; gradients come back contiguous.
    Heads,
    /// Three `[B, T, H * D]` tensors (the projections' output, heads not split); the
    /// gradients come back `[B, T, H * D]`, so neither a split nor a merge is needed.
    Merged { heads: usize },
    /// One `[B, T, 3 * H * D]` tensor holding q, k and v side by side (GPT-2's `c_attn`).
    Packed { heads: usize },
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
    fn dims(&self, ql: &Shape, kl: &Shape, vl: &Shape) -> Result<Dims> {
        let (b, h, tq, d) = ql.dims4()?;
        let (kb, kh, tk, kd) = kl.dims4()?;
        if (kb, kh, kd) != (b, h, d) || vl.dims4()? != (b, h, tk, d) {
            bail!("hone-attention: q {ql:?}, k {kl:?}, v {vl:?} do not match")
        }
        Ok(Dims { b, h, tq, tk, d })
    }

    /// Dimensions for `[B, T, H * D]` inputs split into `heads`.
    fn merged_dims(heads: usize, ql: &Shape, kl: &Shape, vl: &Shape) -> Result<Dims> {
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
    fn packed_dims(heads: usize, l: &Shape) -> Result<Dims> {
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
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
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
        let (dm, q, k, v) = match self.input {
            QkvInput::Heads => (
                self.dims(ql.shape(), kl.shape(), vl.shape())?,
                View4::new(qs, ql, "attention q")?,
                View4::new(ks, kl, "attention k")?,
                View4::new(vs, vl, "attention v")?,
            ),
            QkvInput::Merged { heads } => {
                let dm = Self::merged_dims(heads, ql.shape(), kl.shape(), vl.shape())?;
                let d = dm.d;
                (
                    dm,
                    split_view(qs, ql, d, 0)?,
                    split_view(ks, kl, d, 0)?,
                    split_view(vs, vl, d, 0)?,
                )
            }
            QkvInput::Packed { .. } => bail!("hone-attention: packed qkv is a one-input op"),
        };
        let out = self.run_forward(&dm, &q, &k, &v)?;
        let shape = match self.input {
            QkvInput::Heads => Shape::from((dm.b, dm.tq, dm.h, dm.d)),
            _ => Shape::from((dm.b, dm.tq, dm.h * dm.d)),
        };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let merged = match self.input {
            QkvInput::Heads => None,
            QkvInput::Merged { heads } => Some(heads),
            QkvInput::Packed { .. } => bail!("hone-attention: packed qkv is a one-input op"),
        };
        let dm = match merged {
            None => self.dims(q.shape(), k.shape(), v.shape())?,
            Some(heads) => Self::merged_dims(heads, q.shape(), k.shape(), v.shape())?,
        };
        let (b, h, tq, tk, d) = (dm.b, dm.h, dm.tq, dm.tk, dm.d);
        let mut dq = vec![0f32; b * h * tq * d];
        let mut dk = vec![0f32; b * h * tk * d];
        let mut dv = vec![0f32; b * h * tk * d];
        // [B, H, T, D] gradients for split heads, [B, T, H * D] for merged ones.
        let dst = |buf: &mut Vec<f32>, t: usize| match merged {
            None => Dst {
                ptr: SendPtr(buf.as_mut_ptr()),
                bs: h * t * d,
                hs: t * d,
                rs: d,
            },
            Some(_) => Dst {
                ptr: SendPtr(buf.as_mut_ptr()),
                bs: t * h * d,
                hs: d,
                rs: h * d,
            },
        };
        let dsts = [dst(&mut dq, tq), dst(&mut dk, tk), dst(&mut dv, tk)];
        let view = |t: &Tensor, what: &str, f: &mut dyn FnMut(View4) -> Result<()>| {
            let (storage, layout) = t.storage_and_layout();
            match (&*storage, merged) {
                (Storage::Cpu(s), None) => f(View4::new(s, layout, what)?),
                (Storage::Cpu(s), Some(_)) => f(split_view(s, layout, d, 0)?),
                _ => bail!("{what}: fused CPU op called on a non-CPU tensor"),
            }
        };
        with_f32(dy, |dy| {
            view(q, "attention q", &mut |qv| {
                view(k, "attention k", &mut |kv| {
                    view(v, "attention v", &mut |vv| {
                        self.run_backward(&dm, &qv, &kv, &vv, dy, dsts)
                    })
                })
            })
        })?;
        let shape = |t: usize| match merged {
            None => Shape::from((b, h, t, d)),
            Some(_) => Shape::from((b, t, h * d)),
        };
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
        let QkvInput::Packed { heads } = self.input else {
            bail!("hone-attention: only packed qkv is a one-input op")
        };
        let dm = Self::packed_dims(heads, l.shape())?;
        let hd = dm.h * dm.d;
        let q = split_view(s, l, dm.d, 0)?;
        let k = split_view(s, l, dm.d, hd)?;
        let v = split_view(s, l, dm.d, 2 * hd)?;
        let out = self.run_forward(&dm, &q, &k, &v)?;
        Ok((CpuStorage::F32(out), Shape::from((dm.b, dm.tq, hd))))
    }

    fn bwd(&self, qkv: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let QkvInput::Packed { heads } = self.input else {
            bail!("hone-attention: only packed qkv is a one-input op")
        };
        let dm = Self::packed_dims(heads, qkv.shape())?;
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
