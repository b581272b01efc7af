//! The gradient-combination rules (`mtl::combiners`) on hand-made gradient pairs: aligned, orthogonal,
//! opposed, obtuse, one zero. Every expected number is worked out in the comment next to it.

use mtcool::mtl::combiners::{
    cagrad, cagrad_weights, dot, graddrop, graddrop_batched, gram, mgda, mgda_weights, min_norm_2, min_norm_weights,
    pcgrad, project_simplex, MgdaNorm,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "element {i}: got {got:?}, want {want:?}");
    }
}

fn pair<'a>(a: &'a [f32], b: &'a [f32]) -> [&'a [f32]; 2] {
    [a, b]
}

// ------------------------------------------------------------------------------------------- PCGrad

#[test]
fn pcgrad_on_hand_made_pairs() {
    // Aligned: g1·g2 = 2 ≥ 0, nothing is projected: (1,0) + (2,0) = (3,0).
    close(&pcgrad(&pair(&[1.0, 0.0], &[2.0, 0.0]), 0), &[3.0, 0.0], 1e-7);
    // Orthogonal: g1·g2 = 0, not negative: the plain sum (1,1).
    close(&pcgrad(&pair(&[1.0, 0.0], &[0.0, 1.0]), 0), &[1.0, 1.0], 1e-7);
    // Opposed unit vectors: g1' = g1 − (−1/1)·g2 = (1,0) + (−1,0) = 0, likewise g2' = 0: the sum is 0.
    close(&pcgrad(&pair(&[1.0, 0.0], &[-1.0, 0.0]), 0), &[0.0, 0.0], 1e-7);
    // Opposed, unequal: g1' = (1,0) − (−2/4)(−2,0) = 0; g2' = (−2,0) − (−2/1)(1,0) = 0: 0.
    close(&pcgrad(&pair(&[1.0, 0.0], &[-2.0, 0.0]), 0), &[0.0, 0.0], 1e-7);
    // Obtuse: g1 = (1,0), g2 = (−1,1), g1·g2 = −1.
    //   g1' = (1,0) − (−1/2)(−1,1) = (0.5, 0.5)  (now ⊥ g2)
    //   g2' = (−1,1) − (−1/1)(1,0) = (0, 1)     (now ⊥ g1)
    //   sum (0.5, 1.5).
    let d = pcgrad(&pair(&[1.0, 0.0], &[-1.0, 1.0]), 0);
    close(&d, &[0.5, 1.5], 1e-7);
    // One zero: a zero gradient never conflicts: the result is the other gradient.
    close(&pcgrad(&pair(&[0.3, -0.7], &[0.0, 0.0]), 0), &[0.3, -0.7], 1e-7);
}

#[test]
fn pcgrad_two_tasks_ignores_the_seed_and_more_tasks_are_reproducible() {
    let mut rng = StdRng::seed_from_u64(5);
    let g: Vec<Vec<f32>> = (0..3).map(|_| (0..50).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
    let two = [g[0].as_slice(), g[1].as_slice()];
    assert_eq!(pcgrad(&two, 1), pcgrad(&two, 999), "two tasks: the order cannot matter");
    let three = [g[0].as_slice(), g[1].as_slice(), g[2].as_slice()];
    assert_eq!(pcgrad(&three, 7), pcgrad(&three, 7), "same seed, same result");
    // Two conflicting tasks: g2' ⊥ g1, so d·g1 = g1'·g1 = ‖g1‖² − (g1·g2)²/‖g2‖² ≥ 0 (Cauchy-Schwarz),
    // and likewise d·g2 ≥ 0: the result conflicts with neither task.
    for _ in 0..20 {
        let a: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..8).map(|_| rng.random_range(-1.0..1.0)).collect();
        if dot(&a, &b) < 0.0 {
            let d = pcgrad(&pair(&a, &b), 0);
            assert!(dot(&d, &a) >= -1e-5 && dot(&d, &b) >= -1e-5, "PCGrad conflicts with a task");
        }
    }
}

// ------------------------------------------------------------------------------------------- CAGrad

#[test]
fn cagrad_with_c_zero_is_the_average() {
    // c = 0: φ = 0, d = g0 / (1 + 0) = (g1 + g2)/2 whatever w is.
    let (a, b) = ([1.0f32, 2.0, -3.0], [-0.5f32, 4.0, 1.0]);
    close(&cagrad(&pair(&a, &b), 0.0), &[0.25, 3.0, -1.0], 1e-6);
    close(&cagrad(&pair(&[1.0, 0.0], &[-1.0, 0.0]), 0.0), &[0.0, 0.0], 1e-7);
}

