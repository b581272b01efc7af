//! Channel concat / split (CPU reference).

mod common;

use common::{dot, fd_grad, nonzero};
use mtcool::backend::cpu::concat::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn concat_hand() {
    // a = [N=2, C=1, W=2] = [[[1, 2]], [[3, 4]]]; b = [N=2, C=2, W=2] = [[[5, 6], [7, 8]], [[9, 10], [11, 12]]].
    // Per sample, a's channel comes first, then b's two: n=0 → [1 2 | 5 6 | 7 8], n=1 → [3 4 | 9 10 | 11 12].
    let a = Tensor::new(&[2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::new(&[2, 2, 2], (5..=12).map(|v| v as f32).collect()).unwrap();
    let y = concat_channels(&[&a, &b]);
    assert_eq!(y.shape(), [2, 3, 2]);
    assert_eq!(y.data(), [1.0, 2.0, 5.0, 6.0, 7.0, 8.0, 3.0, 4.0, 9.0, 10.0, 11.0, 12.0]);
}

#[test]
fn concat_2d() {
    // [[1], [2]] ++ [[3, 4], [5, 6]] → [[1, 3, 4], [2, 5, 6]].
    let a = Tensor::new(&[2, 1], vec![1.0, 2.0]).unwrap();
    let b = Tensor::new(&[2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
    let y = concat_channels(&[&a, &b]);
    assert_eq!(y.shape(), [2, 3]);
    assert_eq!(y.data(), [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
}

#[test]
fn split_inverts_concat() {
    let mut rng = StdRng::seed_from_u64(7);
    let xs: Vec<Tensor> = [2usize, 3, 1].iter().map(|&c| Tensor::randn(&[3, c, 4, 5], 1.0, &mut rng)).collect();
    let refs: Vec<&Tensor> = xs.iter().collect();
    let y = concat_channels(&refs);
    assert_eq!(y.shape(), [3, 6, 4, 5]);
    let parts = split_channels(&y, &[2, 3, 1]);
    assert_eq!(parts, xs);
    // And concat inverts split.
    let back = concat_channels(&parts.iter().collect::<Vec<_>>());
    assert_eq!(back, y);
}

#[test]
fn split_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(8);
    let a = Tensor::randn(&[2, 2, 3, 2], 1.0, &mut rng);
    let b = Tensor::randn(&[2, 3, 3, 2], 1.0, &mut rng);
    let r = nonzero(&[2, 5, 3, 2], &mut rng);
    let grads = split_channels(&r, &[2, 3]);
    let fa = fd_grad(&a, 1e-2, |a| dot(&concat_channels(&[a, &b]), &r));
    let fb = fd_grad(&b, 1e-2, |b| dot(&concat_channels(&[&a, b]), &r));
    assert!(grads[0].rel_err(&fa) < 1e-2, "da rel err {}", grads[0].rel_err(&fa));
    assert!(grads[1].rel_err(&fb) < 1e-2, "db rel err {}", grads[1].rel_err(&fb));
}

#[test]
#[should_panic(expected = "does not match")]
fn concat_rejects_mismatched_spatial() {
    let a = Tensor::zeros(&[1, 1, 2, 2]);
    let b = Tensor::zeros(&[1, 1, 2, 3]);
    concat_channels(&[&a, &b]);
}
