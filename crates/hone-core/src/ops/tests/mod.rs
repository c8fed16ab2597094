//! The fused CPU kernels must agree with candle primitives, forward and backward;
//! the losses agree with values worked by hand. Helpers here, tests by op family:
//! this file (softmax, norms, activations, linear, residuals, autocast), `attention`, `loss`.

mod attention;
mod loss;

use super::attention::{attention_with, Kernel};
use super::*;
use candle_core::{Device, Var};

pub(super) fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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
pub(super) fn grad_of(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> (Tensor, Tensor) {
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

/// Gradients of `sum(f(q, k, v) * probe)` for three inputs.
pub(super) fn grads3(
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
