//! CPU reference matmul / linear: hand-computed forwards and backwards, finite-difference gradient
//! checks and adjoint identities.

mod common;

use common::{assert_close, dot, fd_grad, nonzero, t};
use mtcool::backend::cpu::linear::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

// ---------------------------------------------------------------- hand-computed

#[test]
fn matmul_hand_computed() {
    // [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]]
    //   = [[1·7 + 2·9 + 3·11, 1·8 + 2·10 + 3·12], [4·7 + 5·9 + 6·11, 4·8 + 5·10 + 6·12]]
    //   = [[58, 64], [139, 154]]
    let a = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = t(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
    assert_eq!(matmul(&a, &b), t(&[2, 2], &[58., 64., 139., 154.]));
    // Row vector times column vector: [1×3]·[3×1] = 1·4 + 2·5 + 3·6 = 32.
    let r = matmul(&t(&[1, 3], &[1., 2., 3.]), &t(&[3, 1], &[4., 5., 6.]));
    assert_eq!(r, t(&[1, 1], &[32.]));
}

#[test]
fn matmul_backward_hand_computed() {
    // a = [[1,2],[3,4]], b = [[5,6],[7,8]], dy = [[1,0],[0,1]] (identity):
    // da = dy·bᵀ = bᵀ = [[5,7],[6,8]];  db = aᵀ·dy = aᵀ = [[1,3],[2,4]].
    let a = t(&[2, 2], &[1., 2., 3., 4.]);
    let b = t(&[2, 2], &[5., 6., 7., 8.]);
    let dy = t(&[2, 2], &[1., 0., 0., 1.]);
    let (da, db) = matmul_backward(&a, &b, &dy);
    assert_eq!(da, t(&[2, 2], &[5., 7., 6., 8.]));
    assert_eq!(db, t(&[2, 2], &[1., 3., 2., 4.]));
}

#[test]
fn linear_forward_hand_computed() {
    // x = [[1,2],[3,4]] (N=2, in=2), w = [[1,0],[0,1],[1,1]] (out=3, in=2), b = [0.5, −1, 2].
    // y = x·wᵀ + b: row0 = [1, 2, 3] + b = [1.5, 1, 5];  row1 = [3, 4, 7] + b = [3.5, 3, 9].
    let x = t(&[2, 2], &[1., 2., 3., 4.]);
    let w = t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
    let b = t(&[3], &[0.5, -1., 2.]);
    assert_eq!(linear_forward(&x, &w, Some(&b)), t(&[2, 3], &[1.5, 1., 5., 3.5, 3., 9.]));
    assert_eq!(linear_forward(&x, &w, None), t(&[2, 3], &[1., 2., 3., 3., 4., 7.]));
}

#[test]
fn linear_backward_hand_computed() {
    // x, w as above, dy = [[1,0,2],[0,1,−1]].
    // dx = dy·w:   row0 = 1·[1,0] + 2·[1,1] = [3,2];  row1 = 1·[0,1] − 1·[1,1] = [−1,0]
    // dw = dyᵀ·x:  dw[o] = Σ_r dy[r,o]·x[r]: o0 = [1,2]; o1 = [3,4]; o2 = 2·[1,2] − [3,4] = [−1,0]
    // db = column sums of dy = [1, 1, 1]
    let x = t(&[2, 2], &[1., 2., 3., 4.]);
    let w = t(&[3, 2], &[1., 0., 0., 1., 1., 1.]);
    let dy = t(&[2, 3], &[1., 0., 2., 0., 1., -1.]);
    let (dx, dw, db) = linear_backward(&x, &w, &dy);
    assert_eq!(dx, t(&[2, 2], &[3., 2., -1., 0.]));
    assert_eq!(dw, t(&[3, 2], &[1., 2., 3., 4., -1., 0.]));
    assert_eq!(db, t(&[3], &[1., 1., 1.]));
}

#[test]
#[should_panic(expected = "inner dims")]
fn matmul_rejects_mismatched_inner_dims() {
    matmul(&Tensor::zeros(&[2, 3]), &Tensor::zeros(&[2, 3]));
}

// ---------------------------------------------------------------- gradients

#[test]
fn matmul_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(1);
    for (m, k, n) in [(3, 4, 5), (1, 7, 2), (6, 1, 3)] {
        let a = nonzero(&[m, k], &mut rng);
        let b = nonzero(&[k, n], &mut rng);
        let r = nonzero(&[m, n], &mut rng); // loss = Σ r ⊙ (a·b), so dy = r
        let (da, db) = matmul_backward(&a, &b, &r);
        assert_close(&da, &fd_grad(&a, 1e-2, |a| dot(&matmul(a, &b), &r)), 1e-2);
        assert_close(&db, &fd_grad(&b, 1e-2, |b| dot(&matmul(&a, b), &r)), 1e-2);
    }
}

#[test]
fn linear_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(2);
    for (n, fin, fout) in [(4, 5, 3), (1, 3, 6), (5, 1, 1)] {
        let x = nonzero(&[n, fin], &mut rng);
        let w = nonzero(&[fout, fin], &mut rng);
        let b = nonzero(&[fout], &mut rng);
        let r = nonzero(&[n, fout], &mut rng);
        let (dx, dw, db) = linear_backward(&x, &w, &r);
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| dot(&linear_forward(x, w, Some(b)), &r);
        assert_close(&dx, &fd_grad(&x, 1e-2, |x| loss(x, &w, &b)), 1e-2);
        assert_close(&dw, &fd_grad(&w, 1e-2, |w| loss(&x, w, &b)), 1e-2);
        assert_close(&db, &fd_grad(&b, 1e-2, |b| loss(&x, &w, b)), 1e-2);
    }
}

