//! The attention ops (MTAN's gates, CTAN's cross-task attention): batched matrix multiply, softmax over
//! the last axis (the keys), and sigmoid gating. Kernels: `kernels/attention.cu` (same names).
//!
//!   bmm:             y[b] = op(a[b]) · op(b[b])      op = transpose when asked; y: [B, M, N]
//!                    a: [B, M, K] (or [B, K, M] transposed), b: [B, K, N] (or [B, N, K] transposed)
//!   softmax_lastdim: y[.., j] = exp(x[.., j] − max) / Σ_j' exp(x[.., j'] − max)   over the last axis
//!   sigmoid_gate:    y = x · σ(g)                    x, g of one shape
//!
//! `bmm` runs each batch item on `gemm::sgemm`; `bmm_naive` is the reference loop (f64 sums).
//! `softmax_lastdim_naive` is the plain softmax (libm exp, f64 sums) the fast one is tested against.

use super::elementwise::sigmoid_scalar;
use super::gemm;
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
/// Items are spread over threads (each item's product single-threaded), so results do not depend on
/// the thread count.
#[allow(clippy::too_many_arguments)]
fn bmm_raw(batch: usize, ta: bool, tb: bool, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
    let mut c = vec![0f32; batch * m * n];
    if m * n == 0 {
        return c;
    }
    let threads = gemm::threads_for(batch * m * n * k.max(1));
    gemm::parallel_items(&mut c, m * n, threads, |first, cs| {
        for (j, ci) in cs.chunks_exact_mut(m * n).enumerate() {
            let i = first + j;
            let (ai, bi) = (&a[i * m * k..(i + 1) * m * k], &b[i * k * n..(i + 1) * k * n]);
            gemm::sgemm_with_threads(1, ta, tb, m, n, k, 1.0, ai, lda, bi, ldb, 0.0, ci, n);
        }
    });
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

/// e^x for x ≤ 0 (the max-subtracted softmax inputs), to within a few f32 ulps of `f32::exp`:
/// x = k·ln 2 + r with |r| ≤ ln 2 / 2, e^r by Cephes' degree-6 polynomial, 2^k through the exponent bits.
/// Plain arithmetic (no calls, no branches), so loops over it vectorise. x below −87 gives e^−87 ≈ 1.6e-38.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
    let k = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((k as i32 + 127) as u32) << 23)
}

/// Lanes of the row reductions below (a fixed split, so sums do not depend on the target's vectors).
const LANES: usize = 8;

/// Σ of a row in LANES interleaved f32 partial sums, added in lane order.
fn lane_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for c in &mut chunks {
        acc.iter_mut().zip(c).for_each(|(a, &x)| *a += x);
    }
    acc.iter_mut().zip(chunks.remainder()).for_each(|(a, &x)| *a += x);
    acc.iter().sum()
}

/// Softmax over the last axis (max-subtracted; `exp_nonpositive`; lane-split f32 sums; a NaN in a
/// row makes the row NaN).
pub fn softmax_lastdim_forward(x: &Tensor) -> Tensor {
    let (_, n) = last_axis(x, "softmax_lastdim");
    let mut y = vec![0f32; x.numel()];
    for (row, out) in x.data().chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        let mut mx = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            mx.iter_mut().zip(c).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
        }
        mx.iter_mut().zip(chunks.remainder()).for_each(|(m, &v)| *m = if v > *m { v } else { *m });
        let m = mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        if row.iter().any(|v| v.is_nan()) || m == f32::INFINITY {
            out.fill(f32::NAN);
            continue;
        }
        out.iter_mut().zip(row).for_each(|(o, &v)| *o = exp_nonpositive(v - m));
        let inv = 1.0 / lane_sum(out);
        out.iter_mut().for_each(|o| *o *= inv);
    }
    Tensor::from_parts(x.shape().to_vec(), y)
}

/// dx = y ⊙ (dy − Σ_j dy_j y_j) per row, from the forward output y (lane-split f32 dot product).
pub fn softmax_lastdim_backward(dy: &Tensor, y: &Tensor) -> Tensor {
    assert_eq!(dy.shape(), y.shape(), "softmax_lastdim_backward: dy {:?} vs y {:?}", dy.shape(), y.shape());
    let (_, n) = last_axis(y, "softmax_lastdim_backward");
    let mut dx = vec![0f32; y.numel()];
    for ((g, p), out) in dy.data().chunks_exact(n).zip(y.data().chunks_exact(n)).zip(dx.chunks_exact_mut(n)) {
        out.iter_mut().zip(g.iter().zip(p)).for_each(|(o, (&a, &b))| *o = a * b);
        let dot = lane_sum(out);
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

/// Softmax over the last axis with `f64::exp` and f64 sums: the spec of `softmax_lastdim_forward`.
pub fn softmax_lastdim_naive(x: &Tensor) -> Tensor {
    let (_, n) = last_axis(x, "softmax_lastdim_naive");
    let mut y = Vec::with_capacity(x.numel());
    for row in x.data().chunks_exact(n) {
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        y.extend(e.iter().map(|&v| (v / s) as f32));
    }
    Tensor::from_parts(x.shape().to_vec(), y)
}
