//! Gradient-combination rules for hard parameter sharing, as pure functions on flat gradient vectors.
//!
//! Each function takes the per-task gradients g_1 … g_T of the same shared quantity (the shared
//! extractor's parameters θ_s, flattened over `MultiTaskModel::extractor_params`, or the shared
//! representation Z) and returns the one update direction that replaces Σ_t g_t. Dot products and norms
//! accumulate in f64; results are f32. `gradient_step::combined_step` wires them into training.
//!
//! - [`pcgrad`]: PCGrad, Yu et al. 2020, "Gradient Surgery for Multi-Task Learning".
//! - [`cagrad`]: CAGrad, Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning".
//! - [`mgda`] / [`mgda_weights`]: MGDA(-UB), Sener & Koltun 2018, "Multi-Task Learning as
//!   Multi-Objective Optimization".
//! - [`graddrop`] / [`graddrop_batched`]: GradDrop, Chen et al. 2020, "Just Pick a Sign: Optimizing Deep
//!   Multitask Models with Gradient Sign Dropout".
//!
//! Non-finite inputs give non-finite outputs (never a panic), so the trainer's non-finite check sees them.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// a·b, accumulated in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "gradient lengths differ");
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// ‖a‖₂, accumulated in f64.
pub fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// The Gram matrix G_ij = g_i·g_j.
pub fn gram(grads: &[&[f32]]) -> Vec<Vec<f64>> {
    let t = grads.len();
    let mut g = vec![vec![0.0; t]; t];
    for i in 0..t {
        for j in i..t {
            let v = dot(grads[i], grads[j]);
            g[i][j] = v;
            g[j][i] = v;
        }
    }
    g
}

/// Σ_t w_t g_t (accumulated in f64 per element).
pub fn weighted_sum(grads: &[&[f32]], w: &[f64]) -> Vec<f32> {
    assert_eq!(grads.len(), w.len(), "one weight per gradient");
    let n = check_lengths(grads);
    (0..n).map(|k| grads.iter().zip(w).map(|(g, &wt)| wt * g[k] as f64).sum::<f64>() as f32).collect()
}

/// Σ_t g_t.
pub fn sum(grads: &[&[f32]]) -> Vec<f32> {
    weighted_sum(grads, &vec![1.0; grads.len()])
}

fn check_lengths(grads: &[&[f32]]) -> usize {
    assert!(!grads.is_empty(), "no task gradients");
    let n = grads[0].len();
    assert!(grads.iter().all(|g| g.len() == n), "task gradients differ in length");
    n
}

// ---------------------------------------------------------------------------------------------------
// PCGrad
// ---------------------------------------------------------------------------------------------------

/// PCGrad (Yu et al. 2020, Algorithm 1). For each task i, starting from g_i^PC = g_i and visiting the
/// other tasks j in a random order (drawn from `seed`, one shuffle per i):
///
/// ```text
/// if g_i^PC · g_j < 0:   g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j
/// ```
///
/// (projection onto the normal plane of the *original* g_j); the result is Σ_i g_i^PC. With two tasks
/// each gradient has one other task, so the result does not depend on the seed: opposed unit vectors
/// give 0, non-conflicting gradients (g_1·g_2 ≥ 0) give g_1 + g_2. A zero g_j never projects.
pub fn pcgrad(grads: &[&[f32]], seed: u64) -> Vec<f32> {
    let n = check_lengths(grads);
    let t = grads.len();
    let sq: Vec<f64> = grads.iter().map(|g| dot(g, g)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0.0f64; n];
    for i in 0..t {
        let mut gi: Vec<f64> = grads[i].iter().map(|&v| v as f64).collect();
        let mut others: Vec<usize> = (0..t).filter(|&j| j != i).collect();
        others.shuffle(&mut rng);
        for j in others {
            let d: f64 = gi.iter().zip(grads[j]).map(|(&a, &b)| a * b as f64).sum();
            if d < 0.0 && sq[j] > 0.0 {
                let s = d / sq[j];
                gi.iter_mut().zip(grads[j]).for_each(|(a, &b)| *a -= s * b as f64);
            }
        }
        out.iter_mut().zip(&gi).for_each(|(o, &v)| *o += v);
    }
    out.into_iter().map(|v| v as f32).collect()
}

