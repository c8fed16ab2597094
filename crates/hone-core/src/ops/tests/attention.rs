//! Both attention kernels against a reference written in candle primitives, the KV cache
//! against attention over the whole sequence, and the probabilities distillation records.

use super::super::attention::{attention_with, Kernel};
use super::super::*;
use super::{grad_of, grads3, max_abs_diff, randn};
use candle_core::Device;

/// `softmax(q k^T * scale + mask) [* keep] v` over `[B, T, H * D]` inputs, written out
/// in candle primitives independently of the op: the reference for both kernels.
fn reference_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
    keep: Option<&Tensor>,
) -> Result<Tensor> {
    let (b, tq, width) = q.dims3()?;
    let d = width / heads;
    let split = |t: &Tensor| -> Result<Tensor> {
        let (b, t_, _) = t.dims3()?;
        t.reshape((b, t_, heads, d))?.transpose(1, 2)?.contiguous()
    };
    let s = (split(q)?.matmul(&split(k)?.t()?)? / (d as f64).sqrt())?;
    let s = match mask {
        Some(m) => s.broadcast_add(m)?,
        None => s,
    };
    let e = s
        .broadcast_sub(&s.max_keepdim(D::Minus1)?.detach())?
        .exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    let p = match keep {
        Some(k) => p.broadcast_mul(k)?,
        None => p,
    };
    p.matmul(&split(v)?)?
        .transpose(1, 2)?
        .reshape((b, tq, width))
}

/// A fixed keep-mask, checked against the shape the op asks for.
struct FixedKeep(Tensor);

impl KeepMask for FixedKeep {
    fn keep_mask(&self, shape: &[usize], dtype: DType, _: &Device) -> Result<Option<Tensor>> {
        assert_eq!(
            shape,
            self.0.dims(),
            "keep-mask drawn in the probabilities' shape"
        );
        Ok(Some(self.0.to_dtype(dtype)?))
    }
}

/// A dropout keep-mask for p = 0.25 (about), scaled by 1/(1-p).
fn random_keep(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, seed)
        .ge(-1.5)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(1.0 / 0.75, 0.0)
        .unwrap()
}

/// An additive causal mask `[1, 1, Tq, Tk]` for queries at positions `offset..offset + Tq`.
fn causal(tq: usize, tk: usize, offset: usize) -> Tensor {
    let m: Vec<f32> = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| if j > offset + i { -1e9 } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (1, 1, tq, tk), &Device::Cpu).unwrap()
}

/// The op's output and gradients (as `run` takes them) by each kernel, against the
/// reference's.
fn check_kernels<T>(
    what: &str,
    run: impl Fn(&dyn Fn(&T) -> Result<Tensor>) -> (Tensor, Vec<Tensor>),
    op: impl Fn(Option<Kernel>, &T) -> Result<Tensor>,
    reference: impl Fn(&T) -> Result<Tensor>,
) {
    let (y_ref, g_ref) = run(&reference);
    for kernel in [Kernel::CpuFused, Kernel::Composite] {
        let (y, g) = run(&|x| op(Some(kernel), x));
        assert_eq!(y.dims(), y_ref.dims(), "{what}, {kernel:?}");
        let dy = max_abs_diff(&y, &y_ref);
        assert!(dy < 1e-5, "{what}, {kernel:?}: forward differs by {dy}");
        for (i, (a, r)) in g.iter().zip(&g_ref).enumerate() {
            let dg = max_abs_diff(a, r);
            assert!(
                dg < 1e-4,
                "{what}, {kernel:?}: gradient {i} differs by {dg}"
            );
        }
    }
    // On f32 CPU tensors the op picks the fused kernel.
    let (auto, _) = run(&|x| op(None, x));
    let (fused, _) = run(&|x| op(Some(Kernel::CpuFused), x));
    assert_eq!(
        max_abs_diff(&auto, &fused),
        0.0,
        "{what}: fused kernel picked"
    );
}

