//! Losses (CPU reference): softmax cross-entropy, soft Dice, one-hot.

mod common;

use common::{assert_close_abs, fd_grad, t};
use mtcool::backend::cpu::loss::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LN2: f32 = std::f32::consts::LN_2;

// ---------------------------------------------------------------- correct counts

#[test]
fn count_correct_hand() {
    // [N=3, C=3]: arg-maxes 2, 0 (a tie of 0 and 1: the first wins), 1 (a NaN never wins over 0.5).
    let logits = t(&[3, 3], &[0.1, 0.2, 0.9, 0.7, 0.7, 0.1, 0.0, 0.5, f32::NAN]);
    assert_eq!(count_correct(&logits, &[2, 0, 1]), 3);
    assert_eq!(count_correct(&logits, &[2, 1, 2]), 1);
    // Per pixel: [N=1, C=2, 2 pixels], labels in (n, h·w) order.
    let seg = t(&[1, 2, 1, 2], &[1.0, 0.0, 0.0, 1.0]);
    assert_eq!(count_correct(&seg, &[0, 1]), 2);
    assert_eq!(count_correct(&seg, &[1, 1]), 1);
}

// ---------------------------------------------------------------- cross-entropy

#[test]
fn ce_hand_single() {
    // logits [0, ln 2] → softmax [1, 2] / 3 = [1/3, 2/3]; target 1 → loss −ln(2/3) = ln 1.5.
    let (loss, probs) = softmax_cross_entropy_forward(&t(&[1, 2], &[0.0, LN2]), &[1], None);
    assert!((loss - 1.5f32.ln()).abs() < 1e-6, "loss {loss}");
    assert_close_abs(probs.data(), &[1.0 / 3.0, 2.0 / 3.0], 1e-6);
}

#[test]
fn ce_hand_weighted() {
    // Row 0: logits [0, ln 2], target 1 → nll ln 1.5.  Row 1: logits [0, 0], target 0 → nll ln 2.
    // Unweighted mean: (ln 1.5 + ln 2) / 2 = ln 3 / 2.
    // Class weights [3, 1]: row 0 has weight w[1] = 1, row 1 weight w[0] = 3:
    //   (1·ln 1.5 + 3·ln 2) / (1 + 3).
    let logits = t(&[2, 2], &[0.0, LN2, 0.0, 0.0]);
    let (plain, _) = softmax_cross_entropy_forward(&logits, &[1, 0], None);
    assert!((plain - 3f32.ln() / 2.0).abs() < 1e-6, "loss {plain}");
    let (weighted, _) = softmax_cross_entropy_forward(&logits, &[1, 0], Some(&[3.0, 1.0]));
    let want = (1.5f32.ln() + 3.0 * LN2) / 4.0;
    assert!((weighted - want).abs() < 1e-6, "loss {weighted} want {want}");
}

#[test]
fn ce_hand_spatial() {
    // [N=1, C=2, H=1, W=2], stored [c0w0, c0w1, c1w0, c1w1] = [0, ln 3, ln 2, 0].
    // Position 0: logits (0, ln 2), target 1 → p = (1/3, 2/3), nll ln 1.5.
    // Position 1: logits (ln 3, 0), target 0 → p = (3/4, 1/4), nll ln(4/3).
    // Mean: (ln 1.5 + ln(4/3)) / 2 = ln 2 / 2.
    let logits = t(&[1, 2, 1, 2], &[0.0, 3f32.ln(), LN2, 0.0]);
    let (loss, probs) = softmax_cross_entropy_forward(&logits, &[1, 0], None);
    assert!((loss - LN2 / 2.0).abs() < 1e-6, "loss {loss}");
    assert_close_abs(probs.data(), &[1.0 / 3.0, 0.75, 2.0 / 3.0, 0.25], 1e-6);
}

#[test]
fn ce_is_stable_for_large_logits() {
    // logits [1000, 0], target 1: nll = logsumexp − 0 ≈ 1000 (no overflow); target 0: ≈ e^−1000 ≈ 0.
    let logits = t(&[2, 2], &[1000.0, 0.0, 1000.0, 0.0]);
    let (loss, probs) = softmax_cross_entropy_forward(&logits, &[1, 0], None);
    assert!((loss - 500.0).abs() < 1e-3, "loss {loss}");
    assert!(probs.all_finite());
}

