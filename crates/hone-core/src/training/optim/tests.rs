use super::*;

fn var(v: &[f32]) -> Var {
    Var::from_slice(v, v.len(), &Device::Cpu).unwrap()
}

fn param(name: &str, v: &[f32], decay: bool) -> TrainParam {
    TrainParam {
        name: name.into(),
        var: var(v),
        decay,
    }
}

fn grads_for(params: &[TrainParam], gs: &[&[f32]]) -> GradStore {
    let mut store = GradStore::default();
    for (p, g) in params.iter().zip(gs) {
        let t = Tensor::from_slice(g, p.var.shape(), &Device::Cpu)
            .unwrap()
            .to_dtype(p.var.dtype())
            .unwrap();
        store.insert(p.var.as_tensor(), t);
    }
    store
}

fn values(p: &TrainParam) -> Vec<f64> {
    p.var
        .as_tensor()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
    }
}

/// AdamW in f64, straight from the PyTorch docs, for several steps.
fn adamw_reference(p0: &[f64], grads: &[Vec<f64>], lr: f64, c: &AdamWConfig) -> Vec<f64> {
    let mut p = p0.to_vec();
    let (mut m, mut v) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    for (t, g) in grads.iter().enumerate() {
        let t = (t + 1) as f64;
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * c.weight_decay;
            m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
            v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
            let m_hat = m[i] / (1.0 - c.beta1.powf(t));
            let v_hat = v[i] / (1.0 - c.beta2.powf(t));
            p[i] -= lr * m_hat / (v_hat.sqrt() + c.eps);
        }
    }
    p
}

#[test]
fn adamw_one_step_by_hand() {
    let c = AdamWConfig::default();
    let params = vec![param("w", &[1.0, -2.0, 3.0], true)];
    let mut opt = AdamW::new(params, c).unwrap();
    let g = grads_for(opt.params(), &[&[0.1, -0.2, 0.3]]);
    opt.step(&g, 0.1).unwrap();
    // First step: m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps), after
    // the decay p *= 1 - lr * wd = 0.999.
    let want: Vec<f64> = [(1.0, 0.1), (-2.0, -0.2), (3.0, 0.3)]
        .iter()
        .map(|&(p, g): &(f64, f64)| p * 0.999 - 0.1 * g / (g.abs() + 1e-8))
        .collect();
    close(&values(&opt.params()[0]), &want, 1e-6);
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn adamw_several_steps_match_the_formula_on_both_paths() {
    let c = AdamWConfig {
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.1,
    };
    let p0 = [0.5f32, -1.5, 2.0, 0.0];
    let gs: Vec<Vec<f32>> = vec![
        vec![0.3, -0.1, 0.02, 1.0],
        vec![-0.2, 0.4, 0.01, 0.5],
        vec![0.05, 0.0, -0.3, -2.0],
    ];
    let want = adamw_reference(
        &p0.map(f64::from),
        &gs.iter()
            .map(|g| g.iter().map(|&x| x as f64).collect())
            .collect::<Vec<_>>(),
        0.05,
        &c,
    );
    // f32 parameters take the fused CPU kernel, f64 ones the composite candle ops.
    for dtype in [DType::F32, DType::F64] {
        let mut p = param("w", &p0, true);
        p.var = Var::from_tensor(&p.var.as_tensor().to_dtype(dtype).unwrap()).unwrap();
        let mut opt = AdamW::new(vec![p], c).unwrap();
        for g in &gs {
            let store = grads_for(opt.params(), &[g]);
            opt.step(&store, 0.05).unwrap();
        }
        close(&values(&opt.params()[0]), &want, 1e-6);
    }
}

#[test]
fn decay_rule_spares_vectors_and_freezing_drops_params() {
    let matrix = |v: &[f32]| Var::from_slice(v, (1, v.len()), &Device::Cpu).unwrap();
    let rule = DecayRule::Matrices;
    assert!(rule.decays(&matrix(&[1.0, 2.0])));
    assert!(!rule.decays(&var(&[1.0, 2.0])));
    assert!(DecayRule::All.decays(&var(&[1.0, 2.0])));

    let frozen = ["emb.".to_string()];
    let all = vec![
        ("emb.weight".to_string(), matrix(&[1.0])),
        ("dense.weight".to_string(), matrix(&[1.0, 2.0])),
        ("dense.bias".to_string(), var(&[1.0, 2.0])),
    ];
    let params = select_params(all.clone(), rule, &frozen).unwrap();
    let names: Vec<(&str, bool)> = params.iter().map(|p| (p.name.as_str(), p.decay)).collect();
    assert_eq!(names, [("dense.weight", true), ("dense.bias", false)]);
    let typo = ["emb.wieght".to_string()];
    let err = select_params(all, rule, &typo).unwrap_err().to_string();
    assert!(err.contains("emb.wieght"), "{err}");

    // With zero gradients Adam moves nothing, so only the decay shows: 1 - lr*wd.
    let c = AdamWConfig {
        weight_decay: 0.5,
        ..Default::default()
    };
    let mut opt = AdamW::new(params, c).unwrap();
    let g = grads_for(opt.params(), &[&[0.0, 0.0], &[0.0, 0.0]]);
    opt.step(&g, 0.1).unwrap();
    close(&values(&opt.params()[0]), &[0.95, 1.9], 1e-7);
    close(&values(&opt.params()[1]), &[1.0, 2.0], 0.0);
}

#[test]
fn sgd_momentum_two_steps_by_hand() {
    for dtype in [DType::F32, DType::F64] {
        let mk = |c: SgdConfig| {
            let mut p = param("w", &[1.0], true);
            p.var = Var::from_tensor(&p.var.as_tensor().to_dtype(dtype).unwrap()).unwrap();
            Sgd::new(vec![p], c).unwrap()
        };
        // buf = 0.5 -> p = 1 - 0.1*0.5 = 0.95; buf = 0.9*0.5 + 0.25 = 0.7 -> p = 0.88.
        let mut opt = mk(SgdConfig {
            momentum: 0.9,
            ..Default::default()
        });
        for (g, want) in [(0.5, 0.95), (0.25, 0.88)] {
            let store = grads_for(opt.params(), &[&[g]]);
            opt.step(&store, 0.1).unwrap();
            close(&values(&opt.params()[0]), &[want], 1e-6);
        }
        // Nesterov with L2 decay 0.1: g' = 0.5 + 0.1 = 0.6, buf = 0.6,
        // d = 0.6 + 0.9*0.6 = 1.14 -> p = 0.886; g' = 0.25 + 0.0886 = 0.3386,
        // buf = 0.54 + 0.3386 = 0.8786, d = 0.3386 + 0.79074 = 1.12934 -> p = 0.773066.
        let mut opt = mk(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
            ..Default::default()
        });
        for (g, want) in [(0.5, 0.886), (0.25, 0.773066)] {
            let store = grads_for(opt.params(), &[&[g]]);
            opt.step(&store, 0.1).unwrap();
            close(&values(&opt.params()[0]), &[want], 1e-6);
        }
        // Dampening 0.5 and no momentum on the first step: buf = g, then 0.9*buf + 0.5*g.
        let mut opt = mk(SgdConfig {
            momentum: 0.9,
            dampening: 0.5,
            ..Default::default()
        });
        for (g, want) in [(0.5, 0.95), (0.25, 0.95 - 0.1 * (0.45 + 0.125))] {
            let store = grads_for(opt.params(), &[&[g]]);
            opt.step(&store, 0.1).unwrap();
            close(&values(&opt.params()[0]), &[want], 1e-6);
        }
    }
    assert!(Sgd::new(
        vec![],
        SgdConfig {
            nesterov: true,
            ..Default::default()
        }
    )
    .is_err());
}