// ---------------------------------------------------------------------------------------------------
// CAGrad
// ---------------------------------------------------------------------------------------------------

/// CAGrad's default c (the paper's main setting for NYUv2 / Cityscapes is c = 0.4–0.5).
pub const CAGRAD_DEFAULT_C: f32 = 0.5;

/// CAGrad's dual weights w on the simplex (Liu et al. 2021, Eq. 6 / Algorithm 1):
///
/// ```text
/// minimise  F(w) = g_wᵀ g0 + √φ ‖g_w‖,   g_w = Σ_i w_i g_i,  g0 = (1/T) Σ_i g_i,  φ = c² ‖g0‖²
/// ```
///
/// in terms of the Gram matrix G (g_wᵀg0 = wᵀG𝟙/T, ‖g_w‖² = wᵀGw). F is convex. Two tasks:
/// w = (α, 1 − α) by golden-section search on [0, 1] to machine precision, then the ends are checked
/// (so a minimum at a vertex is found exactly). More tasks: projected gradient descent with backtracking
/// (Armijo) on the simplex, started at the uniform weights.
pub fn cagrad_weights(g: &[Vec<f64>], c: f64) -> Vec<f64> {
    let t = g.len();
    let b = vec![1.0 / t as f64; t];
    let g0_sq = quad(g, &b, &b).max(0.0);
    let sqrt_phi = c * g0_sq.sqrt();
    let gb: Vec<f64> = (0..t).map(|i| (0..t).map(|j| g[i][j] * b[j]).sum()).collect();
    let f = |w: &[f64]| -> f64 {
        w.iter().zip(&gb).map(|(a, b)| a * b).sum::<f64>() + sqrt_phi * quad(g, w, w).max(0.0).sqrt()
    };
    if t == 1 {
        return vec![1.0];
    }
    if t == 2 {
        let fa = |a: f64| f(&[a, 1.0 - a]);
        let a = golden_min(fa, 0.0, 1.0);
        let best =
            [a, 0.0, 1.0].into_iter().fold((a, fa(a)), |best, x| if fa(x) < best.1 { (x, fa(x)) } else { best }).0;
        return vec![best, 1.0 - best];
    }
    // Projected gradient on the simplex. ∇F(w) = G𝟙/T + √φ Gw / ‖g_w‖.
    let mut w = b.clone();
    let mut fw = f(&w);
    let mut step = 1.0 / (0..t).map(|i| g[i][i]).sum::<f64>().max(1e-30);
    for _ in 0..2000 {
        let gw: Vec<f64> = (0..t).map(|i| (0..t).map(|j| g[i][j] * w[j]).sum()).collect();
        let nw = quad(g, &w, &w).max(0.0).sqrt();
        let grad: Vec<f64> = (0..t).map(|i| gb[i] + if nw > 0.0 { sqrt_phi * gw[i] / nw } else { 0.0 }).collect();
        let mut accepted = None;
        for _ in 0..60 {
            let cand = project_simplex(&w.iter().zip(&grad).map(|(a, g)| a - step * g).collect::<Vec<_>>());
            let moved: f64 = cand.iter().zip(&w).map(|(a, b)| (a - b) * (a - b)).sum();
            let fc = f(&cand);
            if fc <= fw - 1e-4 * moved / step || moved == 0.0 {
                accepted = Some((cand, fc, moved));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc, moved)) = accepted else { break };
        w = cand;
        fw = fc;
        step *= 2.0;
        if moved.sqrt() < 1e-12 {
            break;
        }
    }
    w
}

