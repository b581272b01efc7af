//! Losses: softmax cross-entropy (optionally class-weighted, per pixel for [N, C, H, W]), soft Dice
//! (binary/sigmoid or multi-class/softmax), and the one-hot encoding of labels.
//! Kernels: `kernels/loss.cu` (same names).
//!
//! Classes always sit on dim 1. An "item" is one (n, spatial position) pair; items are ordered
//! (n, h, w), so item i = n·inner + s reads logits[n, c, s] at flat index (n·C + c)·inner + s.

use super::elementwise::{channel_dims, sigmoid_scalar};
use crate::Tensor;

/// Softmax over dim 1 of an [N, C, ...] tensor, max-subtracted for stability.
fn softmax_dim1(x: &Tensor) -> Tensor {
    softmax_lse(x).0
}

/// Softmax over dim 1 and, per item (b, s), the log-sum-exp max + ln Σ_c exp(x_c − max), both in
/// f64 from one exp per element. Items are spread over the CPU workers when there are many.
fn softmax_lse(x: &Tensor) -> (Tensor, Vec<f64>) {
    let (n, c, inner) = channel_dims(x);
    let xd = x.data();
    let mut out = vec![0f32; x.numel()];
    let mut lse = vec![0f64; n * inner];
    let threads = if x.numel() >= 1 << 16 { super::gemm::num_threads() } else { 1 };
    let per = n.div_ceil(threads.max(1)).max(1);
    let parts: Vec<_> = out
        .chunks_mut((per * c * inner).max(1))
        .zip(lse.chunks_mut((per * inner).max(1)))
        .map(std::sync::Mutex::new)
        .collect();
    super::workers::run(parts.len(), |t| {
        let mut part = parts[t].lock().unwrap_or_else(|p| p.into_inner());
        let (out, lse) = &mut *part;
        let mut e = vec![0f64; c];
        for (i, (o, l)) in out.chunks_exact_mut(c * inner).zip(lse.chunks_exact_mut(inner)).enumerate() {
            let xb = &xd[(t * per + i) * c * inner..][..c * inner];
            for (s, l) in l.iter_mut().enumerate() {
                let max = (0..c).map(|ch| xb[ch * inner + s]).fold(f32::NEG_INFINITY, f32::max) as f64;
                let mut denom = 0f64;
                for (ch, e) in e.iter_mut().enumerate() {
                    *e = (xb[ch * inner + s] as f64 - max).exp();
                    denom += *e;
                }
                for (ch, &e) in e.iter().enumerate() {
                    o[ch * inner + s] = (e / denom) as f32;
                }
                *l = max + denom.ln();
            }
        }
    });
    drop(parts);
    (Tensor::from_parts(x.shape().to_vec(), out), lse)
}

/// Checks targets and weights against [N, C, ...] and returns (N, C, inner).
fn check_ce_inputs(x: &Tensor, targets: &[u32], class_weights: Option<&[f32]>) -> (usize, usize, usize) {
    let (n, c, inner) = channel_dims(x);
    assert_eq!(
        targets.len(),
        n * inner,
        "cross-entropy: {} targets for {} items of shape {:?}",
        targets.len(),
        n * inner,
        x.shape()
    );
    if let Some(&bad) = targets.iter().find(|&&t| t as usize >= c) {
        panic!("cross-entropy: target {bad} out of range for {c} classes");
    }
    if let Some(w) = class_weights {
        assert_eq!(w.len(), c, "cross-entropy: {} class weights for {c} classes", w.len());
    }
    (n, c, inner)
}

