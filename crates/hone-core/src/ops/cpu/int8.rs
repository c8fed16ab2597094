//! Dynamic int8 matrix products: weights quantized once per output channel (symmetric,
//! scale = max|w| / 127), activations per row at run time, products accumulated in i32
//! and scaled back to f32. The inner dot product picks AVX-512 VNNI, AVX2 or plain Rust at
//! run time.

use rayon::prelude::*;

use super::packed::{apply, Epilogue};

/// A weight `[n, k]` (`n` output channels) in int8, row-major, with one scale per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    pub n: usize,
    pub k: usize,
    /// Per row, the sum of its int8 values: VNNI multiplies unsigned activations (the
    /// int8 ones plus 128), and 128 * row_sum takes the offset back out.
    row_sums: Vec<i32>,
    /// The rows in VNNI's panels (when the CPU has VNNI): see [`vnni::pack`].
    panels: Option<Vec<i8>>,
}

impl Int8Matrix {
    /// From int8 values and their per-row scales (as a quantized checkpoint stores them).
    pub fn new(q: Vec<i8>, scale: Vec<f32>, n: usize, k: usize) -> Self {
        assert_eq!(q.len(), n * k);
        assert_eq!(scale.len(), n);
        let row_sums = q
            .chunks(k.max(1))
            .map(|r| r.iter().map(|&v| v as i32).sum())
            .collect();
        let panels = has_vnni().then(|| vnni::pack(&q, n, k));
        Self {
            q,
            scale,
            n,
            k,
            row_sums,
            panels,
        }
    }

    /// Symmetric per-row quantization of `w [n, k]`.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        let (q, scale) = quantize_rows(w, k);
        assert_eq!(scale.len(), n);
        Self::new(q, scale, n, k)
    }

    /// The f32 values the int8 ones stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        self.q
            .chunks(self.k.max(1))
            .zip(&self.scale)
            .flat_map(|(r, &s)| r.iter().map(move |&v| v as f32 * s))
            .collect()
    }
}

/// Each row of `x [m, k]` as int8 with its scale max|x| / 127 (1 for a zero row).
pub fn quantize_rows(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; x.len()];
    let scale = x
        .chunks(k.max(1))
        .zip(q.chunks_mut(k.max(1)))
        .map(|(row, out)| quantize_row(row, out))
        .collect();
    (q, scale)
}

/// One row as int8, `round(x / s)` with `s = max|x| / 127` (ties to even, as ONNX
/// Runtime's quantizer rounds); returns `s` (1 for a zero row). Branch-free, so that it
/// vectorises: per-lane maxima, and rounding that is one instruction.
fn quantize_row(row: &[f32], out: &mut [i8]) -> f32 {
    super::simd_dispatch!({
        let mut lanes = [0f32; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for (m, v) in lanes.iter_mut().zip(c) {
                *m = m.max(v.abs());
            }
        }
        let max = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        let inv = 1.0 / s;
        // Adding 1.5 * 2^23 rounds to the nearest integer, ties to even, and leaves it in
        // the low mantissa bits: integer bit operations, which vectorise (a float-to-int
        // cast does not, for its saturation checks).
        const ROUND: f32 = 12_582_912.0;
        for (o, &v) in out.iter_mut().zip(row) {
            let bits = ((v * inv).clamp(-127.0, 127.0) + ROUND).to_bits();
            *o = bits.wrapping_sub(ROUND.to_bits()) as i8;
        }
        s
    })
}

