//! Inverted dropout (CPU reference): counter-based masks, forward, backward.

mod common;

use common::{dot, fd_grad, nonzero};
use mtcool::backend::cpu::dropout::*;
use mtcool::noise::{stream, NoiseKey};
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn key(step: u32) -> NoiseKey {
    NoiseKey { seed: 0x1234_5678_9abc, step, stream: stream::DROPOUT, sample: 0 }
}

#[test]
fn forward_hand() {
    // p = 0.5 → kept scale 1/(1 − 0.5) = 2. x = [1, 2, 3, 4], mask = [2, 0, 2, 0] → [2, 0, 6, 0].
    let x = Tensor::new(&[1, 4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let mask = Tensor::new(&[1, 4], vec![2.0, 0.0, 2.0, 0.0]).unwrap();
    assert_eq!(dropout_forward(&x, &mask).data(), [2.0, 0.0, 6.0, 0.0]);
}

#[test]
fn mask_follows_key_units() {
    // Element i is kept iff key.unit(i) >= p, with value 1/(1 − p) = 1/0.75.
    let p = 0.25;
    let k = key(3);
    let mask = dropout_mask(&[2, 3, 4, 5], p, k);
    assert_eq!(mask.shape(), [2, 3, 4, 5]);
    for (i, &m) in mask.data().iter().enumerate() {
        let want = if k.unit(i as u32) >= p { 1.0 / 0.75 } else { 0.0 };
        assert_eq!(m, want, "element {i}");
    }
}

#[test]
fn keeps_about_one_minus_p() {
    let p = 0.3;
    let n = 200_000;
    let mask = dropout_mask(&[n], p, key(1));
    let kept = mask.data().iter().filter(|&&m| m != 0.0).count();
    let frac = kept as f64 / n as f64;
    // Binomial std ≈ sqrt(0.21 / 2e5) ≈ 0.001; allow 5σ.
    assert!((frac - 0.7).abs() < 0.005, "kept fraction {frac}");
    let scale = 1.0 / (1.0 - p);
    assert!(mask.data().iter().all(|&m| m == 0.0 || m == scale));
    // Inverted dropout preserves the mean: E[mask] = 1.
    let mean = mask.sum() / n as f64;
    assert!((mean - 1.0).abs() < 0.01, "mask mean {mean}");
}

#[test]
fn deterministic_per_key() {
    let shape = [4, 8, 16, 16];
    let a = dropout_mask(&shape, 0.5, key(10));
    let b = dropout_mask(&shape, 0.5, key(10));
    assert_eq!(a, b);
    let c = dropout_mask(&shape, 0.5, key(11));
    assert_ne!(a, c);
    let differing = a.data().iter().zip(c.data()).filter(|(x, y)| x != y).count();
    // Independent masks at p = 0.5 differ in about half the elements.
    assert!(differing > a.numel() / 3, "only {differing} of {} elements differ", a.numel());
}

#[test]
fn p_zero_is_identity() {
    let mask = dropout_mask(&[3, 7, 5], 0.0, key(2));
    assert!(mask.data().iter().all(|&m| m == 1.0));
    let mut rng = StdRng::seed_from_u64(1);
    let x = Tensor::randn(&[3, 7, 5], 1.0, &mut rng);
    assert_eq!(dropout_forward(&x, &mask), x);
}

#[test]
fn backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(5);
    let shape = [2, 3, 4, 4];
    let x = Tensor::randn(&shape, 1.0, &mut rng);
    let r = nonzero(&shape, &mut rng);
    let mask = dropout_mask(&shape, 0.4, key(7));
    let dx = dropout_backward(&r, &mask);
    let fx = fd_grad(&x, 1e-2, |x| dot(&dropout_forward(x, &mask), &r));
    assert!(dx.rel_err(&fx) < 1e-2, "dx rel err {}", dx.rel_err(&fx));
}

#[test]
#[should_panic(expected = "not in [0, 1)")]
fn rejects_p_one() {
    dropout_mask(&[4], 1.0, key(0));
}
