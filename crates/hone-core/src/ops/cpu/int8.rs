//! Dynamic int8 matrix products: weights quantized once per output channel (symmetric,
//! scale = max|w| / 127), activations per row at run time, products accumulated in i32
//! and scaled back to f32. The inner dot product picks AVX-512 VNNI, AVX2 or plain Rust at
//! run time.

use rayon::prelude::*;

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
        Self {
            q,
            scale,
            n,
            k,
            row_sums,
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
        .map(|(row, out)| {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            let inv = 1.0 / s;
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
            }
            s
        })
        .collect();
    (q, scale)
}

/// `y [m, n] = x [m, k] W^T (+ bias)`, with `x` quantized per row here.
pub fn matmul_int8(x: &[f32], m: usize, w: &Int8Matrix, bias: Option<&[f32]>, y: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    let (xq, xs) = quantize_rows(x, k);
    // VNNI multiplies unsigned by signed bytes: the activations shifted by 128, once.
    let xu: Vec<u8> = xq.iter().map(|&v| (v as i16 + 128) as u8).collect();
    let dot = Dot::select();
    let scaled =
        |i: usize, j: usize, acc: i32| acc as f32 * xs[i] * w.scale[j] + bias.map_or(0.0, |b| b[j]);
    // Blocks of ROW_BLOCK rows in parallel. Within a block, four output channels at a
    // time (4 k bytes of W, in L1) meet every row of the block, four rows at a time with
    // VNNI: W is read once per block, not once per row.
    y.par_chunks_mut(n * ROW_BLOCK)
        .enumerate()
        .for_each(|(block, out)| {
            let first = block * ROW_BLOCK;
            let rows = out.len() / n;
            let a = |i: usize| &xq[(first + i) * k..(first + i + 1) * k];
            let a_u8 = |i: usize| &xu[(first + i) * k..(first + i + 1) * k];
            let mut j = 0;
            while j + 4 <= n {
                let w_rows = [0, 1, 2, 3].map(|r| &w.q[(j + r) * k..(j + r + 1) * k]);
                let sums = &w.row_sums[j..j + 4];
                let mut i = 0;
                #[cfg(target_arch = "x86_64")]
                if dot == Dot::Vnni512 {
                    while i + 4 <= rows {
                        // SAFETY: Vnni512 is selected only when the CPU has VNNI.
                        let acc =
                            unsafe { dot4x4_vnni512([0, 1, 2, 3].map(|t| a_u8(i + t)), w_rows) };
                        for t in 0..4 {
                            for r in 0..4 {
                                let v = acc[t][r] - 128 * sums[r];
                                out[(i + t) * n + j + r] = scaled(first + i + t, j + r, v);
                            }
                        }
                        i += 4;
                    }
                }
                for i in i..rows {
                    let acc = dot.run4(a(i), a_u8(i), w_rows, sums);
                    for r in 0..4 {
                        out[i * n + j + r] = scaled(first + i, j + r, acc[r]);
                    }
                }
                j += 4;
            }
            for jj in j..n {
                let b = &w.q[jj * k..(jj + 1) * k];
                for i in 0..rows {
                    let acc = dot.run(a(i), a_u8(i), b, w.row_sums[jj]);
                    out[i * n + jj] = scaled(first + i, jj, acc);
                }
            }
        });
}

/// Rows of the input per parallel task of [`matmul_int8`].
const ROW_BLOCK: usize = 16;

/// The int8 dot product, by what the CPU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dot {
    #[cfg(target_arch = "x86_64")]
    Vnni512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

impl Dot {
    fn select() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
                return Dot::Vnni512;
            }
            if is_x86_feature_detected!("avx2") {
                return Dot::Avx2;
            }
        }
        Dot::Scalar
    }

    /// `sum a_i b_i`; `a_u8` is `a + 128` and `b_sum` is `sum b_i` (for VNNI).
    #[inline]
    fn run(self, a: &[i8], a_u8: &[u8], b: &[i8], b_sum: i32) -> i32 {
        match self {
            // SAFETY: selected only when the CPU has these features.
            #[cfg(target_arch = "x86_64")]
            Dot::Vnni512 => unsafe { dot_vnni512(a_u8, b) - 128 * b_sum },
            #[cfg(target_arch = "x86_64")]
            Dot::Avx2 => unsafe { dot_avx2(a, b) },
            Dot::Scalar => {
                let _ = (a_u8, b_sum);
                dot_scalar(a, b)
            }
        }
    }
}

