//! CPU reference nearest and bilinear (align_corners=False) upsampling: hand-computed forwards and
//! backwards, finite-difference gradient checks and adjoint identities.

mod common;

use common::{assert_close, dot, fd_grad, nonzero, t};
use mtcool::backend::cpu::upsample::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Bilinear (in [N, C, H, W]) → (out_h, out_w) resizes for the gradient checks: up, down, mixed,
/// identity, from a single pixel, non-integer ratios.
const BILINEAR_CASES: [([usize; 4], usize, usize); 7] = [
    ([2, 3, 3, 4], 6, 8),
    ([1, 2, 5, 5], 3, 2),
    ([1, 1, 2, 3], 5, 2),
    ([1, 2, 4, 3], 4, 3),
    ([2, 1, 1, 1], 3, 2),
    ([1, 1, 3, 5], 7, 11),
    ([1, 2, 6, 4], 4, 6),
];

// ---------------------------------------------------------------- nearest

#[test]
fn nearest_forward_hand_computed() {
    // [[1,2],[3,4]] ×2 → each pixel becomes a 2×2 block.
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let y = upsample_nearest_forward(&x, 2);
    assert_eq!(y, t(&[1, 1, 4, 4], &[1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]));
    // Non-square 1×2×1×2 ×3 → 1×2×3×6, channel c row = [a,a,a,b,b,b] repeated on 3 rows.
    let x = t(&[1, 2, 1, 2], &[1., 2., -5., 7.]);
    let y = upsample_nearest_forward(&x, 3);
    let r0 = [1., 1., 1., 2., 2., 2.];
    let r1 = [-5., -5., -5., 7., 7., 7.];
    assert_eq!(y, t(&[1, 2, 3, 6], &[r0, r0, r0, r1, r1, r1].concat()));
    // Scale 1 is the identity.
    assert_eq!(upsample_nearest_forward(&x, 1), x);
}

#[test]
fn nearest_backward_hand_computed() {
    // dy 4×4 = 1..16, scale 2: dx = sums of the 2×2 blocks
    //   [[1+2+5+6, 3+4+7+8], [9+10+13+14, 11+12+15+16]] = [[14, 22], [46, 54]]
    let dy = t(&[1, 1, 4, 4], &(1..=16).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(upsample_nearest_backward(&dy, 2), t(&[1, 1, 2, 2], &[14., 22., 46., 54.]));
}

#[test]
#[should_panic(expected = "not a multiple")]
fn nearest_backward_rejects_indivisible_dy() {
    upsample_nearest_backward(&Tensor::zeros(&[1, 1, 4, 5]), 2);
}

#[test]
fn nearest_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(1);
    for (shape, s) in [([2, 3, 2, 3], 2), ([1, 2, 3, 1], 3), ([1, 1, 2, 2], 1)] {
        let x = nonzero(&shape, &mut rng);
        let y = upsample_nearest_forward(&x, s);
        let r = nonzero(y.shape(), &mut rng); // loss = Σ r ⊙ y, so dy = r
        let dx = upsample_nearest_backward(&r, s);
        let num = fd_grad(&x, 1e-2, |x| dot(&upsample_nearest_forward(x, s), &r));
        assert_close(&dx, &num, 1e-2);
    }
}

#[test]
fn nearest_adjoint_identity() {
    let mut rng = StdRng::seed_from_u64(2);
    let x = Tensor::randn(&[2, 3, 3, 4], 1.0, &mut rng);
    let y = upsample_nearest_forward(&x, 2);
    let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
    let (lhs, rhs) = (dot(&y, &g), dot(&x, &upsample_nearest_backward(&g, 2)));
    assert!((lhs - rhs).abs() / lhs.abs().max(1.0) < 1e-5, "{lhs} vs {rhs}");
}

// ---------------------------------------------------------------- bilinear

