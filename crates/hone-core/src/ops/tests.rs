//! The fused CPU kernels must agree with candle primitives, forward and backward.

use super::attention::{attention_with, Kernel};
use super::*;
use candle_core::{Device, Var};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Gradient of `sum(f(x) * probe)` with respect to `x`, so every output element matters.
fn grad_of(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> (Tensor, Tensor) {
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor()).unwrap();
    let probe = randn(y.dims(), 99);
    let g = (&y * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    (
        y,
        g.get(v.as_tensor())
            .expect("no gradient reached the input")
            .clone(),
    )
}

#[test]
fn softmax_matches_composite_forward_and_backward() {
    // 37 columns: not a multiple of any vector width.
    let x = randn(&[3, 5, 37], 1);
    let (y1, g1) = grad_of(&x, softmax_last_dim);
    let (y2, g2) = grad_of(&x, |x| {
        let e = x
            .broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?
            .exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    });
    assert!(max_abs_diff(&y1, &y2) < 1e-6);
    assert!(max_abs_diff(&g1, &g2) < 1e-5);
    let row_sums = y1.sum(D::Minus1).unwrap();
    assert!(max_abs_diff(&row_sums, &row_sums.ones_like().unwrap()) < 1e-5);
}

#[test]
fn fully_masked_softmax_row_is_zero_not_nan() {
    let x = Tensor::new(
        &[[f32::NEG_INFINITY, f32::NEG_INFINITY], [0.0, 0.0]],
        &Device::Cpu,
    )
    .unwrap();
    let y = softmax_last_dim(&x).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(y, vec![vec![0.0, 0.0], vec![0.5, 0.5]]);
}

#[test]
fn layer_norm_matches_composite_forward_and_backward() {
    let x = randn(&[4, 3, 29], 2);
    let w = Var::from_tensor(&randn(&[29], 3)).unwrap();
    let b = Var::from_tensor(&randn(&[29], 4)).unwrap();
    let composite = |x: &Tensor| -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(D::Minus1)?;
        c.broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(w.as_tensor())?
            .broadcast_add(b.as_tensor())
    };
    let xv = Var::from_tensor(&x).unwrap();
    let probe = randn(x.dims(), 5);
    let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let y = f(xv.as_tensor()).unwrap();
        let grads = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = |t: &Tensor| grads.get(t).expect("missing gradient").clone();
        (y, g(xv.as_tensor()), g(w.as_tensor()), g(b.as_tensor()))
    };
    let fused = run(&|x| layer_norm(x, w.as_tensor(), b.as_tensor(), 1e-5));
    let reference = run(&composite);
    assert!(max_abs_diff(&fused.0, &reference.0) < 1e-5);
    assert!(max_abs_diff(&fused.1, &reference.1) < 1e-4);
    assert!(max_abs_diff(&fused.2, &reference.2) < 1e-4);
    assert!(max_abs_diff(&fused.3, &reference.3) < 1e-4);
}

#[test]
fn residual_layer_norm_matches_the_two_ops() {
    // Rows across several parallel chunks (4096 / 29 rows each) and a tail.
    let (x, h) = (randn(&[5, 61, 29], 6), randn(&[5, 61, 29], 7));
    let (w, b) = (randn(&[29], 8), randn(&[29], 9));
    let fused = residual_layer_norm_inference(&x, &h, &w, &b, 1e-12).unwrap();
    let two = layer_norm(&(&x + &h).unwrap(), &w, &b, 1e-12).unwrap();
    assert!(max_abs_diff(&fused, &two) < 1e-5);
}

#[test]
fn gelu_kernels_match_candle() {
    let x = randn(&[5, 1001], 6);
    let (y1, g1) = grad_of(&x, gelu_erf);
    let (y2, g2) = grad_of(&x, |x| x.gelu_erf());
    assert!(max_abs_diff(&y1, &y2) < 1e-6);
    assert!(max_abs_diff(&g1, &g2) < 1e-5);
    let (y1, g1) = grad_of(&x, gelu_tanh);
    let (y2, g2) = grad_of(&x, |x| x.gelu());
    assert!(max_abs_diff(&y1, &y2) < 1e-5);
    assert!(max_abs_diff(&g1, &g2) < 1e-4);
}