#[test]
fn attention_kernels_match_reference_forward_and_backward() {
    // Odd sizes; Tq != Tk (cross-attention over a memory).
    let (b, h, tq, tk, d) = (3, 5, 7, 11, 9);
    let q = randn(&[b, tq, h * d], 31);
    let k = randn(&[b, tk, h * d], 32);
    let v = randn(&[b, tk, h * d], 33);
    // Padding mask [B, 1, 1, Tk] with the last keys of row 1 masked.
    let mut m = vec![0f32; b * tk];
    m[tk + 8..2 * tk].fill(-1e9);
    let mask = Tensor::from_vec(m, (b, 1, 1, tk), &Device::Cpu).unwrap();
    let keep = FixedKeep(random_keep(&[b, h, tq, tk], 34));
    let run3 = |f: &dyn Fn(&[Tensor; 3]) -> Result<Tensor>| {
        let (y, g) = grads3([&q, &k, &v], |q, k, v| {
            f(&[q.clone(), k.clone(), v.clone()])
        });
        (y, g.to_vec())
    };
    for (mask, keep) in [
        (None, None),
        (Some(&mask), None),
        (Some(&mask), Some(&keep)),
    ] {
        let drop = keep.map(|k| k as &dyn KeepMask);
        check_kernels(
            "separate",
            run3,
            |kernel, [q, k, v]| {
                let qkv = Qkv::Separate {
                    q: q.clone(),
                    k: k.clone(),
                    v: v.clone(),
                };
                attention_with(kernel, qkv, h, mask, drop, None, None)
            },
            |[q, k, v]| reference_attention(q, k, v, h, mask, keep.map(|k| &k.0)),
        );
    }

    // Packed [B, T, 3 * H * D] self-attention with a causal mask, with and without dropout.
    let t = 7;
    let qkv = randn(&[b, t, 3 * h * d], 35);
    let mask = causal(t, t, 0);
    let keep = FixedKeep(random_keep(&[b, h, t, t], 36));
    let run1 = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let (y, g) = grad_of(&qkv, f);
        (y, vec![g])
    };
    for keep in [None, Some(&keep)] {
        let drop = keep.map(|k| k as &dyn KeepMask);
        check_kernels(
            "packed",
            run1,
            |kernel, x| {
                attention_with(
                    kernel,
                    Qkv::Packed(x.clone()),
                    h,
                    Some(&mask),
                    drop,
                    None,
                    None,
                )
            },
            |x| {
                let w = h * d;
                let (q, k, v) = (
                    x.narrow(2, 0, w)?,
                    x.narrow(2, w, w)?,
                    x.narrow(2, 2 * w, w)?,
                );
                reference_attention(&q, &k, &v, h, Some(&mask), keep.map(|k| &k.0))
            },
        );
    }
}

#[test]
fn cached_attention_matches_attention_over_the_whole_sequence() {
    // A 5-token prompt, then 3 tokens one at a time, against one pass over all 8; packed
    // (GPT-2) and separate projections, both kernels.
    let (b, h, d, t) = (2, 3, 4, 8);
    let qkv = randn(&[b, t, 3 * h * d], 51);
    let packed = |x: &Tensor| Qkv::Packed(x.clone());
    let separate = |x: &Tensor| {
        let w = h * d;
        Qkv::Separate {
            q: x.narrow(2, 0, w).unwrap(),
            k: x.narrow(2, w, w).unwrap(),
            v: x.narrow(2, 2 * w, w).unwrap(),
        }
    };
    let forms: [&dyn Fn(&Tensor) -> Qkv; 2] = [&packed, &separate];
    for form in forms {
        for kernel in [Kernel::CpuFused, Kernel::Composite] {
            let full = attention_with(
                Some(kernel),
                form(&qkv),
                h,
                Some(&causal(t, t, 0)),
                None,
                None,
                None,
            )
            .unwrap();
            let mut cache = KvCache::default();
            let mut steps = vec![];
            for (start, len) in [(0, 5), (5, 1), (6, 1), (7, 1)] {
                let x = qkv.narrow(1, start, len).unwrap();
                let mask = causal(len, start + len, start);
                let y = attention_with(
                    Some(kernel),
                    form(&x),
                    h,
                    Some(&mask),
                    None,
                    Some(&mut cache),
                    None,
                );
                steps.push(y.unwrap());
                assert_eq!(cache.len(), start + len);
            }
            let cached = Tensor::cat(&steps, 1).unwrap();
            let diff = max_abs_diff(&cached, &full);
            assert!(diff < 1e-5, "{kernel:?}: cached differs by {diff}");
        }
    }
}
#[test]
fn attention_probs_weight_the_values_as_attention_does() {
    // The probabilities times V, heads merged, are the attention's own output.
    let dev = Device::Cpu;
    let (b, t, heads, d) = (2, 5, 3, 4);
    let qkv = Tensor::randn(0f32, 1.0, (b, t, 3 * heads * d), &dev).unwrap();
    // The second sequence's last two positions are padding.
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 1], [1, 1, 1, 0, 0]], &dev).unwrap();
    let mask = crate::model::layers::padding_mask(&mask).unwrap();
    let packed = Qkv::Packed(qkv.clone());
    let p = crate::ops::attention_probs(&packed, heads, Some(&mask)).unwrap();
    assert_eq!(p.dims(), &[b, heads, t, t]);
    let sums = p
        .sum(3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
    let padded = p.narrow(0, 1, 1).unwrap().narrow(3, 3, 2).unwrap();
    assert!(
        padded
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            < 1e-12
    );
    let v = qkv
        .narrow(2, 2 * heads * d, heads * d)
        .unwrap()
        .reshape((b, t, heads, d))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap();
    let y = p
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b, t, heads * d))
        .unwrap();
    let want = crate::ops::attention(packed, heads, Some(&mask), None, None, None).unwrap();
    let diff = (y - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "{diff}");
}