#[test]
fn cagrad_on_hand_made_pairs() {
    let c = 0.5f32; // 1 + c² = 1.25
                    // Aligned equal: g0 = e, g_w = e for every w, √φ = c‖g0‖ = 0.5:
                    //   d = (e + 0.5/1 · e)/1.25 = 1.2 e.
    close(&cagrad(&pair(&[1.0, 0.0], &[1.0, 0.0]), c), &[1.2, 0.0], 1e-6);
    // Orthogonal unit: g0 = (½,½), ‖g0‖ = 1/√2, √φ = 0.5/√2. g_wᵀg0 = ½ for all w, so w minimises
    //   ‖g_w‖ = √(α² + (1−α)²): α = ½, g_w = g0, ‖g_w‖ = 1/√2.
    //   d = (g0 + (0.5/√2)/(1/√2) g0)/1.25 = 1.5 g0 / 1.25 = (0.6, 0.6).
    close(&cagrad(&pair(&[1.0, 0.0], &[0.0, 1.0]), c), &[0.6, 0.6], 1e-6);
    // Orthogonal, unequal: g1 = (1,0), g2 = (0,2). g0 = (0.5,1), ‖g0‖ = √1.25, √φ = 0.5·√1.25 = 0.559017.
    //   F(α) = g_wᵀg0 + √φ‖g_w‖ = (2 − 1.5α) + 0.559017·√(α² + 4(1−α)²).
    //   F'(α) = −1.5 + 0.559017·(5α − 4)/√(5α² − 8α + 4) < 0 on [0,1] (the fraction is ≤ 1 there), so
    //   α = 1: g_w = g1, ‖g_w‖ = 1, d = (g0 + 0.559017·g1)/1.25 = (1.059017, 1)/1.25 = (0.847214, 0.8).
    let d = cagrad(&pair(&[1.0, 0.0], &[0.0, 2.0]), c);
    close(&d, &[0.847_213_6, 0.8], 1e-5);
    // ... and it improves the worse task more than the average would: min_i g_i·d = 0.847 > min_i g_i·g0 = 0.5.
    assert!(dot(&d, &[1.0, 0.0]) > 0.84 && dot(&d, &[0.0, 2.0]) > 0.84);
    // Opposed: g0 = 0, so √φ = 0 and d = g0 = 0.
    close(&cagrad(&pair(&[1.0, 0.0], &[-1.0, 0.0]), c), &[0.0, 0.0], 1e-7);
    // One zero: g1 = e, g2 = 0. g0 = e/2, √φ = 0.25. F(α) = α/2 + 0.25α is least at α = 0, where
    //   g_w = g2 = 0: the second term is taken as 0 (as the reference's c/(‖g_w‖+1e-8)·g_w), so
    //   d = g0/1.25 = 0.4 e.
    close(&cagrad(&pair(&[1.0, 0.0], &[0.0, 0.0]), c), &[0.4, 0.0], 1e-6);
}