fn check_ce_backward(shape: &[usize], weights: Option<&[f32]>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (n, c, inner) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let logits = Tensor::randn(shape, 2.0, &mut rng);
    let targets: Vec<u32> = (0..n * inner).map(|_| rng.random_range(0..c as u32)).collect();
    let (_, probs) = softmax_cross_entropy_forward(&logits, &targets, weights);
    let dx = softmax_cross_entropy_backward(&probs, &targets, weights, 1.0);
    let fd = fd_grad(&logits, 1e-2, |z| softmax_cross_entropy_forward(z, &targets, weights).0 as f64);
    assert!(dx.rel_err(&fd) < 1e-2, "dlogits rel err {} for {shape:?}", dx.rel_err(&fd));

    // dloss scales the gradient linearly.
    let dx3 = softmax_cross_entropy_backward(&probs, &targets, weights, 3.0);
    assert!(dx3.rel_err(&dx.map(|v| 3.0 * v)) < 1e-6);
}

#[test]
fn ce_backward_matches_finite_difference() {
    check_ce_backward(&[4, 5], None, 11);
    check_ce_backward(&[4, 5], Some(&[0.5, 2.0, 1.0, 3.0, 0.25]), 12);
    check_ce_backward(&[2, 3, 2, 3], None, 13);
    check_ce_backward(&[2, 3, 2, 3], Some(&[1.5, 0.5, 2.0]), 14);
}

#[test]
#[should_panic(expected = "out of range")]
fn ce_rejects_bad_target() {
    softmax_cross_entropy_forward(&t(&[1, 2], &[0.0, 0.0]), &[2], None);
}

// ---------------------------------------------------------------- one-hot

