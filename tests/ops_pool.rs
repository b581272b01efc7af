//! CPU reference max / average / global average pooling: hand-computed forwards and backwards,
//! output-size formula, finite-difference gradient checks and adjoint identities.

mod common;

use common::{assert_close, dot, fd_grad, nonzero, t};
use mtcool::backend::cpu::pool::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Distinct values 0.1 apart in random order (shifted off zero): no ties, and a ±1e-2 perturbation
/// never changes which element is a window's maximum.
fn well_separated(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut data: Vec<f32> = (0..n).map(|i| 0.1 * i as f32 - 0.05 * n as f32 + 0.033).collect();
    data.shuffle(rng);
    Tensor::new(shape, data).unwrap()
}

/// (N, C, H, W, k, stride) combinations for the gradient checks: non-overlapping, overlapping
/// (stride < k), floor-dropped border, non-square input, stride > k (skipped pixels).
const CASES: [(usize, usize, usize, usize, usize, usize); 5] =
    [(2, 3, 4, 4, 2, 2), (1, 2, 5, 5, 3, 1), (2, 1, 5, 7, 2, 2), (1, 2, 6, 4, 3, 2), (1, 1, 7, 7, 2, 3)];

// ---------------------------------------------------------------- output size

#[test]
fn pool_out_hw_formula() {
    // (H − k) / s + 1, floored.
    assert_eq!(pool2d_out_hw(4, 4, 2, 2), (2, 2));
    assert_eq!(pool2d_out_hw(5, 5, 2, 2), (2, 2)); // last row/column dropped
    assert_eq!(pool2d_out_hw(5, 7, 3, 2), (2, 3));
    assert_eq!(pool2d_out_hw(3, 5, 3, 2), (1, 2));
    assert_eq!(pool2d_out_hw(5, 5, 3, 1), (3, 3));
    assert_eq!(pool2d_out_hw(7, 7, 2, 3), (2, 2));
    assert_eq!(pool2d_out_hw(2, 2, 2, 2), (1, 1));
    let x = Tensor::zeros(&[2, 3, 5, 7]);
    assert_eq!(max_pool2d_forward(&x, 3, 2).0.shape(), [2, 3, 2, 3]);
    assert_eq!(avg_pool2d_forward(&x, 3, 2).shape(), [2, 3, 2, 3]);
}

#[test]
#[should_panic(expected = "does not fit")]
fn pool_rejects_window_larger_than_input() {
    avg_pool2d_forward(&Tensor::zeros(&[1, 1, 2, 3]), 3, 1);
}

// ---------------------------------------------------------------- hand-computed

#[test]
fn max_pool_4x4_k2_s2() {
    // x (flat indices in brackets):
    //   1[0]  5[1]  2[2]  0[3]
    //   3[4]  4[5]  8[6]  7[7]
    //   9[8]  6[9]  1[10] 1[11]
    //   2[12] 0[13] 3[14] 4[15]
    // windows: {1,5,3,4} → 5 @1, {2,0,8,7} → 8 @6, {9,6,2,0} → 9 @8, {1,1,3,4} → 4 @15
    let x = t(&[1, 1, 4, 4], &[1., 5., 2., 0., 3., 4., 8., 7., 9., 6., 1., 1., 2., 0., 3., 4.]);
    let (y, idx) = max_pool2d_forward(&x, 2, 2);
    assert_eq!(y, t(&[1, 1, 2, 2], &[5., 8., 9., 4.]));
    assert_eq!(idx, [1, 6, 8, 15]);
    // Backward routes dy to those indices.
    let dx = max_pool2d_backward(&t(&[1, 1, 2, 2], &[10., 20., 30., 40.]), &idx, x.shape());
    let mut want = vec![0f32; 16];
    want[1] = 10.;
    want[6] = 20.;
    want[8] = 30.;
    want[15] = 40.;
    assert_eq!(dx, t(&[1, 1, 4, 4], &want));
}

#[test]
fn max_pool_argmax_is_flat_over_batch_and_channels() {
    // 2 planes (N=1, C=2) of 2×2; plane 1 starts at flat index 4. Maxima 4 @3 and 8 @4.
    let x = t(&[1, 2, 2, 2], &[1., 2., 3., 4., 8., 7., 6., 5.]);
    let (y, idx) = max_pool2d_forward(&x, 2, 2);
    assert_eq!(y, t(&[1, 2, 1, 1], &[4., 8.]));
    assert_eq!(idx, [3, 4]);
}

#[test]
fn max_pool_ties_pick_first() {
    // All equal → first element of the window; [[1,3],[3,0]] → the 3 at flat index 1 (row-major first).
    let (_, idx) = max_pool2d_forward(&t(&[1, 1, 2, 2], &[2., 2., 2., 2.]), 2, 2);
    assert_eq!(idx, [0]);
    let (y, idx) = max_pool2d_forward(&t(&[1, 1, 2, 2], &[1., 3., 3., 0.]), 2, 2);
    assert_eq!((y.data()[0], idx[0]), (3., 1));
}

