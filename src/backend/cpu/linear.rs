//! Matrix multiply and fully connected (linear) layer, forward and backward.
//! Kernels: `kernels/linear.cu` (same names).
//!
//!   matmul:  y[i, j] = Σ_p a[i, p] · b[p, j]            a: [m, k], b: [k, n] → y: [m, n]
//!   linear:  y[r, o] = b[o] + Σ_i x[r, i] · w[o, i]     x: [N, in], w: [out, in] (PyTorch layout) → y: [N, out]
//!
//! i.e. linear(x) = x · wᵀ + b. The public functions run on `gemm::sgemm` (f32 sums, threaded,
//! thread-count independent); the `*_naive` functions are the reference loops, accumulated in f64.

use super::gemm::sgemm;
use crate::Tensor;

// ---------------------------------------------------------------- fast path: sgemm

/// a · b for a: [m, k], b: [k, n] → [m, n].
pub fn matmul(a: &Tensor, b: &Tensor) -> Tensor {
    let (m, k) = a.dims2();
    let (kb, n) = b.dims2();
    assert_eq!(k, kb, "matmul inner dims differ: a {:?}, b {:?}", a.shape(), b.shape());
    let mut y = vec![0f32; m * n];
    sgemm(false, false, m, n, k, 1.0, a.data(), k, b.data(), n, 0.0, &mut y, n);
    Tensor::from_parts(vec![m, n], y)
}

/// Gradients of y = a · b: da = dy · bᵀ ([m, k]), db = aᵀ · dy ([k, n]).
pub fn matmul_backward(a: &Tensor, b: &Tensor, dy: &Tensor) -> (Tensor, Tensor) {
    let (m, k) = a.dims2();
    let (kb, n) = b.dims2();
    assert_eq!(k, kb, "matmul inner dims differ: a {:?}, b {:?}", a.shape(), b.shape());
    assert_eq!(dy.shape(), [m, n], "matmul dy shape {:?} for a {:?}, b {:?}", dy.shape(), a.shape(), b.shape());
    let (mut da, mut db) = (vec![0f32; m * k], vec![0f32; k * n]);
    sgemm(false, true, m, k, n, 1.0, dy.data(), n, b.data(), n, 0.0, &mut da, k);
    sgemm(true, false, k, n, m, 1.0, a.data(), k, dy.data(), n, 0.0, &mut db, n);
    (Tensor::from_parts(vec![m, k], da), Tensor::from_parts(vec![k, n], db))
}

/// y = x · wᵀ + b. x: [N, in], w: [out, in], b: [out] → y: [N, out].
pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (n, fin) = x.dims2();
    let (fout, win) = w.dims2();
    assert_eq!(win, fin, "linear weight {:?} expects {win} input features, x {:?} has {fin}", w.shape(), x.shape());
    let mut y = vec![0f32; n * fout];
    let beta = match b {
        Some(b) => {
            assert_eq!(b.shape(), [fout], "linear bias shape {:?} for {fout} output features", b.shape());
            y.chunks_exact_mut(fout.max(1)).for_each(|row| row.copy_from_slice(b.data()));
            1.0 // y = x·wᵀ + 1·b
        }
        None => 0.0,
    };
    sgemm(false, true, n, fout, fin, 1.0, x.data(), fin, w.data(), fin, beta, &mut y, fout);
    Tensor::from_parts(vec![n, fout], y)
}

/// Gradients of y = x · wᵀ + b: dx = dy · w ([N, in]), dw = dyᵀ · x ([out, in]),
/// db[o] = Σ_r dy[r, o] ([out], summed in f64). db is returned whether or not the forward had a bias.
pub fn linear_backward(x: &Tensor, w: &Tensor, dy: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (n, fin) = x.dims2();
    let (fout, win) = w.dims2();
    assert_eq!(win, fin, "linear weight {:?} expects {win} input features, x {:?} has {fin}", w.shape(), x.shape());
    assert_eq!(dy.shape(), [n, fout], "linear dy shape {:?} for x {:?}, w {:?}", dy.shape(), x.shape(), w.shape());
    let (mut dx, mut dw) = (vec![0f32; n * fin], vec![0f32; fout * fin]);
    sgemm(false, false, n, fin, fout, 1.0, dy.data(), fout, w.data(), fin, 0.0, &mut dx, fin);
    sgemm(true, false, fout, fin, n, 1.0, dy.data(), fout, x.data(), fin, 0.0, &mut dw, fin);
    let mut db = vec![0f64; fout];
    for row in dy.data().chunks_exact(fout.max(1)) {
        db.iter_mut().zip(row).for_each(|(acc, &g)| *acc += g as f64);
    }
    let db = Tensor::from_parts(vec![fout], db.into_iter().map(|v| v as f32).collect());
    (Tensor::from_parts(vec![n, fin], dx), Tensor::from_parts(vec![fout, fin], dw), db)
}