#[test]
fn matmul_adjoint_identities() {
    // ⟨a·b, g⟩ = ⟨a, g·bᵀ⟩ = ⟨b, aᵀ·g⟩.
    let mut rng = StdRng::seed_from_u64(3);
    let a = Tensor::randn(&[5, 7], 1.0, &mut rng);
    let b = Tensor::randn(&[7, 4], 1.0, &mut rng);
    let g = Tensor::uniform(&[5, 4], -1.0, 1.0, &mut rng);
    let lhs = dot(&matmul(&a, &b), &g);
    let (da, db) = matmul_backward(&a, &b, &g);
    let scale = lhs.abs().max(1.0);
    assert!((lhs - dot(&a, &da)).abs() / scale < 1e-5);
    assert!((lhs - dot(&b, &db)).abs() / scale < 1e-5);
}

#[test]
fn linear_agrees_with_matmul() {
    // linear(x, w, b) = x · wᵀ + b, with wᵀ built explicitly.
    let mut rng = StdRng::seed_from_u64(4);
    let (n, fin, fout) = (3, 5, 4);
    let x = Tensor::randn(&[n, fin], 1.0, &mut rng);
    let w = Tensor::randn(&[fout, fin], 1.0, &mut rng);
    let b = Tensor::randn(&[fout], 1.0, &mut rng);
    let mut wt = Tensor::zeros(&[fin, fout]);
    for o in 0..fout {
        for i in 0..fin {
            wt.data_mut()[i * fout + o] = w.data()[o * fin + i];
        }
    }
    let mut want = matmul(&x, &wt);
    for r in 0..n {
        for o in 0..fout {
            want.data_mut()[r * fout + o] += b.data()[o];
        }
    }
    assert_close(&linear_forward(&x, &w, Some(&b)), &want, 1e-6);
}

// ---------------------------------------------------------------- fast (sgemm) vs reference loops

fn check_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let e = got.rel_err(want);
    assert!(e <= 1e-5, "{what}: rel err {e:e}");
}

/// matmul / linear forward and backward, fast against `*_naive`, for x: [n, fin], w: [fout, fin].
fn check_fast_vs_naive(n: usize, fin: usize, fout: usize, rng: &mut StdRng) {
    let what = format!("n={n} in={fin} out={fout}");
    let x = Tensor::randn(&[n, fin], 1.0, rng);
    let w = Tensor::randn(&[fout, fin], 0.5, rng);
    let b = Tensor::randn(&[fout], 0.5, rng);
    let dy = Tensor::randn(&[n, fout], 1.0, rng);
    check_close(
        &linear_forward(&x, &w, Some(&b)),
        &linear_forward_naive(&x, &w, Some(&b)),
        &format!("linear+bias {what}"),
    );
    check_close(&linear_forward(&x, &w, None), &linear_forward_naive(&x, &w, None), &format!("linear {what}"));
    let (dx, dw, db) = linear_backward(&x, &w, &dy);
    let (ndx, ndw, ndb) = linear_backward_naive(&x, &w, &dy);
    check_close(&dx, &ndx, &format!("linear dx {what}"));
    check_close(&dw, &ndw, &format!("linear dw {what}"));
    check_close(&db, &ndb, &format!("linear db {what}"));
    // matmul with a = x [n, fin], b = [fin, fout].
    let bm = Tensor::randn(&[fin, fout], 0.5, rng);
    check_close(&matmul(&x, &bm), &matmul_naive(&x, &bm), &format!("matmul {what}"));
    let (da, dbm) = matmul_backward(&x, &bm, &dy);
    let (nda, ndbm) = matmul_backward_naive(&x, &bm, &dy);
    check_close(&da, &nda, &format!("matmul da {what}"));
    check_close(&dbm, &ndbm, &format!("matmul db {what}"));
}

#[test]
fn fast_matches_naive_on_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(10);
    let sizes = [1, 3, 17, 65, 130];
    for &n in &sizes {
        for &fin in &sizes {
            for &fout in &[1, 7, 33, 130] {
                check_fast_vs_naive(n, fin, fout, &mut rng);
            }
        }
    }
}

#[test]
fn fast_matches_naive_on_multilenet_shapes() {
    // fc 320→50, 50→50, 50→10 at the training batch.
    let mut rng = StdRng::seed_from_u64(11);
    for (fin, fout) in [(320, 50), (50, 50), (50, 10)] {
        check_fast_vs_naive(256, fin, fout, &mut rng);
    }
}

#[test]
fn fast_is_independent_of_thread_count() {
    // Big enough to be threaded (≥ 2^24 multiply-adds per GEMM).
    let mut rng = StdRng::seed_from_u64(12);
    let (n, fin, fout) = (512, 700, 96);
    let x = Tensor::randn(&[n, fin], 1.0, &mut rng);
    let w = Tensor::randn(&[fout, fin], 0.5, &mut rng);
    let dy = Tensor::randn(&[n, fout], 1.0, &mut rng);
    let bm = Tensor::randn(&[fin, fout], 0.5, &mut rng);
    let run = |threads: &str| {
        std::env::set_var("MTCOOL_THREADS", threads);
        let (dx, dw, db) = linear_backward(&x, &w, &dy);
        let (da, dbm) = matmul_backward(&x, &bm, &dy);
        [linear_forward(&x, &w, None), dx, dw, db, matmul(&x, &bm), da, dbm]
    };
    let one = run("1");
    for threads in ["2", "3", "8"] {
        for (a, b) in one.iter().zip(run(threads).iter()) {
            assert!(a.data().iter().zip(b.data()).all(|(u, v)| u.to_bits() == v.to_bits()), "{threads} threads differ");
        }
    }
    std::env::remove_var("MTCOOL_THREADS");
}
