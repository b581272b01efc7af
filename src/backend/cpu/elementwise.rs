//! Elementwise and broadcast ops: add, sub, mul, scale, relu, sigmoid, channel bias add, reductions.
//! Kernels: `kernels/elementwise.cu` (same names).

use crate::Tensor;

pub fn add(a: &Tensor, b: &Tensor) -> Tensor {
    a.zip(b, |x, y| x + y)
}

pub fn sub(a: &Tensor, b: &Tensor) -> Tensor {
    a.zip(b, |x, y| x - y)
}

pub fn mul(a: &Tensor, b: &Tensor) -> Tensor {
    a.zip(b, |x, y| x * y)
}

pub fn scale(a: &Tensor, s: f32) -> Tensor {
    a.map(|x| x * s)
}

pub fn relu(x: &Tensor) -> Tensor {
    x.map(|v| v.max(0.0))
}

/// dx = dy where x > 0, else 0.
pub fn relu_backward(dy: &Tensor, x: &Tensor) -> Tensor {
    dy.zip(x, |g, v| if v > 0.0 { g } else { 0.0 })
}

pub fn sigmoid(x: &Tensor) -> Tensor {
    x.map(sigmoid_scalar)
}

/// Numerically safe logistic function.
pub fn sigmoid_scalar(v: f32) -> f32 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

/// dx = dy · y · (1 − y), from the forward output y.
pub fn sigmoid_backward(dy: &Tensor, y: &Tensor) -> Tensor {
    dy.zip(y, |g, s| g * s * (1.0 - s))
}

/// y[n, c, ...] = x[n, c, ...] + b[c]: bias along dim 1 of an [N, C, ...] tensor.
pub fn add_channel_bias(x: &Tensor, b: &Tensor) -> Tensor {
    let (n, c, inner) = channel_dims(x);
    assert_eq!(b.shape(), [c], "bias shape {:?} for {} channels", b.shape(), c);
    let mut y = x.clone();
    let (yd, bd) = (y.data_mut(), b.data());
    for i in 0..n * c {
        let bias = bd[i % c];
        yd[i * inner..(i + 1) * inner].iter_mut().for_each(|v| *v += bias);
    }
    y
}

/// db[c] = Σ over n and spatial positions of dy[n, c, ...].
pub fn add_channel_bias_backward(dy: &Tensor) -> Tensor {
    let (n, c, inner) = channel_dims(dy);
    // Each plane's sum in f64 (on the threads, for large dy), then the planes of a channel in order.
    let mut sums = vec![0f64; n * c];
    let threads = if dy.numel() >= 1 << 18 { super::gemm::num_threads() } else { 1 };
    super::gemm::parallel_items(&mut sums, 1, threads, |first, out| {
        for (i, s) in out.iter_mut().enumerate() {
            *s = sum_f64(&dy.data()[(first + i) * inner..][..inner]);
        }
    });
    let mut db = vec![0f64; c];
    for (i, s) in sums.into_iter().enumerate() {
        db[i % c] += s;
    }
    Tensor::from_parts(vec![c], db.into_iter().map(|v| v as f32).collect())
}

/// Σ x in f64, in four interleaved partial sums (x[i] goes to sum i mod 4) added at the end, so
/// that the conversions and adds pipeline.
fn sum_f64(x: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let (quads, tail) = x.as_chunks::<4>();
    for q in quads {
        for l in 0..4 {
            acc[l] += q[l] as f64;
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for &v in tail {
        s += v as f64;
    }
    s
}

/// (N, C, product of the remaining dims) of an [N, C, ...] tensor.
pub fn channel_dims(x: &Tensor) -> (usize, usize, usize) {
    let s = x.shape();
    assert!(s.len() >= 2, "expected at least [N, C], got shape {s:?}");
    (s[0], s[1], s[2..].iter().product())
}

/// Sum of all elements as a scalar tensor (accumulated in f64).
pub fn sum_all(x: &Tensor) -> Tensor {
    Tensor::scalar(x.sum() as f32)
}

/// Mean of all elements as a scalar tensor.
pub fn mean_all(x: &Tensor) -> Tensor {
    Tensor::scalar((x.sum() / x.numel() as f64) as f32)
}