#[test]
fn one_hot_hand() {
    // [N=3] labels [2, 0, 1], 3 classes → rows [0 0 1], [1 0 0], [0 1 0].
    let y = one_hot(&[2, 0, 1], 3, &[3]);
    assert_eq!(y.shape(), [3, 3]);
    assert_eq!(y.data(), [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    // [N=1, H=1, W=3] labels [2, 0, 1] → [1, 3, 1, 3]: channel c is 1 where the label is c.
    let y = one_hot(&[2, 0, 1], 3, &[1, 1, 3]);
    assert_eq!(y.shape(), [1, 3, 1, 3]);
    assert_eq!(y.data(), [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
}

// ---------------------------------------------------------------- soft Dice

// A 2×2 mask: logits [ln 3, −ln 3, 0, 0] have sigmoids p = [3/4, 1/4, 1/2, 1/2]; target t = [1, 0, 0, 1].
// Σ p·t = 3/4 + 1/2 = 5/4, Σ p = 2, Σ t = 2.
//   eps = 0: D = (2·5/4) / (2 + 2) = 5/8 → loss 3/8.
//   eps = 1: D = (5/2 + 1) / (4 + 1) = 7/10 → loss 3/10.
fn mask_logits() -> [f32; 4] {
    let l3 = 3f32.ln();
    [l3, -l3, 0.0, 0.0]
}

#[test]
fn dice_binary_hand() {
    let logits = t(&[1, 1, 2, 2], &mask_logits());
    let target = t(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let (loss, probs) = soft_dice_forward(&logits, &target, DiceMode::Binary, 0.0);
    assert_close_abs(probs.data(), &[0.75, 0.25, 0.5, 0.5], 1e-6);
    assert!((loss - 0.375).abs() < 1e-6, "loss {loss}");
    let (loss, _) = soft_dice_forward(&logits, &target, DiceMode::Binary, 1.0);
    assert!((loss - 0.3).abs() < 1e-6, "loss {loss}");
}

#[test]
fn dice_binary_two_channels_hand() {
    // Channel 0 is the mask above (D0 = 5/8). Channel 1: logits 0 → p = 1/2 everywhere, t = 1 everywhere:
    // Σ p·t = 2, Σ p = 2, Σ t = 4 → D1 = 4/6 = 2/3. loss = 1 − (5/8 + 2/3)/2 = 17/48.
    let mut l = mask_logits().to_vec();
    l.extend([0.0; 4]);
    let logits = t(&[1, 2, 2, 2], &l);
    let target = t(&[1, 2, 2, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    let (loss, _) = soft_dice_forward(&logits, &target, DiceMode::Binary, 0.0);
    assert!((loss - 17.0 / 48.0).abs() < 1e-6, "loss {loss}");
}

#[test]
fn dice_multiclass_hand() {
    // Two classes, class-0 logits 0 and class-1 logits the mask logits: softmax gives
    // p1 = sigmoid(z1 − z0) = [3/4, 1/4, 1/2, 1/2], p0 = 1 − p1 = [1/4, 3/4, 1/2, 1/2].
    // Labels [1, 0, 0, 1] one-hot: t1 = [1, 0, 0, 1], t0 = [0, 1, 1, 0].
    // D1 = 5/8 (as above); D0: Σ p0·t0 = 3/4 + 1/2 = 5/4, Σ p0 = 2, Σ t0 = 2 → 5/8. loss = 3/8.
    let mut l = vec![0.0; 4];
    l.extend(mask_logits());
    let logits = t(&[1, 2, 2, 2], &l);
    let target = one_hot(&[1, 0, 0, 1], 2, &[1, 2, 2]);
    let (loss, probs) = soft_dice_forward(&logits, &target, DiceMode::MultiClass, 0.0);
    assert_close_abs(probs.data(), &[0.25, 0.75, 0.5, 0.5, 0.75, 0.25, 0.5, 0.5], 1e-6);
    assert!((loss - 0.375).abs() < 1e-6, "loss {loss}");
}

#[test]
fn dice_perfect_prediction_is_near_zero() {
    // Very confident correct logits: p ≈ t, so every D_c ≈ 1.
    let target = t(&[1, 1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let logits = target.map(|v| if v > 0.5 { 30.0 } else { -30.0 });
    let (loss, _) = soft_dice_forward(&logits, &target, DiceMode::Binary, 1e-6);
    assert!(loss.abs() < 1e-5, "loss {loss}");
}

fn check_dice_backward(shape: &[usize], mode: DiceMode, eps: f32, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let logits = Tensor::randn(shape, 1.5, &mut rng);
    let target = match mode {
        DiceMode::Binary => Tensor::uniform(shape, 0.0, 1.0, &mut rng).map(|v| if v < 0.4 { 1.0 } else { 0.0 }),
        DiceMode::MultiClass => {
            let mut nhw = vec![shape[0]];
            nhw.extend_from_slice(&shape[2..]);
            let labels: Vec<u32> =
                (0..nhw.iter().product::<usize>()).map(|_| rng.random_range(0..shape[1] as u32)).collect();
            one_hot(&labels, shape[1], &nhw)
        }
    };
    let (_, probs) = soft_dice_forward(&logits, &target, mode, eps);
    let dx = soft_dice_backward(&logits, &probs, &target, mode, eps, 1.0);
    let fd = fd_grad(&logits, 1e-2, |z| soft_dice_forward(z, &target, mode, eps).0 as f64);
    assert!(dx.rel_err(&fd) < 1e-2, "dlogits rel err {} for {shape:?} {mode:?}", dx.rel_err(&fd));

    let dx2 = soft_dice_backward(&logits, &probs, &target, mode, eps, -2.0);
    assert!(dx2.rel_err(&dx.map(|v| -2.0 * v)) < 1e-6);
}

#[test]
fn dice_backward_matches_finite_difference() {
    check_dice_backward(&[2, 1, 3, 3], DiceMode::Binary, 1.0, 21);
    check_dice_backward(&[2, 2, 3, 2], DiceMode::Binary, 1e-3, 22);
    check_dice_backward(&[2, 3, 3, 3], DiceMode::MultiClass, 1.0, 23);
    check_dice_backward(&[5, 4], DiceMode::MultiClass, 1e-3, 24);
}
