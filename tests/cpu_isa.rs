//! Every micro-kernel build this CPU can run (AVX-512, AVX2 + FMA, portable), forced one at a time
//! with `gemm::set_isa`, against the f64 reference loops: sgemm (every transpose, odd sizes around
//! the 12×32 and 6×16 tiles, the dot-product path), `gemm_rows` with scattered rows, and the conv
//! forward and both gradients (stride 1: the im2col-free path; stride 2: im2col), at 1, 2 and 3
//! threads, bit-identical across thread counts. Also: the AVX-512 and AVX2 tile kernels give the
//! same bits (each element is the same FMA chain). One test function, because `set_isa` is
//! process-wide.

use mtcool::backend::cpu::conv::*;
use mtcool::backend::cpu::gemm::{self, Isa};
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// C = op(A)·op(B) in f64, A stored [m, k] (or [k, m] when ta), B [k, n] (or [n, k] when tb).
#[allow(clippy::too_many_arguments)]
fn reference(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] } as f64;
    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] } as f64;
    (0..m * n).map(|ij| (0..k).map(|p| at(ij / n, p) * bt(p, ij % n)).sum()).collect()
}

fn assert_close(got: &[f32], want: &[f64], scale: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / scale.max(1.0);
        assert!(err < 1e-6, "{what}: [{i}] = {g}, want {w} (err {err:e})");
    }
}

fn with_threads<T>(threads: usize, f: impl FnOnce() -> T) -> T {
    std::env::set_var("MTCOOL_THREADS", threads.to_string());
    let out = f();
    std::env::remove_var("MTCOOL_THREADS");
    out
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// (110, 70, 1100): two 1024-deep slabs (the second accumulates onto C), two A blocks of the
/// packed path and a ragged last row tile.
const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (13, 33, 7),
    (25, 65, 300),
    (97, 40, 513),
    (6, 16, 256),
    (12, 32, 257),
    (200, 250, 600),
    (110, 70, 1100),
];
const TRANS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// sgemm on shapes around both tile sizes and the dot path (long k, small C), for each transpose:
/// checked against the reference and returned (from 1 thread) for the cross-ISA comparison.
fn check_sgemm(isa: Isa, rng: &mut StdRng) -> Vec<Vec<u32>> {
    let mut outs = vec![];
    for (ta, tb) in TRANS {
        for (m, n, k) in SHAPES {
            let (a, b) = (random(m * k, rng), random(k * n, rng));
            let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
            let want = reference(ta, tb, m, n, k, &a, &b);
            let mut first: Option<Vec<u32>> = None;
            for t in [1, 2, 3] {
                let mut c = vec![f32::NAN; m * n];
                gemm::sgemm_with_threads(t, ta, tb, m, n, k, 1.0, &a, lda, &b, ldb, 0.0, &mut c, n);
                let what = format!("{isa:?} sgemm ta={ta} tb={tb} {m}x{n}x{k} threads={t}");
                assert_close(&c, &want, k as f64, &what);
                match &first {
                    None => first = Some(bits(&c)),
                    Some(f) => assert_eq!(f, &bits(&c), "{what}: differs from 1 thread"),
                }
            }
            outs.push(first.unwrap());
        }
    }
    outs
}

/// gemm_rows: B's rows are shifted, overlapping windows of one buffer; n spans full and ragged tiles.
fn check_gemm_rows(isa: Isa, rng: &mut StdRng) {
    for (m, n, k) in [(1, 5, 3), (10, 70, 25), (13, 96, 250), (25, 33, 300)] {
        let a = random(m * k, rng);
        let buf = random(4 * n + 3 * k + 7, rng);
        let offs: Vec<usize> = (0..k).map(|p| (p * 7 + p / 3) % (buf.len() - n)).collect();
        let b: Vec<f32> = offs.iter().flat_map(|&o| buf[o..o + n].to_vec()).collect();
        let want = reference(false, false, m, n, k, &a, &b);
        let packed = gemm::PackedA::new(&a, k, m, k);
        let mut c = vec![f32::NAN; m * n];
        gemm::gemm_rows(&packed, &buf, &offs, n, 1.0, 0.0, &mut c, n);
        assert_close(&c, &want, k as f64, &format!("{isa:?} gemm_rows {m}x{n}x{k}"));
    }
}

