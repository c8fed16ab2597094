//! Inference GEMM on weights packed once: `y [m, n] = x [m, k] W^T + b`, with the bias (and
//! optionally GELU) applied as the tile leaves the registers.
//!
//! A general GEMM (the `gemm` crate under candle's matmul) re-packs the weight on every call;
//! at batch 1 that copy costs more than the arithmetic (60% of a 12-token MiniLM forward).
//! Here the weight is laid out once in panels of [`NR`] output columns, `[k][NR]` each, so
//! the micro-kernel reads it as one sequential stream; the input is packed per call in
//! blocks of [`MR`] rows, `[k][MR]`, which is cheap (`m k` against `m n k` of work). The
//! AVX-512 micro-kernel keeps an `MR x NR` tile (24 registers) for the whole of `k`, so
//! each output is written once.

use std::ops::Range;

use rayon::prelude::*;

use super::simd::simd_dispatch;

/// Output columns per packed panel (two AVX-512 registers).
pub const NR: usize = 32;
/// Input rows per micro-kernel call.
pub const MR: usize = 12;
/// Rows of the input a parallel task packs and works through (8 micro-blocks: the packed
/// rows, `MC k` floats, stay in L2 while the task walks its panels).
pub(crate) const MC: usize = 8 * MR;

/// What happens to `x W^T + b` before it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    None,
    /// Exact GELU, `y Phi(y)` (BERT's FFN): fused so the intermediate is written once.
    GeluErf,
    /// GELU with the tanh approximation (GPT-2's FFN).
    GeluTanh,
}

/// A weight `[n, k]` packed for [`matmul_packed`]: `ceil(n / NR)` panels of `[k][NR]`,
/// the last one padded with zero columns.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    data: Vec<f32>,
    pub n: usize,
    pub k: usize,
}

impl PackedMatrix {
    /// Packs `w`, stored `[n, k]` (a linear layer's `[out, in]`), or `[k, n]` when
    /// `transposed` (GPT-2's Conv1D).
    pub fn pack(w: &[f32], n: usize, k: usize, transposed: bool) -> Self {
        assert_eq!(w.len(), n * k);
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        if k == 0 {
            return Self { data, n, k };
        }
        data.par_chunks_mut(k * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for c in 0..NR.min(n - p * NR) {
                    let j = p * NR + c;
                    for kk in 0..k {
                        panel[kk * NR + c] = if transposed {
                            w[kk * n + j]
                        } else {
                            w[j * k + kk]
                        };
                    }
                }
            });
        Self { data, n, k }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// `y [m, n] = epilogue(x [m, k] W^T + bias)` for a packed `W`.
pub fn matmul_packed(
    x: &[f32],
    m: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k);
    if let Some(b) = bias {
        assert_eq!(b.len(), n);
    }
    // A few rows (batch 1), which the tasks share by splitting the panels, are packed
    // once, up front; more rows are packed by the task that owns them, so that they stay
    // in that core's cache (10% faster at 4096 rows than packing them all first).
    let shared = (m <= MC).then(|| {
        let mut a = PACKED_ROWS.with_borrow_mut(std::mem::take);
        pack_rows(x, k, &mut a);
        a
    });
    let tiles = |a: &[f32], rows: Range<usize>, panels: Range<usize>, out: SharedOut| {
        for p in panels {
            let cols = p * NR..((p + 1) * NR).min(n);
            for r0 in (rows.start..rows.end).step_by(MR) {
                let (b, r) = ((r0 - rows.start) / MR, MR.min(rows.end - r0));
                let a = &a[b * k * MR..(b + 1) * k * MR];
                // SAFETY: the tile lies inside the task's own rows x panels.
                let tile = unsafe { out.at(r0 * n + cols.start) };
                let bias = bias.map(|b| &b[cols.clone()]);
                micro_tile(a, w.panel(p), k, r, cols.len(), bias, epilogue, tile, n);
            }
        }
    };
    let task = |rows: Range<usize>, panels: Range<usize>, out: SharedOut| match &shared {
        // One row chunk: `rows` starts at 0.
        Some(a) => tiles(a, rows, panels, out),
        None => PACKED_ROWS.with_borrow_mut(|a| {
            // Serial (MC rows): no other task can run on this thread while `a` is held.
            pack_rows(&x[rows.start * k..rows.end * k], k, a);
            tiles(a, rows, panels, out)
        }),
    };
    for_each_task(m, n, k, y, task);
    if let Some(a) = shared {
        PACKED_ROWS.with_borrow_mut(|rows| *rows = a);
    }
}