#[test]
fn cross_entropy_by_hand() {
    // Two rows, the second ignored: loss = -log softmax([1, 2, 3])[2].
    let logits = Tensor::new(&[[1f32, 2., 3.], [5., 0., 0.]], &Device::Cpu).unwrap();
    let targets = Tensor::new(&[2i64, -100], &Device::Cpu).unwrap();
    let opts = CrossEntropyOptions {
        ignore_index: Some(-100),
        ..Default::default()
    };
    let loss: f32 = cross_entropy(&logits, &targets, &opts)
        .unwrap()
        .to_scalar()
        .unwrap();
    let expected = -(3f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp())).ln();
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");

    // Class weights: weighted mean over the kept rows.
    let targets = Tensor::new(&[2i64, 0], &Device::Cpu).unwrap();
    let w = Tensor::new(&[2f32, 1., 0.5], &Device::Cpu).unwrap();
    let opts = CrossEntropyOptions {
        class_weights: Some(w),
        ..Default::default()
    };
    let loss: f32 = cross_entropy(&logits, &targets, &opts)
        .unwrap()
        .to_scalar()
        .unwrap();
    let lse1 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln();
    let lse2 = (5f32.exp() + 2.0).ln();
    let expected = (0.5 * (lse1 - 3.0) + 2.0 * (lse2 - 5.0)) / 2.5;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");

    // Label smoothing 0.1 on one row: 0.9 * nll + 0.1 * mean(-log p).
    let logits = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu).unwrap();
    let targets = Tensor::new(&[0i64], &Device::Cpu).unwrap();
    let opts = CrossEntropyOptions {
        label_smoothing: 0.1,
        ..Default::default()
    };
    let loss: f32 = cross_entropy(&logits, &targets, &opts)
        .unwrap()
        .to_scalar()
        .unwrap();
    let nll = lse1 - 1.0;
    let smooth = ((lse1 - 1.0) + (lse1 - 2.0) + (lse1 - 3.0)) / 3.0;
    let expected = 0.9 * nll + 0.1 * smooth;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
}

#[test]
fn bce_with_logits_by_hand() {
    let x = Tensor::new(&[0.5f32, -2.0], &Device::Cpu).unwrap();
    let y = Tensor::new(&[1f32, 0.0], &Device::Cpu).unwrap();
    let loss: f32 = binary_cross_entropy_with_logits(&x, &y)
        .unwrap()
        .to_scalar()
        .unwrap();
    let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
    let expected = (-(sig(0.5).ln()) - (1.0 - sig(-2.0)).ln()) / 2.0;
    assert!((loss - expected).abs() < 1e-6);
}

#[test]
fn fast_erf_and_exp_are_accurate() {
    let mut worst_erf = 0f64;
    let mut worst_exp = 0f64;
    for i in -60_000..=60_000 {
        let x = i as f32 * 1e-4;
        let e = candle_core::cpu::erf::erf_f64(x as f64);
        worst_erf = worst_erf.max((cpu::erf(x) as f64 - e).abs());
        let x = i as f32 * 1.4e-3; // -84 ..= 84
        let e = (x as f64).exp();
        worst_exp = worst_exp.max(((cpu::exp(x) as f64 - e) / e).abs());
    }
    assert!(worst_erf < 5e-7, "erf error {worst_erf}");
    assert!(worst_exp < 5e-7, "exp relative error {worst_exp}");
    assert_eq!(cpu::exp(-100.0), 0.0);
    assert_eq!(cpu::exp(f32::NEG_INFINITY), 0.0);
}

/// Gradients of `sum(f(q, k, v) * probe)` for three inputs.
fn grads3(
    inputs: [&Tensor; 3],
    f: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
) -> (Tensor, [Tensor; 3]) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let y = f(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
    )
    .unwrap();
    let probe = randn(y.dims(), 77);
    let g = (&y * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let get = |i: usize| {
        g.get(vars[i].as_tensor())
            .unwrap_or_else(|| panic!("no gradient for input {i}"))
            .clone()
    };
    (y, [get(0), get(1), get(2)])
}

#[test]
fn fused_linear_matches_composite_forward_and_backward() {
    let x = randn(&[13, 37], 21);
    let w = randn(&[19, 37], 22);
    let bias = randn(&[19], 23);
    let (y1, g1) = grads3([&x, &w, &bias], |x, w, b| {
        linear(x, w, Some(b), false, None)
    });
    let (y2, g2) = grads3([&x, &w, &bias], |x, w, b| {
        x.matmul(&w.t()?)?.broadcast_add(b)
    });
    assert!(max_abs_diff(&y1, &y2) < 1e-4);
    for (a, r) in g1.iter().zip(&g2) {
        assert!(max_abs_diff(a, r) < 1e-3);
    }
    // Stored [in, out] (GPT-2 Conv1D), no bias, and a strided (transposed) input.
    let wt = randn(&[37, 19], 24);
    let xt = randn(&[37, 13], 25);
    let (y1, g1) = grads3([&xt, &wt, &bias], |x, w, b| {
        linear(&x.t()?, w, None, true, None)?.broadcast_add(b)
    });
    let (y2, g2) = grads3([&xt, &wt, &bias], |x, w, b| {
        x.t()?.matmul(w)?.broadcast_add(b)
    });
    assert!(max_abs_diff(&y1, &y2) < 1e-4);
    for (a, r) in g1.iter().zip(&g2) {
        assert!(max_abs_diff(a, r) < 1e-3);
    }
}