/// `y [m, n] = epilogue(x [m, k] W^T (+ bias))`, with `x` quantized per row here.
pub fn matmul_int8(
    x: &[f32],
    m: usize,
    w: &Int8Matrix,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    if let Some(b) = bias {
        assert_eq!(b.len(), n);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(panels) = &w.panels {
        return vnni::matmul(x, m, w, panels, bias, epilogue, y);
    }
    let (xq, xs) = quantize_rows(x, k);
    let dot = Dot::select();
    let scaled =
        |i: usize, j: usize, acc: i32| acc as f32 * xs[i] * w.scale[j] + bias.map_or(0.0, |b| b[j]);
    // Blocks of ROW_BLOCK rows in parallel; within a block four output channels at a time
    // (four rows of W, in L1) meet every row of the block.
    y.par_chunks_mut(n * ROW_BLOCK)
        .enumerate()
        .for_each(|(block, out)| {
            let first = block * ROW_BLOCK;
            let rows = out.len() / n;
            let a = |i: usize| &xq[(first + i) * k..(first + i + 1) * k];
            let mut j = 0;
            while j + 4 <= n {
                let w_rows = [0, 1, 2, 3].map(|r| &w.q[(j + r) * k..(j + r + 1) * k]);
                for i in 0..rows {
                    let acc = w_rows.map(|b| dot.run(a(i), b));
                    for r in 0..4 {
                        out[i * n + j + r] = scaled(first + i, j + r, acc[r]);
                    }
                }
                j += 4;
            }
            for jj in j..n {
                let b = &w.q[jj * k..(jj + 1) * k];
                for i in 0..rows {
                    out[i * n + jj] = scaled(first + i, jj, dot.run(a(i), b));
                }
            }
            apply(epilogue, rows, n, out.as_mut_ptr(), n);
        });
}

/// Rows of the input per parallel task of [`matmul_int8`] without VNNI.
const ROW_BLOCK: usize = 16;

fn has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static VNNI: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
            is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512f")
        });
        *VNNI
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The int8 dot product on CPUs without VNNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dot {
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

impl Dot {
    fn select() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            return Dot::Avx2;
        }
        Dot::Scalar
    }

    /// `sum a_i b_i`.
    #[inline]
    fn run(self, a: &[i8], b: &[i8]) -> i32 {
        match self {
            // SAFETY: selected only when the CPU has AVX2.
            #[cfg(target_arch = "x86_64")]
            Dot::Avx2 => unsafe { dot_avx2(a, b) },
            Dot::Scalar => dot_scalar(a, b),
        }
    }
}