/// Runs `task(rows, panels, out)` over `y [m, n]` cut into blocks of [`MC`] rows by groups
/// of [`NR`]-column panels, in parallel: enough tasks for every thread (a few rows, as at
/// batch 1, split the panels instead), one task for a small product. Each task may write
/// only the `rows x panels` part of `out`.
pub(crate) fn for_each_task(
    m: usize,
    n: usize,
    k: usize,
    y: &mut [f32],
    task: impl Fn(Range<usize>, Range<usize>, SharedOut) + Sync,
) {
    assert_eq!(y.len(), m * n);
    if m == 0 || n == 0 {
        return;
    }
    let panels = n.div_ceil(NR);
    let row_chunks = m.div_ceil(MC);
    let threads = rayon::current_num_threads();
    let panel_groups = if m * n * k < SERIAL_WORK {
        1
    } else {
        (2 * threads).div_ceil(row_chunks).clamp(1, panels)
    };
    let per_group = panels.div_ceil(panel_groups);
    let out = SharedOut(y.as_mut_ptr());
    let run = |t: usize| {
        let (chunk, group) = (t / panel_groups, t % panel_groups);
        let rows = chunk * MC..((chunk + 1) * MC).min(m);
        let panels = group * per_group..((group + 1) * per_group).min(panels);
        task(rows, panels, out);
    };
    match row_chunks * panel_groups {
        1 => run(0),
        tasks => (0..tasks).into_par_iter().for_each(run),
    }
}

/// Below this many multiply-adds a product runs on one thread: forking costs more.
const SERIAL_WORK: usize = 1 << 19;

