//! The fused CPU kernels must agree with candle primitives, forward and backward.

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
