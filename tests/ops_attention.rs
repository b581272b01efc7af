//! CPU reference attention ops (bmm, softmax_lastdim, sigmoid_gate): hand-computed values, the fast
//! bmm against its reference loops on every transpose, and adjoint identities of the backwards.

mod common;

use common::{assert_close, dot, nonzero, t};
use mtcool::backend::cpu::attention::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn bmm_hand_computed() {
    // Item 0: [[1,2],[3,4]] · [[1,0],[0,1]] = itself. Item 1: [[1,1],[0,2]] · [[2,3],[4,5]] = [[6,8],[8,10]].
    let a = t(&[2, 2, 2], &[1., 2., 3., 4., 1., 1., 0., 2.]);
    let b = t(&[2, 2, 2], &[1., 0., 0., 1., 2., 3., 4., 5.]);
    assert_eq!(bmm(&a, false, &b, false), t(&[2, 2, 2], &[1., 2., 3., 4., 6., 8., 8., 10.]));
    // aᵀ for item 1 is [[1,0],[1,2]]: aᵀ·b = [[2,3],[10,13]].
    let y = bmm(&a, true, &b, false);
    assert_eq!(&y.data()[4..], &[2., 3., 10., 13.]);
}

#[test]
fn bmm_matches_reference_loops_on_every_transpose() {
    let mut rng = StdRng::seed_from_u64(7);
    let (batch, m, k, n) = (3, 5, 7, 4);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = nonzero(&if ta { [batch, k, m] } else { [batch, m, k] }, &mut rng);
        let b = nonzero(&if tb { [batch, n, k] } else { [batch, k, n] }, &mut rng);
        assert_close(&bmm(&a, ta, &b, tb), &bmm_naive(&a, ta, &b, tb), 1e-5);
    }
}

#[test]
fn bmm_backward_is_the_adjoint() {
    // For y = bmm(a, b): <dy, bmm(δa, b)> = <da, δa> and <dy, bmm(a, δb)> = <db, δb> (bilinearity).
    let mut rng = StdRng::seed_from_u64(8);
    let (batch, m, k, n) = (2, 3, 6, 5);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let sa = if ta { [batch, k, m] } else { [batch, m, k] };
        let sb = if tb { [batch, n, k] } else { [batch, k, n] };
        let (a, b, dy) = (nonzero(&sa, &mut rng), nonzero(&sb, &mut rng), nonzero(&[batch, m, n], &mut rng));
        let (pa, pb) = (nonzero(&sa, &mut rng), nonzero(&sb, &mut rng));
        let (da, db) = bmm_backward(&a, ta, &b, tb, &dy);
        let lhs_a = dot(&dy, &bmm_naive(&pa, ta, &b, tb));
        let lhs_b = dot(&dy, &bmm_naive(&a, ta, &pb, tb));
        assert!((lhs_a - dot(&da, &pa)).abs() < 1e-3 * lhs_a.abs().max(1.0), "da, ta={ta} tb={tb}");
        assert!((lhs_b - dot(&db, &pb)).abs() < 1e-3 * lhs_b.abs().max(1.0), "db, ta={ta} tb={tb}");
    }
}

#[test]
fn softmax_lastdim_hand_computed() {
    // Row [0, ln 3] → [1/4, 3/4]; row [5, 5] → [1/2, 1/2]; a shift by a constant changes nothing.
    let x = t(&[2, 2], &[0., 3f32.ln(), 5., 5.]);
    assert_close(&softmax_lastdim_forward(&x), &t(&[2, 2], &[0.25, 0.75, 0.5, 0.5]), 1e-6);
    let big = t(&[1, 3], &[1000., 1001., 1002.]);
    let small = t(&[1, 3], &[0., 1., 2.]);
    assert_close(&softmax_lastdim_forward(&big), &softmax_lastdim_forward(&small), 1e-6);
}

#[test]
fn softmax_lastdim_backward_hand_computed() {
    // y = [1/4, 3/4], dy = [1, 0]: Σ dy·y = 1/4, dx = y ⊙ (dy − 1/4) = [3/16, −3/16]; rows sum to 0.
    let y = t(&[1, 2], &[0.25, 0.75]);
    let dx = softmax_lastdim_backward(&t(&[1, 2], &[1., 0.]), &y);
    assert_close(&dx, &t(&[1, 2], &[0.1875, -0.1875]), 1e-6);
}

#[test]
fn sigmoid_gate_hand_computed() {
    // σ(0) = 1/2, σ(ln 3) = 3/4: y = [2·1/2, −4·3/4]; dx = dy·σ, dg = dy·x·σ(1 − σ).
    let (x, g) = (t(&[2], &[2., -4.]), t(&[2], &[0., 3f32.ln()]));
    assert_close(&sigmoid_gate_forward(&x, &g), &t(&[2], &[1., -3.]), 1e-6);
    let (dx, dg) = sigmoid_gate_backward(&t(&[2], &[1., 2.]), &x, &g);
    assert_close(&dx, &t(&[2], &[0.5, 1.5]), 1e-6);
    assert_close(&dg, &t(&[2], &[2. * 0.25, 2. * -4. * 0.75 * 0.25]), 1e-6);
}

#[test]
fn exp_nonpositive_is_within_a_few_ulps_of_exp() {
    let mut worst = 0f64;
    let mut x = 0f32;
    while x > -87.0 {
        let got = exp_nonpositive(x) as f64;
        let want = (x as f64).exp();
        worst = worst.max((got - want).abs() / want);
        x -= 0.000_731;
    }
    assert!(worst < 3e-7, "max relative error {worst:e}");
    assert_eq!(exp_nonpositive(0.0), 1.0);
    assert!(exp_nonpositive(-1000.0) < 1e-37);
}

#[test]
fn fast_softmax_matches_the_reference_and_propagates_nan() {
    let mut rng = StdRng::seed_from_u64(9);
    for (rows, cols) in [(3, 1), (5, 7), (4, 8), (6, 144), (2, 4099)] {
        let x = nonzero(&[rows, cols], &mut rng);
        let x = mtcool::Tensor::new(&[rows, cols], x.data().iter().map(|v| 12.0 * v).collect()).unwrap();
        assert_close(&softmax_lastdim_forward(&x), &softmax_lastdim_naive(&x), 2e-6);
    }
    let y = softmax_lastdim_forward(&t(&[2, 3], &[1., f32::NAN, 0., 1., 2., 3.]));
    assert!(y.data()[..3].iter().all(|v| v.is_nan()) && y.data()[3..].iter().all(|v| v.is_finite()));
}