type Case = (usize, usize, usize, usize, usize, usize, usize, usize, usize);

/// Conv forward and both gradients against the naive loops, bit-identical at 1, 2 and 3 threads.
fn check_conv(isa: Isa, rng: &mut StdRng) {
    let cases: [Case; 6] = [
        (3, 1, 10, 28, 28, 5, 5, 1, 0),  // MultiLeNet conv1 (K = 25)
        (9, 10, 20, 12, 12, 5, 5, 1, 0), // MultiLeNet conv2, one partial weight-gradient group
        (2, 3, 13, 9, 11, 3, 3, 1, 1),   // padded, odd sizes
        (1, 16, 8, 17, 15, 3, 3, 1, 2),  // one image: threads split rows / taps inside it
        (2, 2, 3, 5, 5, 3, 3, 1, 2),     // padding wider than half the kernel
        (3, 4, 5, 13, 9, 3, 3, 2, 1),    // stride 2 (im2col)
    ];
    for (n, ci, co, h, w, kh, kw, s, p) in cases {
        let cfg = Conv2dCfg { stride: s, padding: p };
        let x = Tensor::randn(&[n, ci, h, w], 1.0, rng);
        let wt = Tensor::randn(&[co, ci, kh, kw], 0.5, rng);
        let b = Tensor::randn(&[co], 0.5, rng);
        let y = conv2d_forward_naive(&x, &wt, Some(&b), cfg);
        let dy = Tensor::randn(y.shape(), 1.0, rng);
        let want = [
            y,
            conv2d_backward_data_naive(&dy, &wt, x.shape(), cfg),
            conv2d_backward_weight_naive(&dy, &x, wt.shape(), cfg),
        ];
        let mut first: Option<Vec<Vec<u32>>> = None;
        for t in [1, 2, 3] {
            let got = with_threads(t, || {
                [
                    conv2d_forward(&x, &wt, Some(&b), cfg),
                    conv2d_backward_data(&dy, &wt, x.shape(), cfg),
                    conv2d_backward_weight(&dy, &x, wt.shape(), cfg),
                ]
            });
            let what = format!("{isa:?} conv {:?} threads={t}", (n, ci, co, h, w, kh, kw, s, p));
            for (name, (g, wnt)) in ["forward", "backward_data", "backward_weight"].iter().zip(got.iter().zip(&want)) {
                let e = g.rel_err(wnt);
                assert!(e <= 1e-5, "{what} {name}: rel err {e:e}");
            }
            let now: Vec<Vec<u32>> = got.iter().map(|g| bits(g.data())).collect();
            match &first {
                None => first = Some(now),
                Some(f) => assert!(f == &now, "{what}: differs from 1 thread"),
            }
        }
    }
}

#[test]
fn every_isa_matches_the_reference() {
    let mut tiles: Vec<(Isa, Vec<Vec<u32>>)> = vec![];
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
        if !gemm::set_isa(Some(isa)) {
            eprintln!("skip: this CPU cannot run the {} kernels", isa.name());
            continue;
        }
        assert_eq!(gemm::isa(), isa);
        let mut rng = StdRng::seed_from_u64(7);
        let outs = check_sgemm(isa, &mut rng);
        check_gemm_rows(isa, &mut rng);
        check_conv(isa, &mut rng);
        tiles.push((isa, outs));
    }
    gemm::set_isa(None);
    // On the tile path AVX-512 and AVX2 agree bit for bit. The dot path (A·Bᵀ, k ≥ 128, a side of
    // C ≤ 64: sgemm's rule) sums in 16 vs 8 lanes, so it is left out.
    let avx: Vec<_> = tiles.iter().filter(|(i, _)| *i != Isa::Portable).collect();
    if let [(_, a), (_, b)] = avx.as_slice() {
        let mut compared = 0;
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            let ((m, n, k), (ta, tb)) = (SHAPES[i % SHAPES.len()], TRANS[i / SHAPES.len()]);
            if !(!ta && tb && k >= 128 && m.min(n) <= 64) {
                assert_eq!(x, y, "sgemm {m}x{n}x{k} ta={ta} tb={tb}: AVX-512 and AVX2 tiles differ");
                compared += 1;
            }
        }
        assert!(compared >= 20, "only {compared} tile-path cases compared");
    }
}