/// CAGrad (Liu et al. 2021, Algorithm 1), c ∈ [0, 1):
///
/// ```text
/// g0 = (1/T) Σ_i g_i,   w* = argmin_{w ∈ simplex} g_wᵀg0 + √φ ‖g_w‖,   φ = c²‖g0‖²
/// d  = (g0 + (√φ / ‖g_w*‖) g_w*) / (1 + c²)
/// ```
///
/// (the paper's `rescale=1`). The result has the scale of the *average* gradient: c = 0 gives exactly g0.
/// When g_w* = 0 (e.g. one task's gradient is zero and w* puts all weight on it) the second term is
/// taken as 0, as the reference implementation does (`c / (‖g_w‖ + 1e-8) · g_w`).
pub fn cagrad(grads: &[&[f32]], c: f32) -> Vec<f32> {
    let n = check_lengths(grads);
    let t = grads.len();
    let c = c as f64;
    let g0: Vec<f64> = (0..n).map(|k| grads.iter().map(|g| g[k] as f64).sum::<f64>() / t as f64).collect();
    let gm = gram(grads);
    let w = cagrad_weights(&gm, c);
    let sqrt_phi = c * g0.iter().map(|v| v * v).sum::<f64>().sqrt();
    let gw: Vec<f64> = (0..n).map(|k| grads.iter().zip(&w).map(|(g, &wt)| wt * g[k] as f64).sum()).collect();
    let gw_norm = gw.iter().map(|v| v * v).sum::<f64>().sqrt();
    let lambda = if gw_norm > 0.0 { sqrt_phi / gw_norm } else { 0.0 };
    let scale = 1.0 / (1.0 + c * c);
    g0.iter().zip(&gw).map(|(a, b)| ((a + lambda * b) * scale) as f32).collect()
}

/// xᵀ G y.
fn quad(g: &[Vec<f64>], x: &[f64], y: &[f64]) -> f64 {
    x.iter().enumerate().map(|(i, &xi)| xi * g[i].iter().zip(y).map(|(a, b)| a * b).sum::<f64>()).sum()
}

/// The minimiser of a convex (unimodal) `f` on [lo, hi] by golden-section search (to ~1e-15).
fn golden_min(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let r = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (hi - r * (hi - lo), lo + r * (hi - lo));
    let (mut f1, mut f2) = (f(x1), f(x2));
    for _ in 0..200 {
        if hi - lo < 1e-15 {
            break;
        }
        if f1 <= f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - r * (hi - lo);
            f1 = f(x1);
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + r * (hi - lo);
            f2 = f(x2);
        }
    }
    (lo + hi) / 2.0
}

/// Euclidean projection onto the probability simplex (Duchi et al. 2008, sort-based).
pub fn project_simplex(v: &[f64]) -> Vec<f64> {
    let mut u = v.to_vec();
    u.sort_by(|a, b| b.total_cmp(a));
    let mut css = 0.0;
    let mut theta = 0.0;
    for (k, &uk) in u.iter().enumerate() {
        css += uk;
        let t = (css - 1.0) / (k + 1) as f64;
        if uk - t > 0.0 {
            theta = t;
        }
    }
    v.iter().map(|&x| (x - theta).max(0.0)).collect()
}

// ---------------------------------------------------------------------------------------------------
// MGDA
// ---------------------------------------------------------------------------------------------------

/// How MGDA normalises each task's gradient before finding the min-norm point (Sener & Koltun's
/// `gradient_normalizers`): g_t / n_t with n_t = 1 (`none`), ‖g_t‖ (`l2`), L_t (`loss`) or L_t·‖g_t‖
/// (`loss+`). Only the weights α depend on it; the update is Σ α_t g_t on the raw gradients (the
/// reference backpropagates Σ α_t L_t).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum MgdaNorm {
    /// Raw gradients
    #[serde(rename = "none")]
    #[value(name = "none")]
    None,
    /// Each gradient over its L2 norm
    #[serde(rename = "l2")]
    #[value(name = "l2")]
    L2,
    /// Each gradient over its task's loss
    #[serde(rename = "loss")]
    #[value(name = "loss")]
    Loss,
    /// Each gradient over loss · L2 norm (the reference's MultiMNIST setting)
    #[default]
    #[serde(rename = "loss+")]
    #[value(name = "loss+")]
    LossPlus,
}

/// MGDA's end clamps for the two-gradient line search (the reference's 0.999 / 0.001).
pub const MGDA_CLAMP: (f64, f64) = (0.001, 0.999);