/// Weighted-mean softmax cross-entropy: loss = Σ_i w[y_i] · (−log p_i[y_i]) / Σ_i w[y_i] (w ≡ 1 when
/// `class_weights` is None, which is the plain mean). −log p_i[y] = logsumexp(z_i) − z_i[y], computed
/// with the max subtracted. Returns the loss and the softmax probabilities (same shape as logits).
pub fn softmax_cross_entropy_forward(logits: &Tensor, targets: &[u32], class_weights: Option<&[f32]>) -> (f32, Tensor) {
    let (n, c, inner) = check_ce_inputs(logits, targets, class_weights);
    let xd = logits.data();
    let (probs, lse) = softmax_lse(logits);
    let mut weighted_nll = 0f64;
    let mut weight_sum = 0f64;
    for b in 0..n {
        for s in 0..inner {
            let y = targets[b * inner + s] as usize;
            let w = class_weights.map_or(1.0, |w| w[y] as f64);
            weighted_nll += w * (lse[b * inner + s] - xd[(b * c + y) * inner + s] as f64);
            weight_sum += w;
        }
    }
    ((weighted_nll / weight_sum) as f32, probs)
}

/// dlogits[i, c] = dloss · w[y_i] · (p_i[c] − [c = y_i]) / Σ_j w[y_j].
pub fn softmax_cross_entropy_backward(
    probs: &Tensor,
    targets: &[u32],
    class_weights: Option<&[f32]>,
    dloss: f32,
) -> Tensor {
    let (n, c, inner) = check_ce_inputs(probs, targets, class_weights);
    let weight_of = |y: u32| class_weights.map_or(1.0, |w| w[y as usize] as f64);
    let weight_sum: f64 = targets.iter().map(|&y| weight_of(y)).sum();
    let pd = probs.data();
    let mut dx = vec![0f32; probs.numel()];
    for b in 0..n {
        for s in 0..inner {
            let y = targets[b * inner + s];
            let k = dloss as f64 * weight_of(y) / weight_sum;
            for ch in 0..c {
                let i = (b * c + ch) * inner + s;
                let onehot = if ch == y as usize { 1.0 } else { 0.0 };
                dx[i] = (k * (pd[i] as f64 - onehot)) as f32;
            }
        }
    }
    Tensor::from_parts(probs.shape().to_vec(), dx)
}

pub use crate::settings::DiceMode;

/// Items whose arg-max over dim 1 (the first maximum, by a strict `>`: a NaN never wins) equals the
/// label; logits [N, C, ...], labels one per item in (n, spatial) order.
pub fn count_correct(logits: &Tensor, labels: &[u32]) -> usize {
    let (n, c, inner) = channel_dims(logits);
    assert_eq!(labels.len(), n * inner, "count_correct: {} labels for logits {:?}", labels.len(), logits.shape());
    let d = logits.data();
    let mut hits = 0;
    for b in 0..n {
        for s in 0..inner {
            let at = |k: usize| d[(b * c + k) * inner + s];
            let best = (1..c).fold(0, |best, k| if at(k) > at(best) { k } else { best });
            hits += usize::from(best as u32 == labels[b * inner + s]);
        }
    }
    hits
}

/// Per channel c: (Σ p·t, Σ p, Σ t) over N and spatial positions.
fn dice_sums(probs: &Tensor, target: &Tensor) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (n, c, inner) = channel_dims(probs);
    let (pd, td) = (probs.data(), target.data());
    let (mut inter, mut psum, mut tsum) = (vec![0f64; c], vec![0f64; c], vec![0f64; c]);
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            for i in start..start + inner {
                let (p, t) = (pd[i] as f64, td[i] as f64);
                inter[ch] += p * t;
                psum[ch] += p;
                tsum[ch] += t;
            }
        }
    }
    (inter, psum, tsum)
}

/// Soft Dice loss: D_c = (2·Σ p·t + eps) / (Σ p + Σ t + eps), sums over N and spatial positions;
/// loss = 1 − mean_c D_c. Returns the loss and the probabilities p.
pub fn soft_dice_forward(logits: &Tensor, target: &Tensor, mode: DiceMode, eps: f32) -> (f32, Tensor) {
    assert_eq!(
        logits.shape(),
        target.shape(),
        "dice: logits shape {:?} vs target shape {:?}",
        logits.shape(),
        target.shape()
    );
    let (_, c, _) = channel_dims(logits);
    let probs = match mode {
        DiceMode::Binary => logits.map(sigmoid_scalar),
        DiceMode::MultiClass => softmax_dim1(logits),
    };
    let (inter, psum, tsum) = dice_sums(&probs, target);
    let eps = eps as f64;
    let mean_dice = (0..c).map(|ch| (2.0 * inter[ch] + eps) / (psum[ch] + tsum[ch] + eps)).sum::<f64>() / c as f64;
    ((1.0 - mean_dice) as f32, probs)
}