#[test]
fn max_pool_propagates_nan() {
    let (y, idx) = max_pool2d_forward(&t(&[1, 1, 2, 2], &[1., f32::NAN, 5., f32::NAN]), 2, 2);
    assert!(y.data()[0].is_nan());
    assert_eq!(idx, [1]);
}

#[test]
fn max_pool_nonsquare_overlapping() {
    // x 1×1×3×5 = [[1..5],[6..10],[11..15]], k=3, s=2: Ho = 1, Wo = (5−3)/2+1 = 2,
    // windows cover columns 0–2 and 2–4 → maxima 13 (flat 12) and 15 (flat 14).
    let x = t(&[1, 1, 3, 5], &(1..=15).map(|v| v as f32).collect::<Vec<_>>());
    let (y, idx) = max_pool2d_forward(&x, 3, 2);
    assert_eq!(y, t(&[1, 1, 1, 2], &[13., 15.]));
    assert_eq!(idx, [12, 14]);
}

#[test]
fn max_pool_backward_accumulates_shared_argmax() {
    // x = [[1,9,2],[0,3,1]], k=2, s=1: both windows pick the 9 at flat index 1,
    // so dx[1] = dy0 + dy1 = 1 + 2 = 3 and every other entry is 0.
    let x = t(&[1, 1, 2, 3], &[1., 9., 2., 0., 3., 1.]);
    let (y, idx) = max_pool2d_forward(&x, 2, 1);
    assert_eq!(y, t(&[1, 1, 1, 2], &[9., 9.]));
    assert_eq!(idx, [1, 1]);
    let dx = max_pool2d_backward(&t(&[1, 1, 1, 2], &[1., 2.]), &idx, x.shape());
    assert_eq!(dx, t(&[1, 1, 2, 3], &[0., 3., 0., 0., 0., 0.]));
}

#[test]
fn avg_pool_hand_computed() {
    // x 1×1×3×5 = [[1..5],[6..10],[11..15]], k=3, s=2:
    //   window 0 (cols 0–2): (1+2+3 + 6+7+8 + 11+12+13) / 9 = 63 / 9 = 7
    //   window 1 (cols 2–4): (3+4+5 + 8+9+10 + 13+14+15) / 9 = 81 / 9 = 9
    let x = t(&[1, 1, 3, 5], &(1..=15).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(avg_pool2d_forward(&x, 3, 2), t(&[1, 1, 1, 2], &[7., 9.]));
    // 4×4, k=2, s=2: x = [[1,5,2,0],[3,4,8,7],[9,6,1,1],[2,0,3,4]]
    //   means: (1+5+3+4)/4 = 3.25, (2+0+8+7)/4 = 4.25, (9+6+2+0)/4 = 4.25, (1+1+3+4)/4 = 2.25
    let x = t(&[1, 1, 4, 4], &[1., 5., 2., 0., 3., 4., 8., 7., 9., 6., 1., 1., 2., 0., 3., 4.]);
    assert_eq!(avg_pool2d_forward(&x, 2, 2), t(&[1, 1, 2, 2], &[3.25, 4.25, 4.25, 2.25]));
}

#[test]
fn avg_pool_backward_hand_computed() {
    // x 1×1×3×5, k=3, s=2, dy = [9, 18]: every pixel of window 0 gets 9/9 = 1, of window 1 gets
    // 18/9 = 2, and column 2 (in both windows) gets 1 + 2 = 3:
    //   [[1,1,3,2,2]] on every row.
    let dx = avg_pool2d_backward(&t(&[1, 1, 1, 2], &[9., 18.]), &[1, 1, 3, 5], 3, 2);
    let row = [1., 1., 3., 2., 2.];
    assert_eq!(dx, t(&[1, 1, 3, 5], &[row, row, row].concat()));
    // 5×5, k=2, s=2, dy = 4 everywhere: covered pixels get 1, the dropped last row/column 0.
    let dx = avg_pool2d_backward(&Tensor::full(&[1, 1, 2, 2], 4.0), &[1, 1, 5, 5], 2, 2);
    for r in 0..5 {
        for c in 0..5 {
            let want = if r < 4 && c < 4 { 1.0 } else { 0.0 };
            assert_eq!(dx.data()[r * 5 + c], want, "({r}, {c})");
        }
    }
}

#[test]
fn global_avg_pool_hand_computed() {
    // x 1×2×2×2: ch0 = [1,2,3,4] → 2.5, ch1 = [−1,0,5,0] → 1.
    let x = t(&[1, 2, 2, 2], &[1., 2., 3., 4., -1., 0., 5., 0.]);
    assert_eq!(global_avg_pool_forward(&x), t(&[1, 2], &[2.5, 1.]));
    // dy = [4, 8] → every pixel of ch0 gets 4/4 = 1, of ch1 gets 8/4 = 2.
    let dx = global_avg_pool_backward(&t(&[1, 2], &[4., 8.]), x.shape());
    assert_eq!(dx, t(&[1, 2, 2, 2], &[1., 1., 1., 1., 2., 2., 2., 2.]));
    // Non-square 2×1×1×3: [[3, 6, 9]] → 6 and [[0, 0, 1.5]] → 0.5.
    let x = t(&[2, 1, 1, 3], &[3., 6., 9., 0., 0., 1.5]);
    assert_eq!(global_avg_pool_forward(&x), t(&[2, 1], &[6., 0.5]));
}

// ---------------------------------------------------------------- gradients

#[test]
fn max_pool_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(1);
    for (n, c, h, w, k, s) in CASES {
        let x = well_separated(&[n, c, h, w], &mut rng);
        let (y, idx) = max_pool2d_forward(&x, k, s);
        let r = nonzero(y.shape(), &mut rng); // loss = Σ r ⊙ y, so dy = r
        let dx = max_pool2d_backward(&r, &idx, x.shape());
        let num = fd_grad(&x, 1e-2, |x| dot(&max_pool2d_forward(x, k, s).0, &r));
        assert_close(&dx, &num, 1e-2);
    }
}