/// The min-norm point of the segment [v2, v1] from v1·v1, v1·v2, v2·v2 (Sener & Koltun's
/// `_min_norm_element_from2`): returns (γ, ‖γ v1 + (1−γ) v2‖²) with
///
/// ```text
/// γ = clamp( (v2 − v1)·v2 / ‖v1 − v2‖², 0.001, 0.999 )
/// ```
///
/// written as its three cases: v1·v2 ≥ v1·v1 → 0.999 (v1 is the min-norm point), v1·v2 ≥ v2·v2 → 0.001,
/// else the formula (so ‖v1 − v2‖ = 0 never divides).
pub fn min_norm_2(v1v1: f64, v1v2: f64, v2v2: f64) -> (f64, f64) {
    let (lo, hi) = MGDA_CLAMP;
    if v1v2 >= v1v1 {
        return (hi, v1v1);
    }
    if v1v2 >= v2v2 {
        return (lo, v2v2);
    }
    let gamma = (v2v2 - v1v2) / (v1v1 + v2v2 - 2.0 * v1v2);
    let gamma = gamma.clamp(lo, hi);
    (gamma, v2v2 + gamma * (v1v2 - v2v2))
}

/// The min-norm point of the convex hull of the gradients, as simplex weights α (Sener & Koltun 2018,
/// Algorithm 2), from the Gram matrix G:
///
/// ```text
/// min_α ‖Σ_t α_t g_t‖²  s.t.  α ≥ 0, Σ α_t = 1
/// ```
///
/// Two tasks: the closed form of [`min_norm_2`] (α_1 = γ, α_2 = 1 − γ). More tasks: Frank-Wolfe as in
/// the reference `find_min_norm_element_FW`: start from the best pair, then repeatedly move towards the
/// vertex e_t with the smallest (Gα)_t by the exact (clamped) line search of [`min_norm_2`], at most 250
/// iterations, stopping when ‖Δα‖₁ < 1e-5.
pub fn min_norm_weights(g: &[Vec<f64>]) -> Vec<f64> {
    let t = g.len();
    if t == 1 {
        return vec![1.0];
    }
    // Best pair.
    let mut best = (0, 1, 0.5, f64::INFINITY);
    for i in 0..t {
        for j in i + 1..t {
            let (gamma, cost) = min_norm_2(g[i][i], g[i][j], g[j][j]);
            if cost < best.3 || best.3.is_nan() {
                best = (i, j, gamma, cost);
            }
        }
    }
    let mut alpha = vec![0.0; t];
    alpha[best.0] = best.2;
    alpha[best.1] = 1.0 - best.2;
    if t == 2 {
        return alpha;
    }
    for _ in 0..250 {
        let ga: Vec<f64> = (0..t).map(|i| (0..t).map(|j| g[i][j] * alpha[j]).sum()).collect();
        let Some(k) = (0..t).min_by(|&a, &b| ga[a].total_cmp(&ga[b])) else { break };
        let v1v1 = quad(g, &alpha, &alpha);
        let v1v2 = ga[k];
        let v2v2 = g[k][k];
        let (nc, _) = min_norm_2(v1v1, v1v2, v2v2);
        let mut next: Vec<f64> = alpha.iter().map(|a| nc * a).collect();
        next[k] += 1.0 - nc;
        let change: f64 = next.iter().zip(&alpha).map(|(a, b)| (a - b).abs()).sum();
        alpha = next;
        if change.is_nan() || change < 1e-5 {
            break;
        }
    }
    alpha
}

/// The normalisers n_t of [`MgdaNorm`] (a zero or non-finite normaliser is replaced by 1).
pub fn mgda_normalizers(grads: &[&[f32]], losses: &[f64], kind: MgdaNorm) -> Vec<f64> {
    assert_eq!(grads.len(), losses.len(), "one loss per gradient");
    grads
        .iter()
        .zip(losses)
        .map(|(g, &l)| {
            let n = match kind {
                MgdaNorm::None => 1.0,
                MgdaNorm::L2 => norm(g),
                MgdaNorm::Loss => l,
                MgdaNorm::LossPlus => l * norm(g),
            };
            if n > 0.0 || n.is_nan() {
                n
            } else {
                1.0
            }
        })
        .collect()
}

