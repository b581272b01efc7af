//! CPU reference conv2d / conv_transpose2d: hand-computed forwards, output-size formulas,
//! finite-difference gradient checks and adjoint identities.

mod common;

use common::{assert_close, dot, fd_grad, nonzero, t};
use mtcool::backend::cpu::conv::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cfg(stride: usize, padding: usize) -> Conv2dCfg {
    Conv2dCfg { stride, padding }
}

// ---------------------------------------------------------------- output sizes

#[test]
fn conv_out_hw_formula() {
    // (H + 2p − k) / s + 1, floored.
    assert_eq!(conv2d_out_hw(5, 7, 3, 3, cfg(1, 0)), (3, 5));
    assert_eq!(conv2d_out_hw(5, 7, 3, 3, cfg(1, 1)), (5, 7)); // "same"
    assert_eq!(conv2d_out_hw(5, 7, 3, 3, cfg(2, 1)), (3, 4)); // (5+2−3)/2+1 = 3, (7+2−3)/2+1 = 4
    assert_eq!(conv2d_out_hw(4, 4, 2, 2, cfg(2, 0)), (2, 2));
    assert_eq!(conv2d_out_hw(5, 5, 2, 2, cfg(2, 0)), (2, 2)); // floor drops the last row/column
    assert_eq!(conv2d_out_hw(5, 5, 3, 3, cfg(3, 0)), (1, 1));
    assert_eq!(conv2d_out_hw(6, 5, 3, 1, cfg(1, 1)), (6, 7)); // non-square kernel
    assert_eq!(conv2d_out_hw(224, 224, 7, 7, cfg(2, 3)), (112, 112));
    assert_eq!(conv2d_out_hw(1, 1, 3, 3, cfg(1, 1)), (1, 1));
}

#[test]
fn conv_transpose_out_hw_formula() {
    // (H − 1)·s − 2p + k
    assert_eq!(conv_transpose2d_out_hw(2, 2, 2, 2, cfg(2, 0)), (4, 4));
    assert_eq!(conv_transpose2d_out_hw(2, 3, 3, 3, cfg(2, 1)), (3, 5));
    assert_eq!(conv_transpose2d_out_hw(4, 4, 4, 4, cfg(2, 1)), (8, 8)); // the usual 2× upsampler
    assert_eq!(conv_transpose2d_out_hw(3, 5, 1, 2, cfg(1, 0)), (3, 6));
    // Round trip: a conv maps the transposed conv's output size back to its input size.
    for (h, k, s, p) in [(3, 3, 2, 1), (5, 4, 2, 1), (2, 2, 3, 0), (4, 5, 1, 2)] {
        let (ho, wo) = conv_transpose2d_out_hw(h, h + 1, k, k, cfg(s, p));
        assert_eq!(conv2d_out_hw(ho, wo, k, k, cfg(s, p)), (h, h + 1));
    }
}

#[test]
#[should_panic(expected = "does not fit")]
fn conv_out_hw_rejects_too_large_kernel() {
    conv2d_out_hw(2, 2, 3, 3, cfg(1, 0));
}

// ---------------------------------------------------------------- hand-computed forwards

// x = [[1,2,3],[4,5,6],[7,8,9]] (1×1×3×3), w = [[1,2],[3,4]] (1×1×2×2).
fn x3() -> Tensor {
    t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.])
}
fn w2() -> Tensor {
    t(&[1, 1, 2, 2], &[1., 2., 3., 4.])
}

#[test]
fn conv_forward_3x3_k2_stride1() {
    // y00 = 1·1 + 2·2 + 4·3 + 5·4 = 37   y01 = 2·1 + 3·2 + 5·3 + 6·4 = 47
    // y10 = 4·1 + 5·2 + 7·3 + 8·4 = 67   y11 = 5·1 + 6·2 + 8·3 + 9·4 = 77
    let y = conv2d_forward(&x3(), &w2(), None, cfg(1, 0));
    assert_eq!(y, t(&[1, 1, 2, 2], &[37., 47., 67., 77.]));
    // With bias 0.5 every output moves by 0.5.
    let y = conv2d_forward(&x3(), &w2(), Some(&t(&[1], &[0.5])), cfg(1, 0));
    assert_eq!(y, t(&[1, 1, 2, 2], &[37.5, 47.5, 67.5, 77.5]));
}