#[test]
fn avg_pool_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(2);
    for (n, c, h, w, k, s) in CASES {
        let x = nonzero(&[n, c, h, w], &mut rng);
        let y = avg_pool2d_forward(&x, k, s);
        let r = nonzero(y.shape(), &mut rng);
        let dx = avg_pool2d_backward(&r, x.shape(), k, s);
        let num = fd_grad(&x, 1e-2, |x| dot(&avg_pool2d_forward(x, k, s), &r));
        assert_close(&dx, &num, 1e-2);
    }
}

#[test]
fn global_avg_pool_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(3);
    for shape in [[2, 3, 4, 5], [1, 2, 1, 1], [3, 1, 2, 7]] {
        let x = nonzero(&shape, &mut rng);
        let r = nonzero(&[shape[0], shape[1]], &mut rng);
        let dx = global_avg_pool_backward(&r, x.shape());
        let num = fd_grad(&x, 1e-2, |x| dot(&global_avg_pool_forward(x), &r));
        assert_close(&dx, &num, 1e-2);
    }
}

#[test]
fn pool_adjoint_identities() {
    // Average pooling (and max pooling at a fixed argmax) is linear: ⟨pool(x), g⟩ = ⟨x, pool_backward(g)⟩.
    let mut rng = StdRng::seed_from_u64(4);
    for (n, c, h, w, k, s) in CASES {
        let x = Tensor::randn(&[n, c, h, w], 1.0, &mut rng);
        let y = avg_pool2d_forward(&x, k, s);
        let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
        let (lhs, rhs) = (dot(&y, &g), dot(&x, &avg_pool2d_backward(&g, x.shape(), k, s)));
        assert!((lhs - rhs).abs() / lhs.abs().max(1.0) < 1e-5, "avg: {lhs} vs {rhs}");

        let (y, idx) = max_pool2d_forward(&x, k, s);
        let (lhs, rhs) = (dot(&y, &g), dot(&x, &max_pool2d_backward(&g, &idx, x.shape())));
        assert!((lhs - rhs).abs() / lhs.abs().max(1.0) < 1e-5, "max: {lhs} vs {rhs}");

        let yg = global_avg_pool_forward(&x);
        let gg = Tensor::uniform(yg.shape(), -1.0, 1.0, &mut rng);
        let (lhs, rhs) = (dot(&yg, &gg), dot(&x, &global_avg_pool_backward(&gg, x.shape())));
        assert!((lhs - rhs).abs() / lhs.abs().max(1.0) < 1e-5, "global: {lhs} vs {rhs}");
    }
}

#[test]
fn max_pool2d_2x2_fast_path_matches_the_reference_loop() {
    // Odd and even sizes (a dropped last row/column), ties, and NaNs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (h, w) in [(2, 2), (5, 7), (24, 24), (9, 4)] {
        let mut x = nonzero(&[2, 3, h, w], &mut rng);
        for (i, v) in x.data_mut().iter_mut().enumerate() {
            match i % 13 {
                0 => *v = f32::NAN,
                5 | 6 => *v = 0.5, // ties
                _ => {}
            }
        }
        let (y, idx) = max_pool2d_forward(&x, 2, 2);
        let (want_y, want_idx) = max_pool2d_naive(&x, 2, 2);
        assert_eq!(idx, want_idx, "{h}x{w}: argmax");
        assert!(y.data().iter().zip(want_y.data()).all(|(a, b)| a.to_bits() == b.to_bits()), "{h}x{w}: values");
    }
}
