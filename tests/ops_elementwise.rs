//! CPU reference elementwise ops: hand-computed forwards and backwards (gradchecks: src/gradcheck.rs).

mod common;

use common::t;
use mtcool::backend::cpu::elementwise::*;

#[test]
fn add_sub_mul_scale_by_hand() {
    let a = t(&[2, 2], &[1.0, -2.0, 3.5, 0.25]);
    let b = t(&[2, 2], &[0.5, 4.0, -1.5, 2.0]);
    assert_eq!(add(&a, &b).data(), &[1.5, 2.0, 2.0, 2.25]);
    assert_eq!(sub(&a, &b).data(), &[0.5, -6.0, 5.0, -1.75]);
    assert_eq!(mul(&a, &b).data(), &[0.5, -8.0, -5.25, 0.5]);
    assert_eq!(scale(&a, -2.0).data(), &[-2.0, 4.0, -7.0, -0.5]);
}

#[test]
fn relu_and_its_backward_by_hand() {
    let x = t(&[4], &[-1.0, 0.0, 2.0, -0.5]);
    assert_eq!(relu(&x).data(), &[0.0, 0.0, 2.0, 0.0]);
    // The gradient passes only where x > 0 (0 at x = 0, like PyTorch).
    let dy = t(&[4], &[10.0, 20.0, 30.0, 40.0]);
    assert_eq!(relu_backward(&dy, &x).data(), &[0.0, 0.0, 30.0, 0.0]);
}

#[test]
fn sigmoid_and_its_backward_by_hand() {
    // σ(0) = 1/2, σ(ln 3) = 3/4, σ(−ln 3) = 1/4; σ' = σ(1 − σ): 1/4, 3/16, 3/16.
    let x = t(&[3], &[0.0, 3f32.ln(), -(3f32.ln())]);
    let y = sigmoid(&x);
    for (got, want) in y.data().iter().zip([0.5, 0.75, 0.25]) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    let dy = t(&[3], &[2.0, 2.0, 4.0]);
    for (got, want) in sigmoid_backward(&dy, &y).data().iter().zip([0.5, 0.375, 0.75]) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // No overflow at the tails.
    assert_eq!(sigmoid_scalar(-1000.0), 0.0);
    assert_eq!(sigmoid_scalar(1000.0), 1.0);
}

#[test]
fn channel_bias_and_its_backward_by_hand() {
    // [N=2, C=2, 2 positions]: bias (10, −1) per channel.
    let x = t(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let b = t(&[2], &[10.0, -1.0]);
    assert_eq!(add_channel_bias(&x, &b).data(), &[11.0, 12.0, 2.0, 3.0, 15.0, 16.0, 6.0, 7.0]);
    // db[c] = Σ over n and positions: c0: 1+2+5+6 = 14, c1: 3+4+7+8 = 22.
    assert_eq!(add_channel_bias_backward(&x).data(), &[14.0, 22.0]);
}

#[test]
fn sum_and_mean_by_hand() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -3.0]);
    assert_eq!(sum_all(&x).item(), 12.0);
    assert_eq!(mean_all(&x).item(), 2.0);
}
