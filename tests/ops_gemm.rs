//! CPU sgemm against a plain triple loop: every transpose combination, odd sizes around the tile and
//! block edges, α/β variants, β = 0 over NaN-poisoned C, padded leading dimensions, and results that
//! are bit-identical across thread counts.

use mtcool::backend::cpu::gemm::{sgemm, sgemm_with_threads};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Stored (rows, cols) of op(X) = rows×cols: the transpose is stored cols×rows.
fn stored(trans: bool, rows: usize, cols: usize) -> (usize, usize) {
    if trans {
        (cols, rows)
    } else {
        (rows, cols)
    }
}

/// A problem: operands stored with leading dimensions padded by `pad`, C pre-filled with `c0`.
struct Problem {
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    lda: usize,
    b: Vec<f32>,
    ldb: usize,
    c: Vec<f32>,
    ldc: usize,
}

impl Problem {
    fn new(ta: bool, tb: bool, m: usize, n: usize, k: usize, pad: usize, rng: &mut StdRng) -> Problem {
        let (ar, ac) = stored(ta, m, k);
        let (br, bc) = stored(tb, k, n);
        let (lda, ldb, ldc) = (ac + pad, bc + pad, n + pad);
        let a = random(ar * lda, rng);
        let b = random(br * ldb, rng);
        let c = random(m * ldc, rng);
        Problem { ta, tb, m, n, k, a, lda, b, ldb, c, ldc }
    }

    fn a_at(&self, i: usize, p: usize) -> f64 {
        (if self.ta { self.a[p * self.lda + i] } else { self.a[i * self.lda + p] }) as f64
    }
    fn b_at(&self, p: usize, j: usize) -> f64 {
        (if self.tb { self.b[j * self.ldb + p] } else { self.b[p * self.ldb + j] }) as f64
    }

    /// The triple loop in f64. Padding entries of C (columns ≥ n) keep their old values.
    fn reference(&self, alpha: f32, beta: f32) -> Vec<f32> {
        let mut c = self.c.clone();
        for i in 0..self.m {
            for j in 0..self.n {
                let dot: f64 = (0..self.k).map(|p| self.a_at(i, p) * self.b_at(p, j)).sum();
                let old = if beta == 0.0 { 0.0 } else { beta as f64 * c[i * self.ldc + j] as f64 };
                c[i * self.ldc + j] = (alpha as f64 * dot + old) as f32;
            }
        }
        c
    }

    fn run(&self, threads: Option<usize>, alpha: f32, beta: f32, c: &mut [f32]) {
        let p = self;
        match threads {
            Some(t) => {
                sgemm_with_threads(t, p.ta, p.tb, p.m, p.n, p.k, alpha, &p.a, p.lda, &p.b, p.ldb, beta, c, p.ldc)
            }
            None => sgemm(p.ta, p.tb, p.m, p.n, p.k, alpha, &p.a, p.lda, &p.b, p.ldb, beta, c, p.ldc),
        }
    }
}

/// Max |got − want| relative to the size of the terms (Σ|a||b| ≤ k for entries in [−1, 1]).
fn check(p: &Problem, got: &[f32], want: &[f32], what: &str) {
    let scale = (p.k as f64).max(1.0);
    for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (i, j) = (idx / p.ldc, idx % p.ldc);
        if j >= p.n {
            assert_eq!(g.to_bits(), w.to_bits(), "{what}: padding C[{i}, {j}] was written");
            continue;
        }
        let err = (g as f64 - w as f64).abs() / scale;
        assert!(err < 1e-6, "{what}: C[{i}, {j}] = {g}, want {w} (err {err:e})");
    }
}

const TRANS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

#[test]
fn matches_triple_loop_all_transposes_odd_sizes() {
    let mut rng = StdRng::seed_from_u64(1);
    let sizes = [1, 3, 17, 65, 130];
    for (ta, tb) in TRANS {
        for &m in &sizes {
            for &n in &sizes {
                for &k in &[1, 17, 130] {
                    let p = Problem::new(ta, tb, m, n, k, 0, &mut rng);
                    let mut c = p.c.clone();
                    p.run(None, 1.0, 0.0, &mut c);
                    check(&p, &c, &p.reference(1.0, 0.0), &format!("ta={ta} tb={tb} m={m} n={n} k={k}"));
                }
            }
        }
    }
}