#[test]
fn conv_forward_3x3_k2_stride2_pad1() {
    // Padded input (5×5):      Windows start at rows/cols 0 and 2, Ho = Wo = (3+2−2)/2+1 = 2.
    //   0 0 0 0 0              y00 = [0 0; 0 1]·w = 1·4               = 4
    //   0 1 2 3 0              y01 = [0 0; 2 3]·w = 2·3 + 3·4         = 18
    //   0 4 5 6 0              y10 = [0 4; 0 7]·w = 4·2 + 7·4         = 36
    //   0 7 8 9 0              y11 = [5 6; 8 9]·w = 5 + 12 + 24 + 36  = 77
    //   0 0 0 0 0
    let y = conv2d_forward(&x3(), &w2(), None, cfg(2, 1));
    assert_eq!(y, t(&[1, 1, 2, 2], &[4., 18., 36., 77.]));
}

#[test]
fn conv_forward_two_channels_nonsquare() {
    // x: 1×2×2×3, ch0 = [[1,2,3],[4,5,6]], ch1 = [[1,0,−1],[2,0,−2]].
    // w: 2×2×1×2, co0: ci0 [1,1], ci1 [1,−1];  co1: ci0 [0,1], ci1 [2,0].   Out 1×2×2×2.
    // co0: ch0 pair sums [[3,5],[9,11]] + ch1 pair diffs [[1,1],[2,2]]        = [[4,6],[11,13]]
    // co1: ch0 right element [[2,3],[5,6]] + 2·ch1 left element [[2,0],[4,0]] = [[4,3],[9,6]]
    // bias [1, −1].
    let x = t(&[1, 2, 2, 3], &[1., 2., 3., 4., 5., 6., 1., 0., -1., 2., 0., -2.]);
    let w = t(&[2, 2, 1, 2], &[1., 1., 1., -1., 0., 1., 2., 0.]);
    let b = t(&[2], &[1., -1.]);
    let y = conv2d_forward(&x, &w, Some(&b), cfg(1, 0));
    assert_eq!(y, t(&[1, 2, 2, 2], &[5., 7., 12., 14., 3., 2., 8., 5.]));
}

#[test]
fn conv_forward_batch_is_independent() {
    // Batch item 1 = 2 × batch item 0, so its output (no bias) is 2× the first.
    let mut data: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    data.extend((1..=9).map(|v| 2.0 * v as f32));
    let x = t(&[2, 1, 3, 3], &data);
    let y = conv2d_forward(&x, &w2(), None, cfg(1, 0));
    assert_eq!(y.data(), [37., 47., 67., 77., 74., 94., 134., 154.]);
}

#[test]
fn conv_backward_hand_computed() {
    // dy = all ones (1×1×2×2), stride 1, no padding, x and w as above.
    // dx[i, j] = Σ of w over the taps that read (i, j): corners get one tap, edges two, centre all four:
    //   [[1, 1+2, 2], [1+3, 1+2+3+4, 2+4], [3, 3+4, 4]] = [[1,3,2],[4,10,6],[3,7,4]]
    // dw[ky, kx] = Σ of the 2×2 block of x starting at (ky, kx):
    //   [[1+2+4+5, 2+3+5+6], [4+5+7+8, 5+6+8+9]] = [[12,16],[24,28]]
    let dy = Tensor::full(&[1, 1, 2, 2], 1.0);
    let dx = conv2d_backward_data(&dy, &w2(), &[1, 1, 3, 3], cfg(1, 0));
    assert_eq!(dx, t(&[1, 1, 3, 3], &[1., 3., 2., 4., 10., 6., 3., 7., 4.]));
    let dw = conv2d_backward_weight(&dy, &x3(), &[1, 1, 2, 2], cfg(1, 0));
    assert_eq!(dw, t(&[1, 1, 2, 2], &[12., 16., 24., 28.]));
}