#[test]
fn fused_linear_folds_leading_dimensions() {
    // A 3-d input [B, T, in] against the composite broadcast matmul, both weight layouts.
    let x = randn(&[3, 5, 37], 26);
    let bias = randn(&[19], 27);
    for (w, transposed) in [(randn(&[19, 37], 28), false), (randn(&[37, 19], 29), true)] {
        let (y1, g1) = grads3([&x, &w, &bias], |x, w, b| {
            linear(x, w, Some(b), transposed, None)
        });
        let (y2, g2) = grads3([&x, &w, &bias], |x, w, b| {
            let w = if transposed { w.clone() } else { w.t()? };
            x.broadcast_matmul(&w)?.broadcast_add(b)
        });
        assert_eq!(y1.dims(), [3, 5, 19]);
        assert!(max_abs_diff(&y1, &y2) < 1e-4);
        for (i, (a, r)) in g1.iter().zip(&g2).enumerate() {
            assert!(max_abs_diff(a, r) < 1e-3, "gradient of input {i}");
        }
    }
}

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
fn residual_add_matches_composite_forward_and_backward() {
    // 4099 elements: more than one parallel chunk, not a multiple of any vector width.
    let x = randn(&[17, 241], 41);
    let hh = randn(&[17, 241], 42);
    let keep = randn(&[17, 241], 43)
        .ge(-2.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .affine(1.0 / 0.9, 0.0)
        .unwrap();
    // Gradients of sum(f(x, h) * probe) for both inputs.
    let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| {
        let (vx, vh) = (
            Var::from_tensor(&x).unwrap(),
            Var::from_tensor(&hh).unwrap(),
        );
        let y = f(vx.as_tensor(), vh.as_tensor()).unwrap();
        let g = (&y * &randn(y.dims(), 44))
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let get = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
        (y, get(&vx), get(&vh))
    };
    for keep in [None, Some(&keep)] {
        let (y1, gx1, gh1) = run(&|x, h| residual_add(x, h, keep));
        let (y2, gx2, gh2) = run(&|x, h| match keep {
            Some(k) => x + h.mul(k)?,
            None => x + h,
        });
        assert_eq!(max_abs_diff(&y1, &y2), 0.0, "forward is bit-identical");
        assert_eq!(max_abs_diff(&gx1, &gx2), 0.0);
        assert_eq!(max_abs_diff(&gh1, &gh2), 0.0);
    }
}

#[test]
fn autocast_runs_products_in_bf16_and_hands_back_f32_gradients() {
    let bf16 = Some(DType::BF16);
    let x = randn(&[2, 5, 12], 40);
    let w = Var::from_tensor(&(randn(&[7, 12], 41) * 0.3).unwrap()).unwrap();
    let b = Var::from_tensor(&randn(&[7], 42)).unwrap();
    let fp32 = linear(&x, w.as_tensor(), Some(b.as_tensor()), false, None).unwrap();
    let low = linear(&x, w.as_tensor(), Some(b.as_tensor()), false, bf16).unwrap();
    assert_eq!(low.dtype(), DType::F32);
    let diff = max_abs_diff(&fp32, &low);
    // bf16 keeps 8 bits of mantissa: relative error ~ 2^-8 on sums of 12 products ~ 3.
    assert!(diff > 0.0 && diff < 0.15, "bf16 linear differs by {diff}");
    let grads = low.sum_all().unwrap().backward().unwrap();
    let gw = grads
        .get(w.as_tensor())
        .expect("the weight gets a gradient");
    assert_eq!(gw.dtype(), DType::F32, "master weights keep f32 gradients");
    assert!(
        grads.get(b.as_tensor()).is_some(),
        "the bias gets a gradient"
    );
    // Autocast leaves operands of other dtypes alone.
    let x64 = x.to_dtype(DType::F64).unwrap();
    let w64 = w.as_tensor().to_dtype(DType::F64).unwrap();
    let y64 = linear(&x64, &w64, None, false, bf16).unwrap();
    assert_eq!(y64.dtype(), DType::F64);

    // Attention under autocast runs the composite kernel, close to the fused f32 one.
    let qkv = Qkv::Packed(randn(&[1, 6, 3 * 2 * 4], 43));
    let exact = attention(qkv.clone(), 2, None, None, None, None).unwrap();
    let low = attention(qkv.clone(), 2, None, None, None, bf16).unwrap();
    let composite =
        attention_with(Some(Kernel::Composite), qkv, 2, None, None, None, bf16).unwrap();
    assert_eq!(
        max_abs_diff(&low, &composite),
        0.0,
        "composite kernel picked"
    );
    let diff = max_abs_diff(&exact, &low);
    assert!(diff > 0.0 && diff < 0.1, "bf16 attention differs by {diff}");
}

#[test]
fn distillation_loss_by_hand() {
    // KL(softmax(t/2) || softmax(s/2)) summed over classes, the mean over the two rows, x 4:
    // 0.97592505 (computed with plain float arithmetic outside hone).
    let s = Tensor::new(&[[1f32, 2., 3.], [0.5, -1., 0.]], &Device::Cpu).unwrap();
    let t = Tensor::new(&[[3f32, 2., 1.], [0., -1., 2.]], &Device::Cpu).unwrap();
    let loss: f32 = distillation_loss(&s, &t, 2.0).unwrap().to_scalar().unwrap();
    assert!((loss - 0.975_925_1).abs() < 1e-6, "{loss}");
    // A student that matches its teacher has nothing to learn.
    let same: f32 = distillation_loss(&t, &t, 3.0).unwrap().to_scalar().unwrap();
    assert!(same.abs() < 1e-7, "{same}");
    // The gradient flows to the student only: d/ds of T^2 KL / N is T (p_s - p_t) / N.
    let sv = candle_core::Var::from_tensor(&s).unwrap();
    let tv = candle_core::Var::from_tensor(&t).unwrap();
    let grads = distillation_loss(sv.as_tensor(), tv.as_tensor(), 2.0)
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        grads.get(tv.as_tensor()).is_none(),
        "no gradient into the teacher"
    );
    let g = grads.get(sv.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    let softmax = |v: &[f32]| {
        let e: Vec<f32> = v.iter().map(|x| (x / 2.0).exp()).collect();
        let z: f32 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect::<Vec<f32>>()
    };
    for (row, (sr, tr)) in [
        ([1f32, 2., 3.], [3f32, 2., 1.]),
        ([0.5, -1., 0.], [0., -1., 2.]),
    ]
    .iter()
    .enumerate()
    {
        let (ps, pt) = (softmax(sr), softmax(tr));
        for c in 0..3 {
            let want = 2.0 * (ps[c] - pt[c]) / 2.0;
            assert!(
                (g[row][c] - want).abs() < 1e-6,
                "row {row} class {c}: {} vs {want}",
                g[row][c]
            );
        }
    }
    assert!(distillation_loss(&s, &t.narrow(1, 0, 2).unwrap(), 2.0).is_err());
}

#[test]
fn masked_mse_by_hand() {
    // [2, 2, 1] states, the second row's second token padding: (1^2 + 2^2 + 3^2) / 3.
    let a = Tensor::new(&[[[1f32], [2.]], [[3.], [100.]]], &Device::Cpu).unwrap();
    let b = Tensor::new(&[[[0f32], [0.]], [[0.], [0.]]], &Device::Cpu).unwrap();
    let w = Tensor::new(&[[1f32, 1.], [1., 0.]], &Device::Cpu)
        .unwrap()
        .unsqueeze(2)
        .unwrap();
    let av = candle_core::Var::from_tensor(&a).unwrap();
    let loss = crate::ops::masked_mse(av.as_tensor(), &b, &w).unwrap();
    let v: f32 = loss.to_scalar().unwrap();
    assert!((v - 14.0 / 3.0).abs() < 1e-6, "{v}");
    // d/da = 2 w (a - b) / sum(w): the padding gets none.
    let g = loss.backward().unwrap();
    let g = g.get(av.as_tensor()).unwrap().flatten_all().unwrap();
    let g = g.to_vec1::<f32>().unwrap();
    let want = [2.0 / 3.0, 4.0 / 3.0, 2.0, 0.0];
    for (x, y) in g.iter().zip(want) {
        assert!((x - y).abs() < 1e-6, "{g:?} vs {want:?}");
    }
    assert!(crate::ops::masked_mse(&a, &b, &w.zeros_like().unwrap()).is_err());
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