fn dot_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// The VNNI GEMM: W packed once in panels of NR output channels, `[k / 4][NR][4]` bytes,
/// so that one `vpdpbusd` adds four products into each of 16 channels' i32 sums (no
/// horizontal sums); the activations, quantized per row and shifted by 128 to unsigned,
/// packed per call as `[k / 4][MR]` words of four bytes and broadcast. The tasks and
/// tiles are the f32 GEMM's ([`super::packed`]).
#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::super::packed::{apply, for_each_task, Epilogue, SharedOut, MC, MR, NR};
    use super::{quantize_row, Int8Matrix};

    /// `q [n, k]` row-major -> panels `[k4][NR][4]` (`k4 = ceil(k / 4)`), zero-padded in
    /// `k` and in the last panel's channels (zero weights add nothing).
    pub(super) fn pack(q: &[i8], n: usize, k: usize) -> Vec<i8> {
        let k4 = k.div_ceil(4);
        let mut out = vec![0i8; n.div_ceil(NR) * k4 * NR * 4];
        for j in 0..n {
            let (p, c) = (j / NR, j % NR);
            let panel = &mut out[p * k4 * NR * 4..(p + 1) * k4 * NR * 4];
            for (kk, &v) in q[j * k..(j + 1) * k].iter().enumerate() {
                panel[(kk / 4) * NR * 4 + c * 4 + kk % 4] = v;
            }
        }
        out
    }

    thread_local! {
        /// The calling thread's quantized, packed input rows and their scales, reused
        /// across calls (taken out for a call, so that a nested call finds it empty).
        static ROWS: std::cell::RefCell<(Vec<u32>, Vec<f32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }

    pub(super) fn matmul(
        x: &[f32],
        m: usize,
        w: &Int8Matrix,
        panels: &[i8],
        bias: Option<&[f32]>,
        epilogue: Epilogue,
        y: &mut [f32],
    ) {
        let (n, k) = (w.n, w.k);
        let k4 = k.div_ceil(4);
        // As in the f32 GEMM: a few rows are quantized and packed once, up front, for the
        // tasks that split the panels; more rows by the task that owns them.
        let shared = (m <= MC).then(|| {
            let mut rows = ROWS.with_borrow_mut(std::mem::take);
            pack_rows(x, k, &mut rows.0, &mut rows.1);
            rows
        });
        let tiles =
            |a: &[u32], xs: &[f32], rows: Range<usize>, ps: Range<usize>, out: SharedOut| {
                for p in ps {
                    let cols = p * NR..((p + 1) * NR).min(n);
                    let panel = &panels[p * k4 * NR * 4..(p + 1) * k4 * NR * 4];
                    for r0 in (rows.start..rows.end).step_by(MR) {
                        let (b, r) = ((r0 - rows.start) / MR, MR.min(rows.end - r0));
                        let tile = Tile {
                            a: &a[b * k4 * MR..(b + 1) * k4 * MR],
                            x_scale: &xs[b * MR..b * MR + r],
                            panel,
                            w_scale: &w.scale[cols.clone()],
                            w_sums: &w.row_sums[cols.clone()],
                            bias: bias.map(|b| &b[cols.clone()]),
                        };
                        // SAFETY: the r x cols tile lies in the task's own part of `y`.
                        let at = unsafe { out.at(r0 * n + cols.start) };
                        // SAFETY: the CPU has VNNI (the panels exist only then); the slices
                        // hold what `tile` reads (k4 MR words, k4 NR 4 bytes, r scales, cols
                        // channels); `at` holds r rows of cols floats at stride n.
                        unsafe { tile.run(k4, at, n) };
                        apply(epilogue, r, cols.len(), at, n);
                    }
                }
            };
        let task = |rows: Range<usize>, ps: Range<usize>, out: SharedOut| match &shared {
            // One row chunk: `rows` starts at 0.
            Some((a, xs)) => tiles(a, xs, rows, ps, out),
            None => ROWS.with_borrow_mut(|(a, xs)| {
                // Serial (MC rows): no other task can run on this thread while held.
                pack_rows(&x[rows.start * k..rows.end * k], k, a, xs);
                tiles(a, xs, rows, ps, out)
            }),
        };
        for_each_task(m, n, k, y, task);
        if let Some(rows) = shared {
            ROWS.with_borrow_mut(|r| *r = rows);
        }
    }

    /// Rows `x [rows, k]` quantized per row, shifted to unsigned, in blocks of MR rows
    /// `[k4][MR]` of four-byte words; their scales. A tail block's padding rows keep
    /// stale values (never stored); the padding bytes past `k` meet zero weights.
    fn pack_rows(x: &[f32], k: usize, a: &mut Vec<u32>, xs: &mut Vec<f32>) {
        let rows = x.len() / k.max(1);
        let k4 = k.div_ceil(4);
        let blocks = rows.div_ceil(MR);
        a.resize(blocks * k4 * MR, 0);
        xs.resize(blocks * MR, 1.0);
        if k == 0 {
            return;
        }
        let blocks = a.chunks_exact_mut(k4 * MR).zip(xs.chunks_exact_mut(MR));
        let mut q = vec![0i8; MR * k4 * 4];
        for (b, (block, scales)) in blocks.enumerate() {
            let r = MR.min(rows - b * MR);
            // The block's rows quantized side by side, then interleaved word by word, so
            // that the packed block is written in order.
            for (i, scale) in scales.iter_mut().enumerate().take(r) {
                let row = &x[(b * MR + i) * k..(b * MR + i + 1) * k];
                *scale = quantize_row(row, &mut q[i * k4 * 4..i * k4 * 4 + k]);
            }
            for (g, dst) in block.chunks_exact_mut(MR).enumerate() {
                for (i, d) in dst[..r].iter_mut().enumerate() {
                    let word = &q[i * k4 * 4 + g * 4..i * k4 * 4 + g * 4 + 4];
                    // The int8 values plus 128, as unsigned bytes: the sign bit flipped.
                    let bytes = [0, 1, 2, 3].map(|t| (word[t] as u8) ^ 0x80);
                    *d = u32::from_le_bytes(bytes);
                }
            }
        }
    }

    /// One output tile's operands.
    struct Tile<'a> {
        a: &'a [u32],
        x_scale: &'a [f32],
        panel: &'a [i8],
        w_scale: &'a [f32],
        w_sums: &'a [i32],
        bias: Option<&'a [f32]>,
    }

    impl Tile<'_> {
        /// `out[i][j] = (sum_k (x_ik + 128) w_jk - 128 sum_k w_jk) xs_i ws_j + b_j`.
        ///
        /// # Safety
        /// The CPU must have AVX-512F/BW and VNNI; `a` holds `k4 MR` words, `panel` `k4 NR
        /// 4` bytes; `out` holds `x_scale.len()` rows of `w_scale.len()` floats at `ldc`.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        unsafe fn run(&self, k4: usize, out: *mut f32, ldc: usize) {
            let cols = self.w_scale.len();
            debug_assert!(self.a.len() >= k4 * MR && self.panel.len() >= k4 * NR * 4);
            let mask = |from: usize| -> __mmask16 {
                let n = cols.saturating_sub(from).min(16);
                ((1u32 << n) - 1) as __mmask16
            };
            let masks = [mask(0), mask(16)];
            let (a, b) = (self.a.as_ptr(), self.panel.as_ptr());
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for g in 0..k4 {
                let b0 = _mm512_loadu_si512(b.add(g * NR * 4) as *const _);
                let b1 = _mm512_loadu_si512(b.add(g * NR * 4 + 64) as *const _);
                let ag = a.add(g * MR);
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_epi32(*ag.add(r) as i32);
                    row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
                    row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
                }
            }
            for h in 0..2 {
                let m = masks[h];
                let at = 16 * h;
                let offset = _mm512_slli_epi32::<7>(_mm512_maskz_loadu_epi32(
                    m,
                    self.w_sums.as_ptr().add(at) as *const _,
                ));
                let ws = _mm512_maskz_loadu_ps(m, self.w_scale.as_ptr().add(at));
                let bias = match self.bias {
                    Some(bias) => _mm512_maskz_loadu_ps(m, bias.as_ptr().add(at)),
                    None => _mm512_setzero_ps(),
                };
                for (i, &xs) in self.x_scale.iter().enumerate() {
                    let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][h], offset));
                    let v = _mm512_fmadd_ps(v, _mm512_mul_ps(_mm512_set1_ps(xs), ws), bias);
                    _mm512_mask_storeu_ps(out.add(i * ldc + at), m, v);
                }
            }
        }
    }
}