// ---------------------------------------------------------------- reference loops

/// a · b for a: [m, k], b: [k, n] → [m, n].
pub fn matmul_naive(a: &Tensor, b: &Tensor) -> Tensor {
    let (m, k) = a.dims2();
    let (kb, n) = b.dims2();
    assert_eq!(k, kb, "matmul inner dims differ: a {:?}, b {:?}", a.shape(), b.shape());
    let (ad, bd) = (a.data(), b.data());
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += ad[i * k + p] as f64 * bd[p * n + j] as f64;
            }
            y[i * n + j] = acc as f32;
        }
    }
    Tensor::from_parts(vec![m, n], y)
}

/// a · bᵀ for a: [m, k], b: [n, k] → [m, n] (each entry a dot product of two rows).
fn matmul_a_bt(a: &Tensor, b: &Tensor) -> Tensor {
    let (m, k) = a.dims2();
    let (n, kb) = b.dims2();
    assert_eq!(k, kb, "a·bᵀ inner dims differ: a {:?}, b {:?}", a.shape(), b.shape());
    let (ad, bd) = (a.data(), b.data());
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += ad[i * k + p] as f64 * bd[j * k + p] as f64;
            }
            y[i * n + j] = acc as f32;
        }
    }
    Tensor::from_parts(vec![m, n], y)
}

/// aᵀ · b for a: [k, m], b: [k, n] → [m, n] (the sum runs over the shared row index).
fn matmul_at_b(a: &Tensor, b: &Tensor) -> Tensor {
    let (k, m) = a.dims2();
    let (kb, n) = b.dims2();
    assert_eq!(k, kb, "aᵀ·b inner dims differ: a {:?}, b {:?}", a.shape(), b.shape());
    let (ad, bd) = (a.data(), b.data());
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += ad[p * m + i] as f64 * bd[p * n + j] as f64;
            }
            y[i * n + j] = acc as f32;
        }
    }
    Tensor::from_parts(vec![m, n], y)
}

/// Gradients of y = a · b: da = dy · bᵀ ([m, k]), db = aᵀ · dy ([k, n]).
pub fn matmul_backward_naive(a: &Tensor, b: &Tensor, dy: &Tensor) -> (Tensor, Tensor) {
    let (m, k) = a.dims2();
    let (kb, n) = b.dims2();
    assert_eq!(k, kb, "matmul inner dims differ: a {:?}, b {:?}", a.shape(), b.shape());
    assert_eq!(dy.shape(), [m, n], "matmul dy shape {:?} for a {:?}, b {:?}", dy.shape(), a.shape(), b.shape());
    (matmul_a_bt(dy, b), matmul_at_b(a, dy))
}

/// y = x · wᵀ + b. x: [N, in], w: [out, in], b: [out] → y: [N, out].
pub fn linear_forward_naive(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (_, fin) = x.dims2();
    let (fout, win) = w.dims2();
    assert_eq!(win, fin, "linear weight {:?} expects {win} input features, x {:?} has {fin}", w.shape(), x.shape());
    let mut y = matmul_a_bt(x, w);
    if let Some(b) = b {
        assert_eq!(b.shape(), [fout], "linear bias shape {:?} for {fout} output features", b.shape());
        let (yd, bd) = (y.data_mut(), b.data());
        for (i, v) in yd.iter_mut().enumerate() {
            *v += bd[i % fout];
        }
    }
    y
}

/// Gradients of y = x · wᵀ + b: dx = dy · w ([N, in]), dw = dyᵀ · x ([out, in]),
/// db[o] = Σ_r dy[r, o] ([out]). db is returned whether or not the forward had a bias.
pub fn linear_backward_naive(x: &Tensor, w: &Tensor, dy: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (n, fin) = x.dims2();
    let (fout, win) = w.dims2();
    assert_eq!(win, fin, "linear weight {:?} expects {win} input features, x {:?} has {fin}", w.shape(), x.shape());
    assert_eq!(dy.shape(), [n, fout], "linear dy shape {:?} for x {:?}, w {:?}", dy.shape(), x.shape(), w.shape());
    let dx = matmul_naive(dy, w);
    let dw = matmul_at_b(dy, x);
    let mut db = vec![0f64; fout];
    for (i, &g) in dy.data().iter().enumerate() {
        db[i % fout] += g as f64;
    }
    let db = Tensor::from_parts(vec![fout], db.into_iter().map(|v| v as f32).collect());
    (dx, dw, db)
}