#[test]
fn bilinear_2x2_to_4x4_hand_computed() {
    // Per axis, in = 2, out = 4, scale = 0.5, src = max((dst + 0.5)·0.5 − 0.5, 0):
    //   dst 0: −0.25 → 0     → i0 = 0, λ1 = 0     → v0
    //   dst 1:  0.25         → i0 = 0, λ1 = 0.25  → 0.75·v0 + 0.25·v1
    //   dst 2:  0.75         → i0 = 0, λ1 = 0.75  → 0.25·v0 + 0.75·v1
    //   dst 3:  1.25         → i0 = 1 = last, i1 clamped to 1 → v1
    // x = [[1,2],[3,4]]: rows interpolated along W: [1, 1.25, 1.75, 2] and [3, 3.25, 3.75, 4];
    // then along H: row0, 0.75·row0 + 0.25·row1, 0.25·row0 + 0.75·row1, row1.
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let y = upsample_bilinear_forward(&x, 4, 4);
    #[rustfmt::skip]
    let want = t(&[1, 1, 4, 4], &[
        1.0, 1.25, 1.75, 2.0,
        1.5, 1.75, 2.25, 2.5,
        2.5, 2.75, 3.25, 3.5,
        3.0, 3.25, 3.75, 4.0,
    ]);
    assert_eq!(y, want);
}

#[test]
fn bilinear_nonsquare_mixed_hand_computed() {
    // x 1×1×2×3 = [[0,4,8],[12,16,20]] → 3×2.
    // H: in 2, out 3, scale 2/3: dst 0: 1/3 − 1/2 < 0 → 0 → row0;  dst 1: 1 − 0.5 = 0.5 → ½row0 + ½row1;
    //    dst 2: 5/3 − 1/2 = 7/6 → i0 = 1 = last → row1.
    // W: in 3, out 2, scale 1.5: dst 0: 0.75 − 0.5 = 0.25 → 0.75·c0 + 0.25·c1;
    //    dst 1: 2.25 − 0.5 = 1.75 → 0.25·c1 + 0.75·c2.
    // Along W: row0 → [0 + 1, 1 + 6] = [1, 7];  row1 → [9 + 4, 4 + 15] = [13, 19].
    // Along H: [[1, 7], [7, 13], [13, 19]].
    let x = t(&[1, 1, 2, 3], &[0., 4., 8., 12., 16., 20.]);
    let y = upsample_bilinear_forward(&x, 3, 2);
    assert_close(&y, &t(&[1, 1, 3, 2], &[1., 7., 7., 13., 13., 19.]), 1e-6);
}

#[test]
fn bilinear_special_sizes() {
    let mut rng = StdRng::seed_from_u64(3);
    // Same size: src = dst exactly, so the identity.
    let x = Tensor::randn(&[2, 3, 4, 5], 1.0, &mut rng);
    assert_eq!(upsample_bilinear_forward(&x, 4, 5), x);
    // From a single pixel: every output equals it.
    let x = t(&[1, 2, 1, 1], &[3.5, -2.0]);
    let y = upsample_bilinear_forward(&x, 3, 4);
    let want: Vec<f32> = [[3.5f32; 12], [-2.0; 12]].concat();
    assert_close(&y, &t(&[1, 2, 3, 4], &want), 1e-6);
    // Exact 2× downsample: src = 2·dst + 0.5, the mean of each 2×2 block.
    // x = [[1,2,3,4],[5,6,7,8]] → [(1+2+5+6)/4, (3+4+7+8)/4] = [3.5, 5.5].
    let x = t(&[1, 1, 2, 4], &[1., 2., 3., 4., 5., 6., 7., 8.]);
    assert_eq!(upsample_bilinear_forward(&x, 1, 2), t(&[1, 1, 1, 2], &[3.5, 5.5]));
    // Constant input stays constant (the weights sum to 1).
    let y = upsample_bilinear_forward(&Tensor::full(&[1, 1, 3, 5], 0.75), 7, 4);
    assert!(y.data().iter().all(|&v| (v - 0.75).abs() < 1e-6));
}