#[test]
fn conv_transpose_forward_stride2_no_overlap() {
    // x = [[1,2],[3,4]], w = [[1,2],[3,4]], stride 2: each input pixel writes x·w into its own 2×2 block.
    //   [[1·1, 1·2, 2·1, 2·2],      [[1, 2, 2, 4],
    //    [1·3, 1·4, 2·3, 2·4],   =   [3, 4, 6, 8],
    //    [3·1, 3·2, 4·1, 4·2],       [3, 6, 4, 8],
    //    [3·3, 3·4, 4·3, 4·4]]       [9,12,12,16]]
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let y = conv_transpose2d_forward(&x, &w2(), None, cfg(2, 0));
    assert_eq!(y, t(&[1, 1, 4, 4], &[1., 2., 2., 4., 3., 4., 6., 8., 3., 6., 4., 8., 9., 12., 12., 16.]));
}

#[test]
fn conv_transpose_forward_stride1_overlap() {
    // y[oy, ox] = Σ x[iy, ix] · w[oy − iy, ox − ix], output 3×3:
    //   y00 = 1·1 = 1          y01 = 1·2 + 2·1 = 4                 y02 = 2·2 = 4
    //   y10 = 1·3 + 3·1 = 6    y11 = 1·4 + 2·3 + 3·2 + 4·1 = 20    y12 = 2·4 + 4·2 = 16
    //   y20 = 3·3 = 9          y21 = 3·4 + 4·3 = 24                y22 = 4·4 = 16
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let y = conv_transpose2d_forward(&x, &w2(), Some(&t(&[1], &[0.5])), cfg(1, 0));
    assert_eq!(y, t(&[1, 1, 3, 3], &[1.5, 4.5, 4.5, 6.5, 20.5, 16.5, 9.5, 24.5, 16.5]));
}