/// `sum a_i b_i` over signed bytes widened to i16, 16 pairs per `madd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len() / 16 * 16;
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i < n {
        let va = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.as_ptr().add(i) as *const _));
        let vb = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.as_ptr().add(i) as *const _));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb));
        i += 16;
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut _, acc);
    let mut sum: i32 = lanes.iter().sum();
    for j in n..a.len() {
        sum += a[j] as i32 * b[j] as i32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97) >> 8;
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_dot_product_kernel_agrees_with_the_scalar_one() {
        // Lengths with and without a tail past the vector width.
        for k in [1, 15, 64, 100, 384, 1536] {
            let a: Vec<i8> = (0..k).map(|i| (i * 37 % 255 - 127) as i8).collect();
            let b: Vec<i8> = (0..k).map(|i| (i * 91 % 255 - 127) as i8).collect();
            let expected = dot_scalar(&a, &b);
            let dot = Dot::select();
            assert_eq!(dot.run(&a, &b), expected, "{dot:?}, k {k}");
        }
    }

    #[test]
    fn vnni_and_portable_products_agree_exactly() {
        // Both sum the same i32 products exactly; only the final scaling rounds. Rows and
        // channels with tails (13 rows: a micro-block and one; 70 channels: a partial
        // panel; k = 130: not a multiple of 4).
        let (m, k, n) = (13, 130, 70);
        let x = values(m * k, 5);
        let mut w = Int8Matrix::quantize(&values(n * k, 6), n, k);
        let bias = values(n, 7);
        let mut fast = vec![0f32; m * n];
        matmul_int8(&x, m, &w, Some(&bias), Epilogue::GeluErf, &mut fast);
        w.panels = None;
        let mut portable = vec![0f32; m * n];
        matmul_int8(&x, m, &w, Some(&bias), Epilogue::GeluErf, &mut portable);
        for (i, (a, b)) in fast.iter().zip(&portable).enumerate() {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let (n, k) = (5, 33);
        let mut w = values(n * k, 1);
        w[3 * k..4 * k].fill(0.0); // a zero row keeps scale 1 and values 0
        let q = Int8Matrix::quantize(&w, n, k);
        let back = q.dequantize();
        for (r, (row, back)) in w.chunks(k).zip(back.chunks(k)).enumerate() {
            let step = q.scale[r];
            for (a, b) in row.iter().zip(back) {
                assert!((a - b).abs() <= step / 2.0 + 1e-7, "row {r}: {a} vs {b}");
            }
        }
        assert_eq!(q.scale[3], 1.0);
        assert!(
            q.q[..k].iter().any(|&v| v.abs() == 127),
            "the largest maps to 127"
        );
    }

    #[test]
    fn int8_product_equals_the_product_of_the_dequantized_operands() {
        // The i32 accumulation is exact, so the result is the f32 product of the
        // dequantized x and W up to f32 rounding.
        let (m, k, n) = (21, 130, 9); // two row blocks, row and column tails
        let x = values(m * k, 2);
        let w = Int8Matrix::quantize(&values(n * k, 3), n, k);
        let bias = values(n, 4);
        let mut y = vec![0f32; m * n];
        matmul_int8(&x, m, &w, Some(&bias), Epilogue::None, &mut y);
        let (xq, xs) = quantize_rows(&x, k);
        let wd = w.dequantize();
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k)
                    .map(|t| xq[i * k + t] as f32 * xs[i] * wd[j * k + t])
                    .sum::<f32>()
                    + bias[j];
                let got = y[i * n + j];
                assert!((got - exact).abs() < 1e-4, "({i}, {j}): {got} vs {exact}");
            }
        }
        // And close to the f32 product: int8 error, a few percent of the scale.
        let full: f32 = (0..k).map(|t| x[t] * wd[t]).sum::<f32>() + bias[0];
        assert!(
            (y[0] - full).abs() < 0.05 * (k as f32).sqrt(),
            "{} vs {full}",
            y[0]
        );
    }
}
