//! The attention ops (MTAN's gates, CTAN's cross-task attention): batched matrix multiply, softmax over
//! the last axis (the keys), and sigmoid gating. Kernels: `kernels/attention.cu` (same names).
//!
//!   bmm:             y[b] = op(a[b]) · op(b[b])      op = transpose when asked; y: [B, M, N]
//!                    a: [B, M, K] (or [B, K, M] transposed), b: [B, K, N] (or [B, N, K] transposed)
//!   softmax_lastdim: y[.., j] = exp(x[.., j] − max) / Σ_j' exp(x[.., j'] − max)   over the last axis
//!   sigmoid_gate:    y = x · σ(g)                    x, g of one shape
//!
//! `bmm` runs each batch item on `gemm::sgemm`; `bmm_naive` is the reference loop (f64 sums).

use super::elementwise::sigmoid_scalar;
use super::gemm::sgemm;
use crate::Tensor;

/// (batch, rows, cols) of a 3-d tensor.
fn dims3(t: &Tensor, op: &str, what: &str) -> (usize, usize, usize) {
    let s = t.shape();
    assert_eq!(s.len(), 3, "{op}: {what} must be [B, rows, cols], got {s:?}");
    (s[0], s[1], s[2])
}

/// (B, M, K, N) of op(a) · op(b), checking the batch and inner sizes.
pub fn bmm_dims(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> (usize, usize, usize, usize) {
    let (ba, ar, ac) = dims3(a, "bmm", "a");
    let (bb, br, bc) = dims3(b, "bmm", "b");
    assert_eq!(ba, bb, "bmm: batch sizes differ: a {:?}, b {:?}", a.shape(), b.shape());
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
    assert_eq!(k, kb, "bmm: inner dims differ: op(a) {m}x{k} (a {:?}), op(b) {kb}x{n} (b {:?})", a.shape(), b.shape());
    (ba, m, k, n)
}

/// One batched product on stored operands: per item, c = op(a) · op(b), with op(a) m×k, op(b) k×n.
#[allow(clippy::too_many_arguments)]
fn bmm_raw(batch: usize, ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
    let mut c = vec![0f32; batch * m * n];
    for i in 0..batch {
        let (ai, bi) = (&a[i * m * k..(i + 1) * m * k], &b[i * k * n..(i + 1) * k * n]);
        sgemm(ta, tb, m, n, k, 1.0, ai, lda, bi, ldb, 0.0, &mut c[i * m * n..(i + 1) * m * n], n);
    }
    c
}

/// y[b] = op(a[b]) · op(b[b]) → [B, M, N].
pub fn bmm(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Tensor {
    let (batch, m, k, n) = bmm_dims(a, trans_a, b, trans_b);
    Tensor::from_parts(vec![batch, m, n], bmm_raw(batch, trans_a, trans_b, m, n, k, a.data(), b.data()))
}

/// Gradients of y = bmm(a, ta, b, tb), each in its input's stored layout:
/// d op(a) = dy · op(b)ᵀ and d op(b) = op(a)ᵀ · dy, transposed back where the input was read transposed.
pub fn bmm_backward(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool, dy: &Tensor) -> (Tensor, Tensor) {
    let (batch, m, k, n) = bmm_dims(a, trans_a, b, trans_b);
    assert_eq!(dy.shape(), [batch, m, n], "bmm_backward: dy {:?} for y [{batch}, {m}, {n}]", dy.shape());
    let da = if trans_a {
        // da = (dy · op(b)ᵀ)ᵀ = op(b) · dyᵀ: [K, M]
        bmm_raw(batch, trans_b, true, k, m, n, b.data(), dy.data())
    } else {
        bmm_raw(batch, false, !trans_b, m, k, n, dy.data(), b.data())
    };
    let db = if trans_b {
        // db = (op(a)ᵀ · dy)ᵀ = dyᵀ · op(a): [N, K]
        bmm_raw(batch, true, trans_a, n, k, m, dy.data(), a.data())
    } else {
        bmm_raw(batch, !trans_a, false, k, n, m, a.data(), dy.data())
    };
    (Tensor::from_parts(a.shape().to_vec(), da), Tensor::from_parts(b.shape().to_vec(), db))
}

/// The reference loops of `bmm`, summed in f64.
pub fn bmm_naive(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Tensor {
    let (batch, m, k, n) = bmm_dims(a, trans_a, b, trans_b);
    let (ad, bd) = (a.data(), b.data());
    let at = |i: usize, r: usize, p: usize| if trans_a { ad[(i * k + p) * m + r] } else { ad[(i * m + r) * k + p] };
    let bt = |i: usize, p: usize, c: usize| if trans_b { bd[(i * n + c) * k + p] } else { bd[(i * k + p) * n + c] };
    let mut y = Vec::with_capacity(batch * m * n);
    for i in 0..batch {
        for r in 0..m {
            for c in 0..n {
                y.push((0..k).map(|p| at(i, r, p) as f64 * bt(i, p, c) as f64).sum::<f64>() as f32);
            }
        }
    }
    Tensor::from_parts(vec![batch, m, n], y)
}

/// Length of the last axis and the number of rows before it.
fn last_axis(x: &Tensor, op: &str) -> (usize, usize) {
    let n = *x.shape().last().unwrap_or_else(|| panic!("{op}: a scalar has no last axis"));
    assert!(n > 0, "{op}: empty last axis in {:?}", x.shape());
    (x.numel() / n, n)
}

/// Softmax over the last axis (max-subtracted, f32 exponentials, sums in f64).
pub fn softmax_lastdim_forward(x: &Tensor) -> Tensor {
    let (_, n) = last_axis(x, "softmax_lastdim");
    let mut y = vec![0f32; x.numel()];
    for (row, out) in x.data().chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut s = 0f64;
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v - m).exp();
            s += *o as f64;
        }
        let inv = (1.0 / s) as f32;
        out.iter_mut().for_each(|o| *o *= inv);
    }
    Tensor::from_parts(x.shape().to_vec(), y)
}