#[test]
fn conv_transpose_forward_stride2_pad1() {
    // x = [[1,2],[3,4]], w = 3×3 ones, stride 2, padding 1: full (uncropped) output is (2−1)·2+3 = 5;
    // pixel (iy, ix) adds x to rows 2iy..2iy+3, cols 2ix..2ix+3:
    //   1 1 3 2 2
    //   1 1 3 2 2
    //   4 4 10 6 6
    //   3 3 7 4 4
    //   3 3 7 4 4
    // Padding 1 crops one ring: Ho = 3, y = [[1,3,2],[4,10,6],[3,7,4]].
    let x = t(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
    let w = Tensor::full(&[1, 1, 3, 3], 1.0);
    let y = conv_transpose2d_forward(&x, &w, None, cfg(2, 1));
    assert_eq!(y, t(&[1, 1, 3, 3], &[1., 3., 2., 4., 10., 6., 3., 7., 4.]));
}

#[test]
fn conv_transpose_forward_channels() {
    // x: 1×2×1×1 = [2, 3]; w: [Ci=2, Co=3, 1, 1], w[ci, co] = [[1, 0, −1], [1, 2, 4]]; bias [0, 1, 0].
    // y[co] = Σ_ci x[ci]·w[ci, co] + b[co] = [2+3, 0+6+1, −2+12] = [5, 7, 10].
    let x = t(&[1, 2, 1, 1], &[2., 3.]);
    let w = t(&[2, 3, 1, 1], &[1., 0., -1., 1., 2., 4.]);
    let y = conv_transpose2d_forward(&x, &w, Some(&t(&[3], &[0., 1., 0.])), cfg(1, 0));
    assert_eq!(y, t(&[1, 3, 1, 1], &[5., 7., 10.]));
}

/// An independent scatter-form transposed convolution, straight from the definition.
fn naive_conv_transpose(x: &Tensor, w: &Tensor, c: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (_, co, kh, kw) = w.dims4();
    let (s, p) = (c.stride as isize, c.padding as isize);
    let ho = (h as isize - 1) * s - 2 * p + kh as isize;
    let wo = (wd as isize - 1) * s - 2 * p + kw as isize;
    let mut y = Tensor::zeros(&[n, co, ho as usize, wo as usize]);
    for ni in 0..n {
        for a in 0..ci {
            for iy in 0..h {
                for ix in 0..wd {
                    for b in 0..co {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = iy as isize * s + ky as isize - p;
                                let ox = ix as isize * s + kx as isize - p;
                                if oy < 0 || ox < 0 || oy >= ho || ox >= wo {
                                    continue;
                                }
                                let xv = x.data()[((ni * ci + a) * h + iy) * wd + ix];
                                let wv = w.data()[((a * co + b) * kh + ky) * kw + kx];
                                let yi = ((ni * co + b) * ho as usize + oy as usize) * wo as usize + ox as usize;
                                y.data_mut()[yi] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

#[test]
fn conv_transpose_matches_naive_scatter() {
    let mut rng = StdRng::seed_from_u64(11);
    for (h, w, k, s, p) in [(3, 4, 3, 2, 1), (2, 3, 4, 2, 1), (3, 3, 2, 3, 0), (4, 2, 3, 1, 1)] {
        let x = nonzero(&[2, 3, h, w], &mut rng);
        let wt = nonzero(&[3, 2, k, k], &mut rng);
        let got = conv_transpose2d_forward(&x, &wt, None, cfg(s, p));
        assert_close(&got, &naive_conv_transpose(&x, &wt, cfg(s, p)), 1e-5);
    }
}

// ---------------------------------------------------------------- gradients

/// (N, Ci, Co, H, W, kh, kw, stride, padding)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize, usize);

/// Shapes exercised by the gradient checks.
const CASES: [Case; 5] = [
    (2, 3, 2, 5, 6, 3, 3, 1, 1),
    (1, 2, 3, 5, 5, 3, 3, 2, 1), // stride 2
    (2, 2, 2, 5, 6, 2, 3, 2, 0), // non-square kernel, floor drops the last row and column
    (1, 1, 2, 4, 7, 1, 1, 1, 0), // 1×1 conv
    (1, 2, 1, 3, 3, 3, 3, 1, 2), // padding larger than half the kernel
];

#[test]
fn conv_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(1);
    for (n, ci, co, h, w, kh, kw, s, p) in CASES {
        let c = cfg(s, p);
        let x = nonzero(&[n, ci, h, w], &mut rng);
        let wt = nonzero(&[co, ci, kh, kw], &mut rng);
        let b = nonzero(&[co], &mut rng);
        let y = conv2d_forward(&x, &wt, Some(&b), c);
        let r = nonzero(y.shape(), &mut rng); // loss = Σ r ⊙ y, so dy = r
        let dx = conv2d_backward_data(&r, &wt, x.shape(), c);
        let dw = conv2d_backward_weight(&r, &x, wt.shape(), c);
        let num_dx = fd_grad(&x, 1e-2, |x| dot(&conv2d_forward(x, &wt, Some(&b), c), &r));
        let num_dw = fd_grad(&wt, 1e-2, |wt| dot(&conv2d_forward(&x, wt, Some(&b), c), &r));
        assert_close(&dx, &num_dx, 1e-2);
        assert_close(&dw, &num_dw, 1e-2);
    }
}

#[test]
fn conv_transpose_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(2);
    for (n, ci, co, h, w, kh, kw, s, p) in CASES {
        let c = cfg(s, p);
        if (h - 1) * s + kh.min(kw) <= 2 * p {
            continue;
        }
        let x = nonzero(&[n, ci, h, w], &mut rng);
        let wt = nonzero(&[ci, co, kh, kw], &mut rng);
        let b = nonzero(&[co], &mut rng);
        let y = conv_transpose2d_forward(&x, &wt, Some(&b), c);
        let r = nonzero(y.shape(), &mut rng);
        let dx = conv_transpose2d_backward_data(&r, &wt, x.shape(), c);
        let dw = conv_transpose2d_backward_weight(&r, &x, wt.shape(), c);
        let num_dx = fd_grad(&x, 1e-2, |x| dot(&conv_transpose2d_forward(x, &wt, Some(&b), c), &r));
        let num_dw = fd_grad(&wt, 1e-2, |wt| dot(&conv_transpose2d_forward(&x, wt, Some(&b), c), &r));
        assert_close(&dx, &num_dx, 1e-2);
        assert_close(&dw, &num_dw, 1e-2);
    }
}

#[test]
fn conv_adjoint_identities() {
    // The conv is bilinear in (x, w): ⟨conv(x, w), y⟩ = ⟨x, backward_data(y, w)⟩ = ⟨w, backward_weight(y, x)⟩.
    let mut rng = StdRng::seed_from_u64(3);
    for (n, ci, co, h, w, kh, kw, s, p) in CASES {
        let c = cfg(s, p);
        let x = Tensor::randn(&[n, ci, h, w], 1.0, &mut rng);
        let wt = Tensor::randn(&[co, ci, kh, kw], 1.0, &mut rng);
        let y = conv2d_forward(&x, &wt, None, c);
        let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
        let lhs = dot(&y, &g);
        let via_x = dot(&x, &conv2d_backward_data(&g, &wt, x.shape(), c));
        let via_w = dot(&wt, &conv2d_backward_weight(&g, &x, wt.shape(), c));
        let scale = lhs.abs().max(1.0);
        assert!((lhs - via_x).abs() / scale < 1e-5, "data adjoint {lhs} vs {via_x}");
        assert!((lhs - via_w).abs() / scale < 1e-5, "weight adjoint {lhs} vs {via_w}");
    }
}

#[test]
fn conv_transpose_is_adjoint_of_conv() {
    // With the same weight tensor (read as [Co_conv, Ci_conv, ..] by the conv and [Ci_t, Co_t, ..] by
    // the transposed conv), ⟨conv(a, w), b⟩ = ⟨a, conv_transpose(b, w)⟩ for every a, b.
    // (Only where the conv's floor drops nothing, so that the transposed conv's output is a's size.)
    let mut rng = StdRng::seed_from_u64(4);
    for (n, ci, co, h, w, kh, kw, s, p) in CASES {
        let c = cfg(s, p);
        if (h + 2 * p - kh) % s != 0 || (w + 2 * p - kw) % s != 0 {
            continue;
        }
        let a = Tensor::randn(&[n, ci, h, w], 1.0, &mut rng);
        let wt = Tensor::randn(&[co, ci, kh, kw], 1.0, &mut rng);
        let ya = conv2d_forward(&a, &wt, None, c);
        let b = Tensor::randn(ya.shape(), 1.0, &mut rng);
        let tb = conv_transpose2d_forward(&b, &wt, None, c);
        let (lhs, rhs) = (dot(&ya, &b), dot(&a, &tb));
        assert!((lhs - rhs).abs() / lhs.abs().max(1.0) < 1e-5, "{lhs} vs {rhs}");
    }
}

#[test]
fn conv_transpose_adjoint_identities() {
    let mut rng = StdRng::seed_from_u64(5);
    for (n, ci, co, h, w, kh, kw, s, p) in CASES {
        let c = cfg(s, p);
        if (h - 1) * s + kh.min(kw) <= 2 * p {
            continue;
        }
        let x = Tensor::randn(&[n, ci, h, w], 1.0, &mut rng);
        let wt = Tensor::randn(&[ci, co, kh, kw], 1.0, &mut rng);
        let y = conv_transpose2d_forward(&x, &wt, None, c);
        let g = Tensor::uniform(y.shape(), -1.0, 1.0, &mut rng);
        let lhs = dot(&y, &g);
        let via_x = dot(&x, &conv_transpose2d_backward_data(&g, &wt, x.shape(), c));
        let via_w = dot(&wt, &conv_transpose2d_backward_weight(&g, &x, wt.shape(), c));
        let scale = lhs.abs().max(1.0);
        assert!((lhs - via_x).abs() / scale < 1e-5, "data adjoint {lhs} vs {via_x}");
        assert!((lhs - via_w).abs() / scale < 1e-5, "weight adjoint {lhs} vs {via_w}");
    }
}

// ---------------------------------------------------------------- fast (im2col + sgemm) vs reference loops

/// Runs every fast conv function (and, with `transposed`, every transposed-conv function) and its
/// `*_naive` reference on one case and checks rel err ≤ 1e-5 (f32 GEMM sums against f64 loops).
fn check_fast_vs_naive(case: Case, transposed: bool, rng: &mut StdRng) {
    let (n, ci, co, h, w, kh, kw, s, p) = case;
    let c = cfg(s, p);
    let what = format!("case {case:?}");
    let close = |got: &Tensor, want: &Tensor, op: &str| {
        assert_eq!(got.shape(), want.shape(), "{op} {what}");
        let e = got.rel_err(want);
        assert!(e <= 1e-5, "{op} {what}: rel err {e:e}");
    };
    let x = Tensor::randn(&[n, ci, h, w], 1.0, rng);
    let wt = Tensor::randn(&[co, ci, kh, kw], 0.5, rng);
    let b = Tensor::randn(&[co], 0.5, rng);
    close(&conv2d_forward(&x, &wt, Some(&b), c), &conv2d_forward_naive(&x, &wt, Some(&b), c), "forward+bias");
    let y = conv2d_forward(&x, &wt, None, c);
    close(&y, &conv2d_forward_naive(&x, &wt, None, c), "forward");
    let dy = Tensor::randn(y.shape(), 1.0, rng);
    close(
        &conv2d_backward_data(&dy, &wt, x.shape(), c),
        &conv2d_backward_data_naive(&dy, &wt, x.shape(), c),
        "backward_data",
    );
    close(
        &conv2d_backward_weight(&dy, &x, wt.shape(), c),
        &conv2d_backward_weight_naive(&dy, &x, wt.shape(), c),
        "backward_weight",
    );
    // The transposed convolution with the same numbers: input y-shaped, output x-shaped or larger.
    if transposed && (h - 1) * s + kh.min(kw) > 2 * p {
        let xt = Tensor::randn(&[n, ci, h, w], 1.0, rng);
        let wt_t = Tensor::randn(&[ci, co, kh, kw], 0.5, rng);
        let yt = conv_transpose2d_forward(&xt, &wt_t, Some(&b), c);
        close(&yt, &conv_transpose2d_forward_naive(&xt, &wt_t, Some(&b), c), "transpose forward");
        let dyt = Tensor::randn(yt.shape(), 1.0, rng);
        close(
            &conv_transpose2d_backward_data(&dyt, &wt_t, xt.shape(), c),
            &conv_transpose2d_backward_data_naive(&dyt, &wt_t, xt.shape(), c),
            "transpose backward_data",
        );
        close(
            &conv_transpose2d_backward_weight(&dyt, &xt, wt_t.shape(), c),
            &conv_transpose2d_backward_weight_naive(&dyt, &xt, wt_t.shape(), c),
            "transpose backward_weight",
        );
    }
}

#[test]
fn fast_conv_matches_naive_on_fixed_cases() {
    let mut rng = StdRng::seed_from_u64(20);
    let cases: [Case; 15] = [
        (2, 3, 4, 9, 11, 3, 3, 1, 1),    // "same" 3×3, ragged tiles everywhere
        (3, 2, 5, 10, 10, 3, 3, 2, 1),   // stride 2
        (2, 4, 3, 13, 9, 4, 2, 3, 0),    // stride 3, non-square kernel, floor drops rows/columns
        (1, 5, 7, 6, 6, 1, 1, 1, 0),     // 1×1: the image is its own column matrix
        (2, 3, 2, 8, 8, 1, 1, 2, 0),     // strided 1×1
        (2, 2, 3, 5, 5, 3, 3, 1, 2),     // padding wider than half the kernel
        (1, 1, 1, 1, 1, 1, 1, 1, 0),     // a single pixel
        (1, 2, 2, 3, 3, 3, 3, 1, 3),     // taps entirely in the padding
        (9, 3, 6, 20, 21, 5, 5, 1, 2),   // long rows (> 8 floats), several partial groups
        (4, 8, 70, 12, 12, 3, 3, 1, 1),  // Co > 64: weight gradient on the packed path
        (5, 16, 32, 16, 16, 3, 3, 2, 1), // long-k weight gradient (dot products)
        (2, 3, 4, 7, 30, 2, 7, 1, 3),    // wide, flat image
        // Column matrices over the 2^18-float budget: unrolled in bands of output rows.
        (2, 16, 8, 48, 48, 3, 3, 1, 1),
        (2, 128, 4, 48, 48, 1, 1, 1, 0), // banded 1×1
        (1, 64, 3, 60, 60, 3, 3, 2, 1),  // banded, stride 2
    ];
    for case in cases {
        check_fast_vs_naive(case, true, &mut rng);
    }
}

#[test]
fn fast_conv_matches_naive_on_random_cases() {
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..40 {
        let (kh, kw): (usize, usize) = (rng.random_range(1..=5), rng.random_range(1..=5));
        let (s, p): (usize, usize) = (rng.random_range(1..=3), rng.random_range(0..=2));
        let h = rng.random_range(kh.saturating_sub(2 * p).max(1)..=kh + 14);
        let w = rng.random_range(kw.saturating_sub(2 * p).max(1)..=kw + 14);
        let case = (rng.random_range(1..=5), rng.random_range(1..=6), rng.random_range(1..=9), h, w, kh, kw, s, p);
        check_fast_vs_naive(case, true, &mut rng);
    }
}

#[test]
fn fast_conv_matches_naive_on_multilenet_shapes() {
    // MultiLeNet at the training batch: conv5×5 1→10 on 28×28 and 10→20 on 12×12. Full batch, so
    // the weight gradient sums 256·576 (conv1) and 256·64 (conv2) products.
    let mut rng = StdRng::seed_from_u64(22);
    check_fast_vs_naive((256, 1, 10, 28, 28, 5, 5, 1, 0), false, &mut rng);
    check_fast_vs_naive((256, 10, 20, 12, 12, 5, 5, 1, 0), false, &mut rng);
}

#[test]
fn fast_conv_is_independent_of_thread_count() {
    // Large enough to be threaded: over images (MultiLeNet), and inside the GEMMs (a single image).
    let mut rng = StdRng::seed_from_u64(23);
    let cases: [Case; 3] =
        [(128, 1, 10, 28, 28, 5, 5, 1, 0), (96, 10, 20, 12, 12, 5, 5, 1, 0), (1, 16, 32, 64, 64, 3, 3, 1, 1)];
    let run = |threads: &str, x: &Tensor, wt: &Tensor, b: &Tensor, dy: &Tensor, c: Conv2dCfg| {
        std::env::set_var("MTCOOL_THREADS", threads);
        [
            conv2d_forward(x, wt, Some(b), c),
            conv2d_backward_data(dy, wt, x.shape(), c),
            conv2d_backward_weight(dy, x, wt.shape(), c),
        ]
    };
    for (n, ci, co, h, w, kh, kw, s, p) in cases {
        let c = cfg(s, p);
        let x = Tensor::randn(&[n, ci, h, w], 1.0, &mut rng);
        let wt = Tensor::randn(&[co, ci, kh, kw], 0.5, &mut rng);
        let b = Tensor::randn(&[co], 0.5, &mut rng);
        let (ho, wo) = conv2d_out_hw(h, w, kh, kw, c);
        let dy = Tensor::randn(&[n, co, ho, wo], 1.0, &mut rng);
        let one = run("1", &x, &wt, &b, &dy, c);
        for threads in ["2", "3", "8"] {
            let many = run(threads, &x, &wt, &b, &dy, c);
            for (a, b) in one.iter().zip(&many) {
                let same = a.data().iter().zip(b.data()).all(|(u, v)| u.to_bits() == v.to_bits());
                assert!(same, "{threads} threads differ from 1 on {:?}", (n, ci, co, h, w));
            }
        }
    }
    std::env::remove_var("MTCOOL_THREADS");
}

#[test]
fn fused_conv_max_pool_equals_the_two_ops_bit_for_bit() {
    // conv2d_max_pool_forward against max_pool2d_forward(conv2d_forward(..)): values and argmax, at
    // odd output sizes (the pool floors), with padding, on the fused (stride 1) and the fallback
    // (stride 2) path, for 1-3 threads; and ties (a constant image) pick the same first maximum.
    use mtcool::backend::cpu::pool::max_pool2d_forward;
    let mut rng = StdRng::seed_from_u64(31);
    let cases: [Case; 5] = [
        (5, 1, 10, 28, 28, 5, 5, 1, 0),
        (3, 10, 20, 12, 12, 5, 5, 1, 0),
        (2, 3, 4, 9, 11, 3, 3, 1, 1),
        (1, 2, 3, 7, 8, 2, 2, 1, 0),
        (2, 3, 4, 13, 9, 3, 3, 2, 1),
    ];
    for (n, ci, co, h, w, kh, kw, s, p) in cases {
        let c = cfg(s, p);
        for constant in [false, true] {
            let x =
                if constant { Tensor::full(&[n, ci, h, w], 0.5) } else { Tensor::randn(&[n, ci, h, w], 1.0, &mut rng) };
            let wt = Tensor::randn(&[co, ci, kh, kw], 0.5, &mut rng);
            let b = Tensor::randn(&[co], 0.5, &mut rng);
            let conv = conv2d_forward(&x, &wt, Some(&b), c);
            let (want, want_arg) = max_pool2d_forward(&conv, 2, 2);
            for threads in ["1", "2", "3"] {
                std::env::set_var("MTCOOL_THREADS", threads);
                let (got, got_arg, shape) = conv2d_max_pool_forward(&x, &wt, Some(&b), c);
                std::env::remove_var("MTCOOL_THREADS");
                let what = format!("{:?} constant={constant} threads={threads}", (n, ci, co, h, w, kh, kw, s, p));
                assert_eq!(shape, conv.shape(), "{what}");
                assert_eq!(got.shape(), want.shape(), "{what}");
                let same = got.data().iter().zip(want.data()).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what}: pooled values differ");
                assert_eq!(got_arg, want_arg, "{what}: argmax differs");
            }
        }
    }
}

#[test]
fn fused_conv_relu_equals_the_two_ops_bit_for_bit() {
    // conv2d_relu_forward against relu(conv2d_forward(..)), with and without bias, on the fused
    // (stride 1) and the fallback (stride 2, 1×1) paths.
    use mtcool::backend::cpu::elementwise::relu;
    let mut rng = StdRng::seed_from_u64(32);
    let cases: [Case; 4] = [
        (3, 3, 8, 16, 16, 3, 3, 1, 1),
        (2, 10, 20, 12, 12, 5, 5, 1, 0),
        (2, 3, 4, 13, 9, 3, 3, 2, 1),
        (2, 5, 7, 6, 6, 1, 1, 1, 0),
    ];
    for (n, ci, co, h, w, kh, kw, s, p) in cases {
        let c = cfg(s, p);
        let x = Tensor::randn(&[n, ci, h, w], 1.0, &mut rng);
        let wt = Tensor::randn(&[co, ci, kh, kw], 0.5, &mut rng);
        let b = Tensor::randn(&[co], 0.5, &mut rng);
        for bias in [Some(&b), None] {
            let want = relu(&conv2d_forward(&x, &wt, bias, c));
            let got = conv2d_relu_forward(&x, &wt, bias, c);
            let what = format!("{:?} bias={}", (n, ci, co, h, w, kh, kw, s, p), bias.is_some());
            assert_eq!(got.shape(), want.shape(), "{what}");
            assert!(want.data().contains(&0.0) && want.data().iter().any(|&v| v > 0.0), "{what}: both signs");
            let same = got.data().iter().zip(want.data()).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{what}: values differ");
        }
    }
}