#[test]
fn clip_grad_norm_scales_by_hand() {
    let params = vec![param("a", &[0.0, 0.0], true), param("b", &[0.0], true)];
    let mut g = grads_for(&params, &[&[3.0, 4.0], &[12.0]]);
    assert!((global_grad_norm(&params, &g).unwrap() - 13.0).abs() < 1e-12);
    // Below the limit: untouched.
    assert_eq!(clip_grad_norm(&params, &mut g, 20.0).unwrap(), 13.0);
    let a: Vec<f32> = g.get(params[0].var.as_tensor()).unwrap().to_vec1().unwrap();
    assert_eq!(a, [3.0, 4.0]);
    // Above: scaled by 1 / (13 + 1e-6).
    let total = clip_grad_norm(&params, &mut g, 1.0).unwrap();
    assert!((total - 13.0).abs() < 1e-12);
    let k = 1.0 / (13.0 + 1e-6);
    let a: Vec<f32> = g.get(params[0].var.as_tensor()).unwrap().to_vec1().unwrap();
    let b: Vec<f32> = g.get(params[1].var.as_tensor()).unwrap().to_vec1().unwrap();
    close(
        &[a[0] as f64, a[1] as f64, b[0] as f64],
        &[3.0 * k, 4.0 * k, 12.0 * k],
        1e-7,
    );
    assert!((global_grad_norm(&params, &g).unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn non_finite_gradient_is_named() {
    let params = vec![param("a", &[0.0, 0.0], true), param("b", &[0.0], true)];
    let g = grads_for(&params, &[&[1.0, 2.0], &[f32::NAN]]);
    assert_eq!(
        first_non_finite_grad(&params, &g).unwrap().as_deref(),
        Some("b")
    );
    let err = check_finite_grads(&params, &g).unwrap_err().to_string();
    assert!(err.contains("`b`"), "{err}");
    assert!(!global_grad_norm(&params, &g).unwrap().is_finite());
    let g = grads_for(&params, &[&[1.0, 2.0], &[3.0]]);
    assert!(check_finite_grads(&params, &g).is_ok());
}

#[test]
fn accumulator_sums_scaled_micro_batches() {
    let params = vec![param("a", &[0.0, 0.0], true), param("b", &[0.0], true)];
    let first = grads_for(&params, &[&[1.0, 2.0], &[3.0]]);
    let second = grads_for(&params[..1], &[&[3.0, 6.0]]);
    let mut acc = GradAccumulator::new();
    acc.add(&params, &first, 0.5).unwrap();
    acc.add(&params, &second, 0.5).unwrap();
    assert_eq!(acc.micro_batches(), 2);
    // The caller's gradients are not written into.
    let a: Vec<f32> = first
        .get(params[0].var.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, [1.0, 2.0]);
    let out = acc.take();
    let a: Vec<f32> = out
        .get(params[0].var.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = out
        .get(params[1].var.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!((a, b), (vec![2.0, 4.0], vec![1.5]));
    assert_eq!(acc.micro_batches(), 0);

    acc.add(&params, &first, 1.0).unwrap();
    acc.add(&params, &second, 1.0).unwrap();
    let out = acc.take_mean().unwrap();
    let a: Vec<f32> = out
        .get(params[0].var.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, [2.0, 4.0]);
}

fn two_params() -> Vec<TrainParam> {
    vec![
        param("dense.weight", &[0.5, -0.25, 1.0, 2.0], true),
        param("dense.bias", &[0.1, -0.1], false),
    ]
}

fn grad_seq(k: usize) -> [Vec<f32>; 2] {
    let k = k as f32;
    [
        vec![0.1 * k, -0.3, 0.02 * k * k, 1.0 - k],
        vec![0.5 - 0.2 * k, 0.07],
    ]
}

fn run<O: Optimizer>(opt: &mut O, from: usize, to: usize) {
    for k in from..to {
        let [a, b] = grad_seq(k);
        let store = grads_for(opt.params(), &[&a, &b]);
        opt.step(&store, 0.01 * (k + 1) as f64).unwrap();
    }
}

fn bits(params: &[TrainParam]) -> Vec<Vec<u32>> {
    params
        .iter()
        .map(|p| {
            let v: Vec<f32> = p.var.as_tensor().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        })
        .collect()
}

fn resumed<O: Optimizer>(make: impl Fn(Vec<TrainParam>) -> O, tag: &str) {
    let mut straight = make(two_params());
    run(&mut straight, 0, 4);

    let mut first = make(two_params());
    run(&mut first, 0, 2);
    let dir = std::env::temp_dir().join(format!("hone-optim-{tag}-{}", std::process::id()));
    first.save(&dir).unwrap();
    // Training goes on after the save; the saved state must not follow it.
    run(&mut first, 2, 3);

    // A fresh process: parameters as saved at step 2, state from disk.
    let fresh = two_params();
    let mut replay = make(two_params());
    run(&mut replay, 0, 2);
    for (f, r) in fresh.iter().zip(replay.params()) {
        f.var.set(&r.var.as_tensor().copy().unwrap()).unwrap();
    }
    let mut second = make(fresh);
    second.load(&dir).unwrap();
    assert_eq!(second.step_count(), 2);
    run(&mut second, 2, 4);
    assert_eq!(bits(second.params()), bits(straight.params()));
    assert_eq!(second.step_count(), 4);

    // A state whose tensor has the wrong shape, or is missing, is refused by name.
    let mut state = OptimizerState::load(&dir, &Device::Cpu).unwrap();
    let key = state.tensors.keys().next().unwrap().clone();
    state.tensors.insert(
        key.clone(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = format!("{:#}", make(two_params()).load_state(state).unwrap_err());
    assert!(err.contains(&key) && err.contains("[3]"), "{err}");
    let mut state = OptimizerState::load(&dir, &Device::Cpu).unwrap();
    state.tensors.remove(&key);
    let err = format!("{:#}", make(two_params()).load_state(state).unwrap_err());
    assert!(err.contains(&key) && err.contains("missing"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn adamw_state_round_trip_is_bit_exact() {
    resumed(|p| AdamW::new(p, AdamWConfig::default()).unwrap(), "adamw");
}

#[test]
fn sgd_state_round_trip_is_bit_exact() {
    let c = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.01,
        ..Default::default()
    };
    resumed(|p| Sgd::new(p, c).unwrap(), "sgd");
}

#[test]
fn state_of_another_kind_is_refused() {
    let mut adam = AdamW::new(two_params(), AdamWConfig::default()).unwrap();
    run(&mut adam, 0, 1);
    let mut sgd = Sgd::new(two_params(), SgdConfig::default()).unwrap();
    let err = sgd
        .load_state(adam.state().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("adamw"), "{err}");
}