/// dx = y ⊙ (dy − Σ_j dy_j y_j) per row, from the forward output y (the sum in f64).
pub fn softmax_lastdim_backward(dy: &Tensor, y: &Tensor) -> Tensor {
    assert_eq!(dy.shape(), y.shape(), "softmax_lastdim_backward: dy {:?} vs y {:?}", dy.shape(), y.shape());
    let (_, n) = last_axis(y, "softmax_lastdim_backward");
    let mut dx = vec![0f32; y.numel()];
    for ((g, p), out) in dy.data().chunks_exact(n).zip(y.data().chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        let dot = g.iter().zip(p).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
        out.iter_mut().zip(g.iter().zip(p)).for_each(|(o, (&a, &b))| *o = b * (a - dot));
    }
    Tensor::from_parts(y.shape().to_vec(), dx)
}

/// y = x · σ(g).
pub fn sigmoid_gate_forward(x: &Tensor, g: &Tensor) -> Tensor {
    assert_eq!(x.shape(), g.shape(), "sigmoid_gate: x {:?} vs gate {:?}", x.shape(), g.shape());
    let y = x.data().iter().zip(g.data()).map(|(&v, &gv)| v * sigmoid_scalar(gv)).collect();
    Tensor::from_parts(x.shape().to_vec(), y)
}

/// dx = dy · σ(g), dg = dy · x · σ(g) · (1 − σ(g)).
pub fn sigmoid_gate_backward(dy: &Tensor, x: &Tensor, g: &Tensor) -> (Tensor, Tensor) {
    assert_eq!(x.shape(), g.shape(), "sigmoid_gate_backward: x {:?} vs gate {:?}", x.shape(), g.shape());
    assert_eq!(dy.shape(), x.shape(), "sigmoid_gate_backward: dy {:?} vs x {:?}", dy.shape(), x.shape());
    let (mut dx, mut dg) = (Vec::with_capacity(x.numel()), Vec::with_capacity(x.numel()));
    for ((&d, &v), &gv) in dy.data().iter().zip(x.data()).zip(g.data()) {
        let s = sigmoid_scalar(gv);
        dx.push(d * s);
        dg.push(d * v * s * (1.0 - s));
    }
    (Tensor::from_parts(x.shape().to_vec(), dx), Tensor::from_parts(x.shape().to_vec(), dg))
}
