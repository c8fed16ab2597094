//! Helpers the kernels share: run-time SIMD dispatch, and branch-free `exp`, `erf` and
//! reductions that LLVM vectorises inside [`simd_dispatch!`].

/// Run a slice kernel compiled for the best instruction set the CPU has: the loops in
/// the kernels are written branch-free so that LLVM vectorises them for AVX2/AVX-512.
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
pub(crate) static HAS_AVX512: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
});
#[cfg(target_arch = "x86_64")]
pub(crate) static HAS_AVX2: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
});

/// erf(x) as a rational function on [-4, 4] (the f32 approximation of Eigen and XLA; beyond
/// +-4 erf is +-1 in f32). Branch-free, so loops over it vectorise; error about 1e-7.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
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
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.0);
    // Round to nearest without a libm call: adding 1.5 * 2^23 pushes the fraction out,
    // and leaves n in the low bits of the sum's mantissa.
    let shifted = xc * LOG2E + 12_582_912.0;
    let n = shifted - 12_582_912.0;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from those bits: an integer op, where `n as i32` (a saturating cast) would
    // keep the loop scalar.
    let biased = (shifted.to_bits() as i32).wrapping_sub(0x4B40_0000 - 127);
    let pow2 = f32::from_bits((biased as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        y * pow2
    }
}

/// Sum with eight partial sums, so that it vectorises.
#[inline(always)]
pub(crate) fn sum8(x: &[f32]) -> f32 {
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

/// Maximum with sixteen partial maxima, so that it vectorises (`f32::max` folded in order
/// is a serial chain of compares); NaN-free input assumed, as in a softmax row.
#[inline(always)]
pub(crate) fn max16(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    acc.iter().fold(tail, |a, &v| a.max(v))
}

/// Dot product with eight partial sums, so that it vectorises.
#[inline(always)]
pub(crate) fn dot8(a: &[f32], b: &[f32]) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_zero_below_the_f32_range() {
        let mut x = -87.25f32;
        while x < 88.0 {
            let (got, want) = (exp(x), (x as f64).exp());
            assert!(
                ((got as f64 - want) / want).abs() < 2.5e-7,
                "exp({x}) = {got}, libm {want}"
            );
            x += 0.013_7;
        }
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn max16_is_the_maximum_at_every_length_and_position() {
        for len in [1, 5, 16, 17, 40, 64] {
            for at in 0..len {
                let mut v: Vec<f32> = (0..len).map(|i| -(i as f32) - 1.0).collect();
                v[at] = 3.5;
                assert_eq!(max16(&v), 3.5, "len {len}, max at {at}");
            }
        }
        assert_eq!(max16(&[f32::NEG_INFINITY; 20]), f32::NEG_INFINITY);
    }
}