#[test]
fn bilinear_backward_hand_computed() {
    // 2×2 → 4×4 with dy = 1: per axis the 1-d weights (see the forward case) given to v0 are
    // 1 + 0.75 + 0.25 + 0 = 2 and to v1 0 + 0.25 + 0.75 + 1 = 2, so every input pixel gets 2·2 = 4.
    let dx = upsample_bilinear_backward(&Tensor::full(&[1, 1, 4, 4], 1.0), &[1, 1, 2, 2]);
    assert_eq!(dx, Tensor::full(&[1, 1, 2, 2], 4.0));
    // dy = one-hot at output (1, 2), whose weights are (0.75, 0.25) along H and (0.25, 0.75) along W:
    // dx = [[0.75·0.25, 0.75·0.75], [0.25·0.25, 0.25·0.75]].
    let mut dy = Tensor::zeros(&[1, 1, 4, 4]);
    dy.data_mut()[4 + 2] = 1.0;
    let dx = upsample_bilinear_backward(&dy, &[1, 1, 2, 2]);
    assert_eq!(dx, t(&[1, 1, 2, 2], &[0.1875, 0.5625, 0.0625, 0.1875]));
}

#[test]
fn bilinear_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(4);
    for (shape, oh, ow) in BILINEAR_CASES {
        let x = nonzero(&shape, &mut rng);
        let y = upsample_bilinear_forward(&x, oh, ow);
        let r = nonzero(y.shape(), &mut rng);
        let dx = upsample_bilinear_backward(&r, x.shape());
        let num = fd_grad(&x, 1e-2, |x| dot(&upsample_bilinear_forward(x, oh, ow), &r));
        assert_close(&dx, &num, 1e-2);
    }
}

#[test]
fn bilinear_adjoint_identity() {
    let mut rng = StdRng::seed_from_u64(5);
    for (shape, oh, ow) in BILINEAR_CASES {
        let x = Tensor::randn(&shape, 1.0, &mut rng);
        let y = upsample_bilinear_forward(&x, oh, ow);
        let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
        let (lhs, rhs) = (dot(&y, &g), dot(&x, &upsample_bilinear_backward(&g, x.shape())));
        assert!((lhs - rhs).abs() / lhs.abs().max(1.0) < 1e-5, "{shape:?} → {oh}×{ow}: {lhs} vs {rhs}");
    }
}

#[test]
fn nearest_upsampling_matches_the_index_formula_exactly() {
    // y[n, c, oy, ox] = x[n, c, oy / s, ox / s]; dx[.., iy, ix] = f64 sum of dy over the s×s block.
    let mut rng = StdRng::seed_from_u64(21);
    for (shape, s) in [([1, 1, 1, 1], 1), ([2, 3, 4, 5], 2), ([1, 2, 3, 7], 3), ([3, 1, 5, 2], 4)] {
        let x = nonzero(&shape, &mut rng);
        let (h, w) = (shape[2], shape[3]);
        let y = upsample_nearest_forward(&x, s);
        let planes = shape[0] * shape[1];
        let mut want = vec![];
        for p in 0..planes {
            for oy in 0..h * s {
                for ox in 0..w * s {
                    want.push(x.data()[(p * h + oy / s) * w + ox / s]);
                }
            }
        }
        assert_eq!(y.data(), &want[..], "forward {shape:?} ×{s}");
        let dy = nonzero(y.shape(), &mut rng);
        let dx = upsample_nearest_backward(&dy, s);
        let mut want = vec![];
        for p in 0..planes {
            for iy in 0..h {
                for ix in 0..w {
                    let mut acc = 0f64;
                    for sy in 0..s {
                        for sx in 0..s {
                            acc += dy.data()[(p * h * s + iy * s + sy) * w * s + ix * s + sx] as f64;
                        }
                    }
                    want.push(acc as f32);
                }
            }
        }
        assert_eq!(dx.data(), &want[..], "backward {shape:?} ×{s}");
    }
}