impl Dot {
    /// [`Dot::run`] against four rows of `b` at once (VNNI shares the loads of `a`).
    #[inline]
    fn run4(self, a: &[i8], a_u8: &[u8], b: [&[i8]; 4], b_sums: &[i32]) -> [i32; 4] {
        match self {
            // SAFETY: selected only when the CPU has these features.
            #[cfg(target_arch = "x86_64")]
            Dot::Vnni512 => {
                let acc = unsafe { dot4_vnni512(a_u8, b) };
                [0, 1, 2, 3].map(|r| acc[r] - 128 * b_sums[r])
            }
            _ => [0, 1, 2, 3].map(|r| self.run(a, a_u8, b[r], b_sums[r])),
        }
    }
}

fn dot_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// `sum a_i b_i` over unsigned `a` and signed `b`, 64 pairs per VNNI instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot_vnni512(a: &[u8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len() / 64 * 64;
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i < n {
        let va = _mm512_loadu_si512(a.as_ptr().add(i) as *const _);
        let vb = _mm512_loadu_si512(b.as_ptr().add(i) as *const _);
        acc = _mm512_dpbusd_epi32(acc, va, vb);
        i += 64;
    }
    let mut sum = _mm512_reduce_add_epi32(acc);
    for j in n..a.len() {
        sum += a[j] as i32 * b[j] as i32;
    }
    sum
}

/// [`dot_vnni512`] of `a` with four rows at once: one load of `a` feeds four products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot4_vnni512(a: &[u8], b: [&[i8]; 4]) -> [i32; 4] {
    use std::arch::x86_64::*;
    let n = a.len() / 64 * 64;
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i < n {
        let va = _mm512_loadu_si512(a.as_ptr().add(i) as *const _);
        for r in 0..4 {
            let vb = _mm512_loadu_si512(b[r].as_ptr().add(i) as *const _);
            acc[r] = _mm512_dpbusd_epi32(acc[r], va, vb);
        }
        i += 64;
    }
    let mut sums = acc.map(|v| _mm512_reduce_add_epi32(v));
    for (r, sum) in sums.iter_mut().enumerate() {
        for j in n..a.len() {
            *sum += a[j] as i32 * b[r][j] as i32;
        }
    }
    sums
}

/// Four rows of `a` against four rows of `b`: `acc[t][r] = sum a_t b_r` (unsigned by
/// signed), sixteen accumulators, each load used four times.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn dot4x4_vnni512(a: [&[u8]; 4], b: [&[i8]; 4]) -> [[i32; 4]; 4] {
    use std::arch::x86_64::*;
    let len = a[0].len();
    let n = len / 64 * 64;
    let mut acc = [[_mm512_setzero_si512(); 4]; 4];
    let mut i = 0;
    while i < n {
        let vb = [0, 1, 2, 3].map(|r| _mm512_loadu_si512(b[r].as_ptr().add(i) as *const _));
        for t in 0..4 {
            let va = _mm512_loadu_si512(a[t].as_ptr().add(i) as *const _);
            for r in 0..4 {
                acc[t][r] = _mm512_dpbusd_epi32(acc[t][r], va, vb[r]);
            }
        }
        i += 64;
    }
    let mut out = [[0i32; 4]; 4];
    for t in 0..4 {
        for r in 0..4 {
            out[t][r] = _mm512_reduce_add_epi32(acc[t][r]);
            for j in n..len {
                out[t][r] += a[t][j] as i32 * b[r][j] as i32;
            }
        }
    }
    out
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
            let a_u8: Vec<u8> = a.iter().map(|&v| (v as i16 + 128) as u8).collect();
            let b_sum: i32 = b.iter().map(|&v| v as i32).sum();
            let expected = dot_scalar(&a, &b);
            let dot = Dot::select();
            assert_eq!(dot.run(&a, &a_u8, &b, b_sum), expected, "{dot:?}, k {k}");
            let a_sum: i32 = a.iter().map(|&v| v as i32).sum();
            let four = dot.run4(&a, &a_u8, [&b, &a, &b, &a], &[b_sum, a_sum, b_sum, a_sum]);
            let square = dot_scalar(&a, &a);
            assert_eq!(
                four,
                [expected, square, expected, square],
                "{dot:?} x4, k {k}"
            );
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") {
                assert_eq!(Dot::Avx2.run(&a, &a_u8, &b, b_sum), expected, "avx2, k {k}");
            }
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
        matmul_int8(&x, m, &w, Some(&bias), &mut y);
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