/// MGDA's task weights α: the min-norm weights ([`min_norm_weights`]) of the normalised gradients
/// g_t / n_t. `losses` are the task losses L_t (used by `loss` and `loss+`).
pub fn mgda_weights(grads: &[&[f32]], losses: &[f64], kind: MgdaNorm) -> Vec<f64> {
    check_lengths(grads);
    let n = mgda_normalizers(grads, losses, kind);
    let raw = gram(grads);
    let t = grads.len();
    let g: Vec<Vec<f64>> = (0..t).map(|i| (0..t).map(|j| raw[i][j] / (n[i] * n[j])).collect()).collect();
    min_norm_weights(&g)
}

/// MGDA (Sener & Koltun 2018): d = Σ_t α_t g_t with α = [`mgda_weights`]. With `norm = none` d is the
/// min-norm point of the convex hull of the gradients, so d·g_t ≥ ‖d‖² ≥ 0 for every t (up to the
/// 0.001/0.999 clamp): e.g. orthogonal equal-norm gradients give their midpoint, opposed equal ones 0.
/// MGDA-UB applies this to the gradients with respect to the shared representation Z instead of θ_s
/// (see `gradient_step`).
pub fn mgda(grads: &[&[f32]], losses: &[f64], kind: MgdaNorm) -> Vec<f32> {
    let w = mgda_weights(grads, losses, kind);
    weighted_sum(grads, &w)
}

// ---------------------------------------------------------------------------------------------------
// GradDrop
// ---------------------------------------------------------------------------------------------------

/// GradDrop's leak default: 0, "pure" GradDrop (Algorithm 1 with ℓ_i = 0).
pub const GRADDROP_DEFAULT_LEAK: f32 = 0.0;

/// GradDrop (Chen et al. 2020, Algorithm 1, lines 9–13, with f(P) = P) element by element:
///
/// ```text
/// P = ½ (1 + Σ_i ∇_i / Σ_i |∇_i|)                        (gradient positive sign purity, in [0, 1])
/// U ~ Uniform[0, 1)  (one draw per element, from `seed`)
/// M_i = [U < P]·[∇_i > 0] + [U ≥ P]·[∇_i < 0]            (keep the positive or the negative side)
/// ∇_new = Σ_i (ℓ + (1 − ℓ) M_i) ∇_i                       (ℓ = `leak` ∈ [0, 1] keeps part of what is dropped)
/// ```
///
/// An element where every ∇_i is 0 gives 0. All-positive (or all-negative) elements have P = 1 (0) and
/// keep everything, so aligned gradients give their sum; ℓ = 1 gives the plain sum. In expectation over
/// U the result is Σ_i ∇_i (P·S₊ − (1 − P)·S₋ = S₊ − S₋).
pub fn graddrop(grads: &[&[f32]], leak: f32, seed: u64) -> Vec<f32> {
    let n = check_lengths(grads);
    let purity_src: Vec<Vec<f64>> = grads.iter().map(|g| g.iter().map(|&v| v as f64).collect()).collect();
    graddrop_core(grads, &purity_src, n, 1, leak, seed)
}

/// GradDrop on a batch-separated activation A of shape [B, …] (Chen et al. 2020, Algorithm 1 in full):
/// the purity uses ∇_i' = Σ_batch sgn(A) ∘ ∇_A L_i (one P and one U per feature, i.e. per element of
/// A[0]), and feature k's masks M_i apply to every batch row of ∇_A L_i. `grads[i]` and `activation` are
/// flattened row-major with the batch first (`batch` rows). With `batch` = 1 and A > 0 this is [`graddrop`].
pub fn graddrop_batched(grads: &[&[f32]], activation: &[f32], batch: usize, leak: f32, seed: u64) -> Vec<f32> {
    let n = check_lengths(grads);
    assert_eq!(activation.len(), n, "activation and gradients differ in length");
    assert!(batch > 0 && n.is_multiple_of(batch), "{n} elements are not {batch} rows");
    let per_row = n / batch;
    if per_row == 0 {
        return Vec::new();
    }
    let sgn = |a: f32| {
        if a > 0.0 {
            1.0
        } else if a < 0.0 {
            -1.0
        } else {
            0.0
        }
    };
    let purity_src: Vec<Vec<f64>> = grads
        .iter()
        .map(|g| {
            let mut s = vec![0.0f64; per_row];
            for (row_a, row_g) in activation.chunks(per_row).zip(g.chunks(per_row)) {
                for ((sk, &a), &gk) in s.iter_mut().zip(row_a).zip(row_g) {
                    *sk += sgn(a) * gk as f64;
                }
            }
            s
        })
        .collect();
    graddrop_core(grads, &purity_src, per_row, batch, leak, seed)
}

