//! The losses against values worked by hand.

use super::super::*;
use candle_core::Device;

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
