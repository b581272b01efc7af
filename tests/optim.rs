//! Optimisers: hand-computed steps, the b-box projection, and projection as a no-op for large b.

use mtcool::optim::{AdamConfig, BoxProjection, Optimizer, SgdConfig};
use mtcool::params::ParamStore;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn store_with(values: &[f32], grads: &[f32]) -> (ParamStore, mtcool::params::ParamId) {
    let mut s = ParamStore::new();
    let id = s.add("w", Tensor::new(&[values.len()], values.to_vec()).unwrap());
    s.get_mut(id).grad = Tensor::new(&[grads.len()], grads.to_vec()).unwrap();
    (s, id)
}

#[test]
fn sgd_momentum_weight_decay_by_hand() {
    // θ = 1, g = 0.5, wd = 0.1 → g' = 0.6; v = 0.6; θ = 1 − 0.1·0.6 = 0.94.
    // Step 2 (same raw grad): g' = 0.5 + 0.094 = 0.594; v = 0.9·0.6 + 0.594 = 1.134; θ = 0.94 − 0.1134 = 0.8266.
    let (mut s, id) = store_with(&[1.0], &[0.5]);
    let mut opt = Optimizer::sgd(SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.1 });
    opt.step(&mut s, &[id], None).unwrap();
    assert!((s.value(id).data()[0] - 0.94).abs() < 1e-6);
    opt.step(&mut s, &[id], None).unwrap();
    assert!((s.value(id).data()[0] - 0.8266).abs() < 1e-6, "{}", s.value(id).data()[0]);
}

#[test]
fn adam_first_step_moves_by_lr_times_sign() {
    // Step 1: m̂ = g, v̂ = g², so Δ = lr·g/(|g| + eps) ≈ lr·sign(g).
    let (mut s, id) = store_with(&[1.0, -1.0, 0.3], &[2.0, -0.01, 5.0]);
    let mut opt = Optimizer::adam(AdamConfig::with_lr(0.01));
    opt.step(&mut s, &[id], None).unwrap();
    let got = s.value(id).data();
    for (g, w) in got.iter().zip([0.99f32, -0.99, 0.29]) {
        assert!((g - w).abs() < 1e-5, "{got:?}");
    }
    // Step 2 with the same gradient: m = 0.19g, bc1 = 0.19, v = 0.001999g², bc2 = 0.001999 → Δ = lr again.
    opt.step(&mut s, &[id], None).unwrap();
    assert!((s.value(id).data()[0] - 0.98).abs() < 1e-5);
}

fn random_store(rng: &mut StdRng) -> (ParamStore, Vec<mtcool::params::ParamId>) {
    let mut s = ParamStore::new();
    let a = s.add("a", Tensor::randn(&[5, 7], 1.0, rng));
    let b = s.add("b", Tensor::randn(&[13], 1.0, rng));
    for id in [a, b] {
        let shape = s.value(id).shape().to_vec();
        s.get_mut(id).grad = Tensor::randn(&shape, 3.0, rng);
    }
    (s, vec![a, b])
}

fn optimisers() -> Vec<Optimizer> {
    vec![
        Optimizer::sgd(SgdConfig { lr: 0.5, momentum: 0.9, weight_decay: 1e-3 }),
        Optimizer::adam(AdamConfig { lr: 0.2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-3 }),
    ]
}

#[test]
fn projected_steps_stay_in_the_box_around_the_snapshot() {
    let mut rng = StdRng::seed_from_u64(1);
    for mut opt in optimisers() {
        let (mut s, ids) = random_store(&mut rng);
        let b = 0.05;
        let bx = BoxProjection::snapshot(&s, &ids, b).unwrap();
        let snap: Vec<Tensor> = ids.iter().map(|&id| s.value(id).clone()).collect();
        let mut clamped = 0;
        for _ in 0..5 {
            opt.step(&mut s, &ids, Some(&bx)).unwrap();
            for (k, &id) in ids.iter().enumerate() {
                for (&v, &c) in s.value(id).data().iter().zip(snap[k].data()) {
                    assert!((v - c).abs() <= b + 1e-6, "{v} escaped [{c}±{b}]");
                    clamped += ((v - c).abs() > b - 1e-6) as usize;
                }
            }
        }
        assert!(clamped > 0, "the box never bound: the test would pass without projection");
    }
}

#[test]
fn projection_with_a_huge_box_is_a_no_op() {
    for k in 0..2 {
        let mut rng = StdRng::seed_from_u64(2);
        let (mut free, ids) = random_store(&mut rng);
        let mut boxed = free.clone();
        let (mut o1, mut o2) = (optimisers().remove(k), optimisers().remove(k));
        let bx = BoxProjection::snapshot(&boxed, &ids, 1e6).unwrap();
        for _ in 0..4 {
            o1.step(&mut free, &ids, None).unwrap();
            o2.step(&mut boxed, &ids, Some(&bx)).unwrap();
        }
        for &id in &ids {
            assert_eq!(free.value(id), boxed.value(id));
        }
    }
}

#[test]
fn parameters_outside_the_box_are_not_clamped() {
    let mut rng = StdRng::seed_from_u64(3);
    let (mut s, ids) = random_store(&mut rng);
    let before = s.value(ids[1]).clone();
    let bx = BoxProjection::snapshot(&s, &ids[..1], 1e-4).unwrap();
    let mut opt = Optimizer::sgd(SgdConfig { lr: 1.0, momentum: 0.0, weight_decay: 0.0 });
    opt.step(&mut s, &ids, Some(&bx)).unwrap();
    let moved = s.value(ids[1]).zip(&before, |a, b| (a - b).abs()).data().iter().cloned().fold(0.0, f32::max);
    assert!(moved > 1e-2, "unboxed parameter should move freely, moved {moved}");
}