/// GradDrop when each task's gradient belongs to its own activation (a data set per task: task i's
/// batch gives A_i = F(x_i)): the purity of feature k sums each task's Σ_batch sgn(A_i) ∘ ∇_{A_i} L_i, as
/// [`graddrop_batched`] does for one A, and task i's masked gradient M_i ∘ ∇_{A_i} L_i is returned on
/// its own, to be sent back through A_i. With every A_i equal, the returned gradients sum to
/// [`graddrop_batched`]'s (same draws).
pub fn graddrop_per_task(
    grads: &[&[f32]],
    activations: &[&[f32]],
    batch: usize,
    leak: f32,
    seed: u64,
) -> Vec<Vec<f32>> {
    let n = check_lengths(grads);
    assert_eq!(activations.len(), grads.len(), "one activation per task");
    assert!(activations.iter().all(|a| a.len() == n), "activations and gradients differ in length");
    assert!(batch > 0 && n.is_multiple_of(batch), "{n} elements are not {batch} rows");
    let per_row = n / batch;
    let sgn = |a: f32| (a > 0.0) as i32 as f64 - (a < 0.0) as i32 as f64;
    let src: Vec<Vec<f64>> = grads
        .iter()
        .zip(activations)
        .map(|(g, act)| {
            let mut s = vec![0.0f64; per_row];
            for (row_a, row_g) in act.chunks(per_row.max(1)).zip(g.chunks(per_row.max(1))) {
                for ((sk, &a), &gk) in s.iter_mut().zip(row_a).zip(row_g) {
                    *sk += sgn(a) * gk as f64;
                }
            }
            s
        })
        .collect();
    let leak = leak as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![vec![0.0f32; n]; grads.len()];
    for k in 0..per_row {
        let (s, a) = src.iter().fold((0.0f64, 0.0f64), |(s, a), v| (s + v[k], a + v[k].abs()));
        let u: f64 = rng.random();
        let p = if a > 0.0 { 0.5 * (1.0 + s / a) } else { 0.5 };
        let keep_positive = u < p;
        for (i, (g, v)) in grads.iter().zip(&src).enumerate() {
            let kept = if keep_positive { v[k] > 0.0 } else { v[k] < 0.0 };
            let factor = leak + (1.0 - leak) * if kept { 1.0 } else { 0.0 };
            for r in 0..batch {
                let e = r * per_row + k;
                out[i][e] = if p.is_nan() { f32::NAN } else { (factor * g[e] as f64) as f32 };
            }
        }
    }
    out
}

/// Shared part: P and U per feature from `src` (per task, `per_row` features), masks from the sign of
/// `src`, applied to every row of `grads`.
fn graddrop_core(grads: &[&[f32]], src: &[Vec<f64>], per_row: usize, batch: usize, leak: f32, seed: u64) -> Vec<f32> {
    let leak = leak as f64;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0.0f32; per_row * batch];
    for k in 0..per_row {
        let (s, a) = src.iter().fold((0.0f64, 0.0f64), |(s, a), v| (s + v[k], a + v[k].abs()));
        let u: f64 = rng.random();
        let p = if a > 0.0 { 0.5 * (1.0 + s / a) } else { 0.5 };
        let keep_positive = u < p;
        for r in 0..batch {
            let e = r * per_row + k;
            let mut acc = 0.0f64;
            for (g, v) in grads.iter().zip(src) {
                let sign = v[k];
                let kept = if keep_positive { sign > 0.0 } else { sign < 0.0 };
                let m = if kept { 1.0 } else { 0.0 };
                acc += (leak + (1.0 - leak) * m) * g[e] as f64;
            }
            // A non-finite purity (NaN gradients) must not hide itself behind a dropped mask.
            out[e] = if p.is_nan() { f32::NAN } else { acc as f32 };
        }
    }
    out
}