/// dlogits of the soft Dice loss. With S_c = Σ p + Σ t + eps and D_c as in the forward,
///   g = dloss/dp[c, i] = −dloss / C · (2·t[c, i] / S_c − D_c / S_c),
/// then Binary: dlogit = g · p · (1 − p); MultiClass: dlogit[c] = p[c] · (g[c] − Σ_k p[k] · g[k]) per item.
pub fn soft_dice_backward(
    logits: &Tensor,
    probs: &Tensor,
    target: &Tensor,
    mode: DiceMode,
    eps: f32,
    dloss: f32,
) -> Tensor {
    assert_eq!(
        logits.shape(),
        probs.shape(),
        "dice backward: logits shape {:?} vs probs shape {:?}",
        logits.shape(),
        probs.shape()
    );
    assert_eq!(
        probs.shape(),
        target.shape(),
        "dice backward: probs shape {:?} vs target shape {:?}",
        probs.shape(),
        target.shape()
    );
    let (n, c, inner) = channel_dims(probs);
    let (inter, psum, tsum) = dice_sums(probs, target);
    let eps = eps as f64;
    let (pd, td) = (probs.data(), target.data());

    // g = dloss/dp, elementwise.
    let mut g = vec![0f64; probs.numel()];
    for b in 0..n {
        for ch in 0..c {
            let s = psum[ch] + tsum[ch] + eps;
            let d = (2.0 * inter[ch] + eps) / s;
            let k = -(dloss as f64) / c as f64;
            let start = (b * c + ch) * inner;
            for i in start..start + inner {
                g[i] = k * (2.0 * td[i] as f64 / s - d / s);
            }
        }
    }

    let mut dx = vec![0f32; probs.numel()];
    match mode {
        DiceMode::Binary => {
            for i in 0..dx.len() {
                let p = pd[i] as f64;
                dx[i] = (g[i] * p * (1.0 - p)) as f32;
            }
        }
        DiceMode::MultiClass => {
            for b in 0..n {
                for s in 0..inner {
                    let at = |ch: usize| (b * c + ch) * inner + s;
                    let dot: f64 = (0..c).map(|ch| pd[at(ch)] as f64 * g[at(ch)]).sum();
                    for ch in 0..c {
                        dx[at(ch)] = (pd[at(ch)] as f64 * (g[at(ch)] - dot)) as f32;
                    }
                }
            }
        }
    }
    Tensor::from_parts(probs.shape().to_vec(), dx)
}

/// Labels in (n, h, w) order → one-hot [N, C, H, W] (or [N, C] when `shape_nhw` is [N]; in general
/// [N, rest...] → [N, C, rest...]).
pub fn one_hot(labels: &[u32], classes: usize, shape_nhw: &[usize]) -> Tensor {
    assert!(!shape_nhw.is_empty(), "one_hot: shape_nhw must start with N");
    let n = shape_nhw[0];
    let inner: usize = shape_nhw[1..].iter().product();
    assert_eq!(labels.len(), n * inner, "one_hot: {} labels for shape {shape_nhw:?}", labels.len());
    let mut out = vec![0f32; n * classes * inner];
    for b in 0..n {
        for s in 0..inner {
            let y = labels[b * inner + s] as usize;
            assert!(y < classes, "one_hot: label {y} out of range for {classes} classes");
            out[(b * classes + y) * inner + s] = 1.0;
        }
    }
    let mut shape = vec![n, classes];
    shape.extend_from_slice(&shape_nhw[1..]);
    Tensor::from_parts(shape, out)
}