#[test]
fn cagrad_weights_minimise_the_dual_objective() {
    // Compare the two-task search and the T > 2 projected-gradient solver with a brute-force grid.
    let mut rng = StdRng::seed_from_u64(3);
    for t in [2usize, 3] {
        for _ in 0..10 {
            let g: Vec<Vec<f32>> = (0..t).map(|_| (0..6).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
            let refs: Vec<&[f32]> = g.iter().map(|v| v.as_slice()).collect();
            let gm = gram(&refs);
            let c = 0.5;
            let b = vec![1.0 / t as f64; t];
            let sqrt_phi = c * quad(&gm, &b, &b).sqrt();
            let f = |w: &[f64]| quad(&gm, w, &b) + sqrt_phi * quad(&gm, w, w).max(0.0).sqrt();
            let w = cagrad_weights(&gm, c);
            assert!(
                (w.iter().sum::<f64>() - 1.0).abs() < 1e-9 && w.iter().all(|&x| x >= -1e-12),
                "{w:?} not on the simplex"
            );
            let n = 200;
            let mut best = f64::INFINITY;
            for i in 0..=n {
                for j in 0..=(if t == 3 { n - i } else { 0 }) {
                    let a = i as f64 / n as f64;
                    let w = if t == 2 {
                        vec![a, 1.0 - a]
                    } else {
                        vec![a, j as f64 / n as f64, 1.0 - a - j as f64 / n as f64]
                    };
                    best = best.min(f(&w));
                }
            }
            assert!(f(&w) <= best + 1e-6, "t={t}: solver {} > grid {best}", f(&w));
        }
    }
}

fn quad(g: &[Vec<f64>], x: &[f64], y: &[f64]) -> f64 {
    (0..x.len()).map(|i| x[i] * (0..y.len()).map(|j| g[i][j] * y[j]).sum::<f64>()).sum()
}

#[test]
fn simplex_projection() {
    let p = project_simplex(&[0.5, 0.5]);
    assert!((p[0] - 0.5).abs() < 1e-12 && (p[1] - 0.5).abs() < 1e-12);
    // (2, 0): subtract θ = 1 → (1, −1) → clip → (1, 0).
    assert_eq!(project_simplex(&[2.0, 0.0]), vec![1.0, 0.0]);
    // (1, 1, 1) − 2/3 each → (1/3, 1/3, 1/3).
    assert!(project_simplex(&[1.0, 1.0, 1.0]).iter().all(|&x| (x - 1.0 / 3.0).abs() < 1e-12));
}

// --------------------------------------------------------------------------------------------- MGDA

#[test]
fn mgda_on_hand_made_pairs() {
    let none = MgdaNorm::None;
    let l = [1.0, 1.0];
    // Orthogonal, equal norm: γ = (g2−g1)·g2/‖g1−g2‖² = (1 − 0)/2 = ½: the midpoint (0.5, 0.5).
    close(&mgda(&pair(&[1.0, 0.0], &[0.0, 1.0]), &l, none), &[0.5, 0.5], 1e-7);
    // Orthogonal, unequal: g1 = (1,0), g2 = (0,2): γ = (4 − 0)/(1 + 4) = 0.8, d = (0.8, 0.4);
    //   d·g1 = d·g2 = 0.8 = ‖d‖² (the min-norm point is equally good for both).
    let d = mgda(&pair(&[1.0, 0.0], &[0.0, 2.0]), &l, none);
    close(&d, &[0.8, 0.4], 1e-7);
    assert!((dot(&d, &[1.0, 0.0]) - 0.8).abs() < 1e-6 && (dot(&d, &[0.0, 2.0]) - 0.8).abs() < 1e-6);
    // Opposed equal: γ = (1 − (−1))/(1 + 1 + 2) = ½: d = 0.
    close(&mgda(&pair(&[1.0, 0.0], &[-1.0, 0.0]), &l, none), &[0.0, 0.0], 1e-7);
    // Obtuse: g1 = (1,0), g2 = (−1,1): v11 = 1, v12 = −1, v22 = 2, γ = (2 + 1)/(1 + 2 + 2) = 0.6,
    //   d = 0.6·(1,0) + 0.4·(−1,1) = (0.2, 0.4); d·g1 = 0.2, d·g2 = 0.2.
    close(&mgda(&pair(&[1.0, 0.0], &[-1.0, 1.0]), &l, none), &[0.2, 0.4], 1e-7);
    // Aligned: g1 = (1,0), g2 = (2,0): v12 = 2 ≥ v11 = 1, so g1 is the min-norm point: γ clamps to 0.999,
    //   d = 0.999·(1,0) + 0.001·(2,0) = (1.001, 0).
    close(&mgda(&pair(&[1.0, 0.0], &[2.0, 0.0]), &l, none), &[1.001, 0.0], 1e-6);
    // One zero: v12 = 0 ≥ v22 = 0: γ clamps to 0.001, d = 0.001·g1 (the min-norm point, 0, up to the clamp).
    close(&mgda(&pair(&[1.0, -2.0], &[0.0, 0.0]), &l, none), &[0.001, -0.002], 1e-7);
}

#[test]
fn min_norm_2_is_the_clamped_closed_form() {
    // (v11, v12, v22) = (1, 0, 4): γ = (4 − 0)/(1 + 4 − 0) = 0.8, cost ‖0.8 g1 + 0.2 g2‖² = 0.64 + 0.16 = 0.8.
    let (g, cost) = min_norm_2(1.0, 0.0, 4.0);
    assert!((g - 0.8).abs() < 1e-12 && (cost - 0.8).abs() < 1e-12);
    assert_eq!(min_norm_2(1.0, 1.0, 1.0).0, 0.999, "identical gradients: the 0.999 end");
    assert_eq!(min_norm_2(4.0, 0.0, 0.0).0, 0.001, "g2 = 0: the 0.001 end");
}

#[test]
fn mgda_result_never_conflicts_with_a_task() {
    let mut rng = StdRng::seed_from_u64(9);
    for _ in 0..200 {
        let a: Vec<f32> = (0..10).map(|_| rng.random_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..10).map(|_| rng.random_range(-3.0..3.0)).collect();
        let d = mgda(&pair(&a, &b), &[1.0, 1.0], MgdaNorm::None);
        assert!(dot(&d, &a) >= -1e-6 && dot(&d, &b) >= -1e-6, "d·g1 = {}, d·g2 = {}", dot(&d, &a), dot(&d, &b));
    }
}

#[test]
fn mgda_normalisations() {
    let (g1, g2) = ([1.0f32, 0.0], [0.0f32, 2.0]);
    // l2: normalised (1,0), (0,1) → α = (½, ½); the update uses the raw gradients: ½(1,0) + ½(0,2) = (0.5, 1).
    close(&mgda(&pair(&g1, &g2), &[7.0, 3.0], MgdaNorm::L2), &[0.5, 1.0], 1e-7);
    // loss with L = (1, 2): normalised (1,0), (0,1) again → (0.5, 1).
    close(&mgda(&pair(&g1, &g2), &[1.0, 2.0], MgdaNorm::Loss), &[0.5, 1.0], 1e-7);
    // loss+ with L = (2, 1): n = (2·1, 1·2) = (2, 2): normalised (0.5,0), (0,1): γ = (1 − 0)/(0.25 + 1) = 0.8,
    //   d = 0.8·(1,0) + 0.2·(0,2) = (0.8, 0.4).
    let w = mgda_weights(&pair(&g1, &g2), &[2.0, 1.0], MgdaNorm::LossPlus);
    assert!((w[0] - 0.8).abs() < 1e-12 && (w[1] - 0.2).abs() < 1e-12, "{w:?}");
    close(&mgda(&pair(&g1, &g2), &[2.0, 1.0], MgdaNorm::LossPlus), &[0.8, 0.4], 1e-7);
}

#[test]
fn mgda_frank_wolfe_for_three_tasks() {
    // Orthonormal e1, e2, e3: the min-norm point of the triangle is the centroid (1/3, 1/3, 1/3).
    let e = [[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let refs: Vec<&[f32]> = e.iter().map(|v| v.as_slice()).collect();
    let w = min_norm_weights(&gram(&refs));
    assert!(w.iter().all(|&x| (x - 1.0 / 3.0).abs() < 0.01), "{w:?}");
    // Random triples: the FW weights are within 1e-3 of the grid's min norm, and on the simplex.
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..10 {
        let g: Vec<Vec<f32>> = (0..3).map(|_| (0..5).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let refs: Vec<&[f32]> = g.iter().map(|v| v.as_slice()).collect();
        let gm = gram(&refs);
        let w = min_norm_weights(&gm);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let n = 200;
        let mut best = f64::INFINITY;
        for i in 0..=n {
            for j in 0..=n - i {
                let v = [i as f64 / n as f64, j as f64 / n as f64, (n - i - j) as f64 / n as f64];
                best = best.min(quad(&gm, &v, &v));
            }
        }
        assert!(quad(&gm, &w, &w) <= best + 1e-3, "FW {} vs grid {best}", quad(&gm, &w, &w));
    }
}

// ------------------------------------------------------------------------------------------ GradDrop

#[test]
fn graddrop_keeps_aligned_and_one_sided_gradients() {
    // Aligned (same sign everywhere): P = ½(1 + Σ/Σ|·|) = 1 for positive elements (0 for negative ones), so
    // the positive (negative) side is always kept: the plain sum.
    let (a, b) = ([1.0f32, -2.0, 0.5], [3.0f32, -4.0, 0.25]);
    for seed in 0..5 {
        close(&graddrop(&pair(&a, &b), 0.0, seed), &[4.0, -6.0, 0.75], 1e-7);
    }
    // Orthogonal axis vectors: each element has one non-zero gradient, so P ∈ {0, 1}: the sum (1, 1).
    close(&graddrop(&pair(&[1.0, 0.0], &[0.0, 1.0]), 0.0, 3), &[1.0, 1.0], 1e-7);
    // One zero: the other gradient is kept whole.
    close(&graddrop(&pair(&[0.3, -0.7], &[0.0, 0.0]), 0.0, 3), &[0.3, -0.7], 1e-7);
    // Both zero: P is undefined, the result 0.
    close(&graddrop(&pair(&[0.0], &[0.0]), 0.0, 3), &[0.0], 0.0);
}

#[test]
fn graddrop_picks_one_sign_on_conflicts() {
    // Opposed, unequal: ∇1 = 3, ∇2 = −1 per element: P = ½(1 + 2/4) = 0.75: +3 is kept with
    // probability 0.75, −1 otherwise; the mean is 0.75·3 − 0.25·1 = 2 = the sum (GradDrop is unbiased).
    let n = 20_000;
    let (a, b) = (vec![3.0f32; n], vec![-1.0f32; n]);
    let d = graddrop(&pair(&a, &b), 0.0, 11);
    assert!(d.iter().all(|&v| v == 3.0 || v == -1.0));
    let kept_pos = d.iter().filter(|&&v| v == 3.0).count() as f64 / n as f64;
    assert!((kept_pos - 0.75).abs() < 0.02, "positive kept {kept_pos}");
    let mean = d.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    assert!((mean - 2.0).abs() < 0.08, "mean {mean}");
    // Opposed equal unit: P = ½: each element keeps +1 or −1, about half each.
    let d = graddrop(&pair(&vec![1.0; n], &vec![-1.0; n]), 0.0, 12);
    let pos = d.iter().filter(|&&v| v == 1.0).count() as f64 / n as f64;
    assert!((pos - 0.5).abs() < 0.02 && d.iter().all(|&v| v.abs() == 1.0), "{pos}");
    // Leak 0.5: the dropped side keeps half: +1 + 0.5·(−1) = 0.5 or −1 + 0.5·(+1) = −0.5.
    let d = graddrop(&pair(&vec![1.0; 100], &vec![-1.0; 100]), 0.5, 12);
    assert!(d.iter().all(|&v| v == 0.5 || v == -0.5), "{d:?}");
    // Leak 1: nothing is dropped: the sum, 0.
    close(&graddrop(&pair(&[1.0, 2.0], &[-1.0, -3.0]), 1.0, 12), &[0.0, -1.0], 1e-7);
    // Seeded: same seed, same draws.
    assert_eq!(graddrop(&pair(&a, &b), 0.0, 5), graddrop(&pair(&a, &b), 0.0, 5));
    assert_ne!(graddrop(&pair(&a, &b), 0.0, 5), graddrop(&pair(&a, &b), 0.0, 6));
}

#[test]
fn graddrop_batched_uses_batch_sums_and_one_mask_per_feature() {
    // One row and a positive activation: the same as the element-wise rule with the same seed.
    let mut rng = StdRng::seed_from_u64(1);
    let a: Vec<f32> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
    let b: Vec<f32> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
    assert_eq!(graddrop_batched(&pair(&a, &b), &[1.0; 64], 1, 0.0, 4), graddrop(&pair(&a, &b), 0.0, 4));
    // Two rows, one feature; activation (1, 1). Task 1: (2, −1) sums to +1; task 2: (−3, 1) sums to −2.
    //   P = ½(1 + (1 − 2)/(1 + 2)) = 1/3. If the positive side wins, task 1's whole column is kept:
    //   (2, −1); otherwise task 2's: (−3, 1). The mask is per feature, shared by the rows.
    let mut pos = 0;
    for seed in 0..300 {
        let d = graddrop_batched(&pair(&[2.0, -1.0], &[-3.0, 1.0]), &[1.0, 1.0], 2, 0.0, seed);
        assert!(d == vec![2.0, -1.0] || d == vec![-3.0, 1.0], "{d:?}");
        pos += (d[0] == 2.0) as usize;
    }
    let p = pos as f64 / 300.0;
    assert!((p - 1.0 / 3.0).abs() < 0.09, "positive side kept {p}, want ≈ 1/3");
    // sgn(A) = 0 removes a row from the purity: activation (1, 0): task 1 counts 2, task 2 counts −3:
    //   P = ½(1 − 1/5) = 0.4.
    let mut pos = 0;
    for seed in 0..300 {
        let d = graddrop_batched(&pair(&[2.0, -1.0], &[-3.0, 1.0]), &[1.0, 0.0], 2, 0.0, seed);
        pos += (d[0] == 2.0) as usize;
    }
    assert!((pos as f64 / 300.0 - 0.4).abs() < 0.09);
}

#[test]
fn non_finite_gradients_stay_non_finite() {
    let nan = [f32::NAN, 1.0];
    let ok = [1.0f32, 1.0];
    assert!(pcgrad(&pair(&nan, &ok), 0).iter().any(|v| v.is_nan()));
    assert!(cagrad(&pair(&nan, &ok), 0.5).iter().any(|v| v.is_nan()));
    assert!(mgda(&pair(&nan, &ok), &[1.0, 1.0], MgdaNorm::LossPlus).iter().any(|v| v.is_nan()));
    assert!(graddrop(&pair(&nan, &ok), 0.0, 0)[0].is_nan());
}