thread_local! {
    /// The calling thread's packed input rows, reused across calls (taken out for a call,
    /// so that a nested call finds it empty).
    static PACKED_ROWS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The output pointer the tasks share; each writes its own tiles.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: see `matmul_packed`: the tiles the tasks write are disjoint.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// A method, so closures capture the whole (Sync) struct, not its raw pointer.
    ///
    /// # Safety
    /// `offset` must lie inside the output.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// `x [rows, k]` as blocks of MR rows, `[k][MR]` each. Stale values in a tail block's
/// padding rows are harmless: those rows of the tile are never stored.
fn pack_rows(x: &[f32], k: usize, out: &mut Vec<f32>) {
    let rows = x.len() / k.max(1);
    out.resize(rows.div_ceil(MR) * k * MR, 0.0);
    if k == 0 {
        return;
    }
    for (b, block) in out.chunks_exact_mut(k * MR).enumerate() {
        let src = &x[b * MR * k..((b + 1) * MR).min(rows) * k];
        if src.len() == MR * k {
            // A full block, written in order: one `[MR]` column of the rows per step.
            for (kk, column) in block.chunks_exact_mut(MR).enumerate() {
                for (i, v) in column.iter_mut().enumerate() {
                    // SAFETY: i < MR and kk < k, so i * k + kk < MR * k = src.len().
                    *v = unsafe { *src.get_unchecked(i * k + kk) };
                }
            }
            continue;
        }
        for (i, row) in src.chunks_exact(k).enumerate() {
            for (kk, &v) in row.iter().enumerate() {
                block[kk * MR + i] = v;
            }
        }
    }
}

/// One `r x cols` tile (`r <= MR`, `cols <= NR`) of the output at `tile` (row stride
/// `ldc`), from packed rows `a [k][MR]` and a packed panel `b [k][NR]`.
#[allow(clippy::too_many_arguments)]
fn micro_tile(
    a: &[f32],
    b: &[f32],
    k: usize,
    r: usize,
    cols: usize,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    tile: *mut f32,
    ldc: usize,
) {
    assert!(a.len() >= k * MR && b.len() >= k * NR && r <= MR && cols <= NR);
    assert!(bias.is_none_or(|b| b.len() >= cols));
    #[cfg(target_arch = "x86_64")]
    if *super::HAS_AVX512 {
        // SAFETY: the CPU has AVX-512F (checked at run time); the slices' lengths are
        // asserted above and the caller's tile holds r rows of `cols` floats at `ldc`.
        let in_registers = epilogue == Epilogue::GeluErf;
        unsafe {
            avx512::tile(
                a.as_ptr(),
                b.as_ptr(),
                k,
                bias,
                in_registers,
                r,
                cols,
                tile,
                ldc,
            )
        };
        if !in_registers {
            apply(epilogue, r, cols, tile, ldc);
        }
        return;
    }
    let mut acc = [[0f32; NR]; MR];
    simd_dispatch!(portable_tile(a, b, k, &mut acc));
    for (i, row) in acc.iter().enumerate().take(r) {
        // SAFETY: as above.
        let out = unsafe { std::slice::from_raw_parts_mut(tile.add(i * ldc), cols) };
        for (c, o) in out.iter_mut().enumerate() {
            *o = row[c] + bias.map_or(0.0, |b| b[c]);
        }
    }
    apply(epilogue, r, cols, tile, ldc);
}

/// The micro-kernel in plain Rust (LLVM vectorises the column loop): the reference twin
/// and the path for CPUs without AVX-512.
#[inline(always)]
fn portable_tile(a: &[f32], b: &[f32], k: usize, acc: &mut [[f32; NR]; MR]) {
    for kk in 0..k {
        let bk = &b[kk * NR..(kk + 1) * NR];
        let ak = &a[kk * MR..(kk + 1) * MR];
        for (row, &av) in acc.iter_mut().zip(ak) {
            for (c, &bv) in row.iter_mut().zip(bk) {
                *c += av * bv;
            }
        }
    }
}

/// The epilogue on a stored `r x cols` tile, while it is still in L1.
pub(crate) fn apply(epilogue: Epilogue, r: usize, cols: usize, tile: *mut f32, ldc: usize) {
    let tanh = match epilogue {
        Epilogue::None => return,
        Epilogue::GeluErf => false,
        Epilogue::GeluTanh => true,
    };
    for i in 0..r {
        // SAFETY: the caller's tile holds r rows of `cols` floats at stride `ldc`.
        let out = unsafe { std::slice::from_raw_parts_mut(tile.add(i * ldc), cols) };
        simd_dispatch!(out
            .iter_mut()
            .for_each(|o| *o = super::gelu_value(*o, tanh)));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `out[..r, ..cols] = a b + bias` for the MR x NR tile over all of `k`: per step two
    /// loads of the panel, MR broadcasts of the packed rows and 2 MR fused multiply-adds
    /// into registers; the accumulators start at the bias.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `a` holds `k * MR` floats, `b` `k * NR`, `bias` at
    /// least `cols`; `out` holds `r <= MR` rows of `cols <= NR` floats at stride `ldc`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        a: *const f32,
        b: *const f32,
        k: usize,
        bias: Option<&[f32]>,
        gelu_erf: bool,
        r: usize,
        cols: usize,
        out: *mut f32,
        ldc: usize,
    ) {
        // Column masks: the last panel of an output width that is not a multiple of NR.
        let mask = |from: usize| -> __mmask16 {
            let n = cols.saturating_sub(from).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        let (m0, m1) = (mask(0), mask(16));
        let start = match bias {
            Some(bias) => [
                _mm512_maskz_loadu_ps(m0, bias.as_ptr()),
                _mm512_maskz_loadu_ps(m1, bias.as_ptr().add(16)),
            ],
            None => [_mm512_setzero_ps(); 2],
        };
        let mut acc = [start; MR];
        for kk in 0..k {
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            let ak = a.add(kk * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ak.add(r));
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        if gelu_erf {
            for row in acc.iter_mut().take(r) {
                *row = [gelu_erf16(row[0]), gelu_erf16(row[1])];
            }
        }
        for (i, row) in acc.iter().enumerate().take(r) {
            let o = out.add(i * ldc);
            _mm512_mask_storeu_ps(o, m0, row[0]);
            _mm512_mask_storeu_ps(o.add(16), m1, row[1]);
        }
    }

    /// GELU (erf form) of 16 lanes: `gelu_value`'s rational erf, step for step, on the
    /// accumulators before they are stored (fused multiply-adds round once where the
    /// scalar twin rounds twice: within 1 ulp of it).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn gelu_erf16(x: __m512) -> __m512 {
        let c = _mm512_set1_ps;
        let z = _mm512_mul_ps(x, c(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_min_ps(_mm512_max_ps(z, c(-4.0)), c(4.0));
        let z2 = _mm512_mul_ps(z, z);
        let mut p = _mm512_fmadd_ps(z2, c(-2.726_142_3e-10), c(2.770_681_4e-8));
        for k in [
            -2.101_024e-6,
            -5.692_506_4e-5,
            -7.349_906_3e-4,
            -2.954_6e-3,
            -1.609_603_3e-2,
        ] {
            p = _mm512_fmadd_ps(z2, p, c(k));
        }
        let p = _mm512_mul_ps(z, p);
        let mut q = _mm512_fmadd_ps(z2, c(-1.456_607_2e-5), c(-2.133_740_6e-4));
        for k in [-1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
            q = _mm512_fmadd_ps(z2, q, c(k));
        }
        let erf = _mm512_div_ps(p, q);
        let half_x = _mm512_mul_ps(x, c(0.5));
        _mm512_fmadd_ps(half_x, erf, half_x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], m: usize, w: &[f32], n: usize, k: usize, bias: Option<&[f32]>) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j]) as f64;
                for kk in 0..k {
                    s += x[i * k + kk] as f64 * w[j * k + kk] as f64;
                }
                y[i * n + j] = s as f32;
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn packed_product_matches_the_naive_one_with_row_and_column_tails() {
        // m spans several micro-blocks and task chunks with a tail (rows packed per task)
        // or fits one chunk (rows packed once); n leaves a partial panel; k is odd, or 0
        // (the bias alone).
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 0),
            (12, 32, 16),
            (13, 70, 37),
            (200, 96, 65),
            (5, 2, 384),
        ] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let b = values(n, 3);
            let packed = PackedMatrix::pack(&w, n, k, false);
            let mut y = vec![f32::NAN; m * n];
            matmul_packed(&x, m, &packed, Some(&b), Epilogue::None, &mut y);
            let want = naive(&x, m, &w, n, k, Some(&b));
            for (i, (a, e)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - e).abs() < 1e-4,
                    "({m},{n},{k}) element {i}: {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn transposed_storage_packs_to_the_same_panels() {
        let (n, k) = (40, 9);
        let w = values(n * k, 4);
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        assert_eq!(
            PackedMatrix::pack(&w, n, k, false),
            PackedMatrix::pack(&wt, n, k, true)
        );
    }

    #[test]
    fn gelu_epilogue_is_gelu_of_the_product() {
        let (m, n, k) = (7, 33, 20);
        let (x, w) = (values(m * k, 5), values(n * k, 6));
        let packed = PackedMatrix::pack(&w, n, k, false);
        let mut y = vec![0f32; m * n];
        matmul_packed(&x, m, &packed, None, Epilogue::GeluErf, &mut y);
        for (a, v) in y.iter().zip(naive(&x, m, &w, n, k, None)) {
            let e = 0.5 * v * (1.0 + libm_erf(v as f64 / 2f64.sqrt()) as f32);
            assert!((a - e).abs() < 1e-5, "{a} vs {e}");
        }
    }

    #[test]
    fn portable_tile_matches_the_dispatched_one() {
        let k = 29;
        let (a, b) = (values(k * MR, 7), values(k * NR, 8));
        let mut want = [[0f32; NR]; MR];
        portable_tile(&a, &b, k, &mut want);
        let mut got = vec![0f32; MR * NR];
        micro_tile(
            &a,
            &b,
            k,
            MR,
            NR,
            None,
            Epilogue::None,
            got.as_mut_ptr(),
            NR,
        );
        for (i, row) in want.iter().enumerate() {
            for (c, &e) in row.iter().enumerate() {
                assert!((got[i * NR + c] - e).abs() < 1e-5);
            }
        }
    }

    /// erf by Simpson's rule on exp(-t^2): a reference independent of the kernel's
    /// rational approximation.
    fn libm_erf(x: f64) -> f64 {
        let steps = 2000;
        let h = x / steps as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..steps {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }
}