#[test]
fn alpha_beta_and_padded_leading_dims() {
    let mut rng = StdRng::seed_from_u64(2);
    for (ta, tb) in TRANS {
        for (m, n, k) in [(7, 9, 5), (33, 20, 300), (100, 3, 64), (2, 150, 513)] {
            for pad in [0, 3] {
                for (alpha, beta) in [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.0), (0.0, 0.75), (2.0, 1.0)] {
                    let p = Problem::new(ta, tb, m, n, k, pad, &mut rng);
                    let mut c = p.c.clone();
                    p.run(None, alpha, beta, &mut c);
                    let what = format!("ta={ta} tb={tb} {m}x{n}x{k} pad={pad} α={alpha} β={beta}");
                    check(&p, &c, &p.reference(alpha, beta), &what);
                }
            }
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    let mut rng = StdRng::seed_from_u64(3);
    for (ta, tb) in TRANS {
        for (m, n, k) in [(5, 6, 7), (70, 40, 300), (1, 1, 1)] {
            let mut p = Problem::new(ta, tb, m, n, k, 2, &mut rng);
            // Poison the used part of C; keep the padding finite so `check` can compare it bit for bit.
            for i in 0..m {
                p.c[i * p.ldc..i * p.ldc + n].fill(f32::NAN);
            }
            let mut c = p.c.clone();
            p.run(Some(2), 1.25, 0.0, &mut c);
            check(&p, &c, &p.reference(1.25, 0.0), &format!("NaN C, ta={ta} tb={tb} {m}x{n}x{k}"));
            assert!((0..m).all(|i| c[i * p.ldc..i * p.ldc + n].iter().all(|v| v.is_finite())));
        }
    }
}

#[test]
fn k_zero_scales_c() {
    let mut c = vec![1.0, 2.0, f32::NAN, 4.0];
    sgemm(false, false, 2, 2, 0, 1.0, &[], 1, &[], 2, 0.0, &mut c, 2);
    assert_eq!(c, [0.0; 4]);
    let mut c = vec![1.0, 2.0, 3.0, 4.0];
    sgemm(false, false, 2, 2, 0, 1.0, &[], 1, &[], 2, 0.5, &mut c, 2);
    assert_eq!(c, [0.5, 1.0, 1.5, 2.0]);
}

#[test]
fn result_is_independent_of_thread_count() {
    // Big enough (≥ 2^24 multiply-adds) to be split: rows for tall C, columns for short wide C, with
    // ragged edges; A·Bᵀ cases on both sides of the dot-product path, including one whose row blocks
    // alone would qualify for it (256×96: blocks of ≤ 64 rows from 7 threads on).
    let mut rng = StdRng::seed_from_u64(4);
    for (ta, tb) in TRANS {
        for (m, n, k, pad) in
            [(513, 131, 260, 1), (10, 7001, 240, 0), (50, 330, 1100, 2), (6, 2900, 970, 0), (256, 96, 700, 0)]
        {
            let p = Problem::new(ta, tb, m, n, k, pad, &mut rng);
            let mut one = p.c.clone();
            p.run(Some(1), 0.9, 0.3, &mut one);
            check(&p, &one, &p.reference(0.9, 0.3), &format!("1 thread ta={ta} tb={tb} {m}x{n}x{k}"));
            for t in [2, 3, 4, 7] {
                let mut many = p.c.clone();
                p.run(Some(t), 0.9, 0.3, &mut many);
                let same = one.iter().zip(&many).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{t} threads differ from 1 thread: ta={ta} tb={tb} {m}x{n}x{k}");
            }
        }
    }
}

#[test]
#[should_panic(expected = "too small")]
fn rejects_short_c() {
    let mut c = vec![0.0; 3];
    sgemm(false, false, 2, 2, 1, 1.0, &[1.0, 1.0], 1, &[1.0, 1.0], 2, 0.0, &mut c, 2);
}
