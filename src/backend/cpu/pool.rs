//! 2-d max pooling, average pooling and global average pooling over NCHW, forward and backward.
//! Kernels: `kernels/pool.cu` (same names).
//!
//! Windows are k×k with stride s and no padding; a window that does not fit is dropped (PyTorch
//! `ceil_mode=False`), so Ho = (H − k) / s + 1 (floor), likewise Wo. Output (oy, ox) covers input rows
//! oy·s .. oy·s + k and columns ox·s .. ox·s + k.
//!
//! Max pooling returns, per output element, the flat index into x (over the whole [N, C, H, W]
//! tensor) of the value it took: the first maximum in row-major window order on ties; a NaN in the
//! window wins (the first NaN), so NaN propagates like in PyTorch. The backward routes dy to that
//! index, summing where overlapping windows (s < k) chose the same element.
//!
//! Average pooling divides by k·k (every window is full, there is no padding).

use super::gemm;
use super::shape4;
use super::workers;
use crate::Tensor;

/// (Ho, Wo) of a k×k, stride-s pooling without padding, floor mode.
pub fn pool2d_out_hw(h: usize, w: usize, k: usize, stride: usize) -> (usize, usize) {
    assert!(k >= 1, "pool window must be at least 1");
    assert!(stride >= 1, "pool stride must be at least 1");
    assert!(h >= k && w >= k, "pool window {k}x{k} does not fit the input {h}x{w}");
    ((h - k) / stride + 1, (w - k) / stride + 1)
}

/// Whether `v`, met later in a window, replaces the running maximum `best`: larger, or the first NaN.
#[inline(always)]
fn takes_over(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// k×k max pooling with the given stride: (y [N, C, Ho, Wo], argmax), argmax[i] being the flat index
/// into x of the element y.data()[i] came from.
pub fn max_pool2d_forward(x: &Tensor, k: usize, stride: usize) -> (Tensor, Vec<u32>) {
    let (n, c, h, w) = x.dims4();
    let (ho, wo) = pool2d_out_hw(h, w, k, stride);
    assert!(x.numel() <= u32::MAX as usize, "max_pool2d input of {} elements overflows u32 indices", x.numel());
    if k == 2 && stride == 2 {
        return max_pool2d_2x2(x.data(), [n, c, h, w], ho, wo);
    }
    max_pool2d_naive(x, k, stride)
}

/// The plain window loop of `max_pool2d_forward` for any k and stride (the spec of the 2×2 fast path).
pub fn max_pool2d_naive(x: &Tensor, k: usize, stride: usize) -> (Tensor, Vec<u32>) {
    let (n, c, h, w) = x.dims4();
    let (ho, wo) = pool2d_out_hw(h, w, k, stride);
    let xd = x.data();
    let mut y = Vec::with_capacity(n * c * ho * wo);
    let mut argmax = Vec::with_capacity(n * c * ho * wo);
    for plane in 0..n * c {
        let base = plane * h * w;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut best_idx = base + (oy * stride) * w + ox * stride;
                let mut best = xd[best_idx];
                for ky in 0..k {
                    for kx in 0..k {
                        let idx = base + (oy * stride + ky) * w + ox * stride + kx;
                        let v = xd[idx];
                        if takes_over(v, best) {
                            best = v;
                            best_idx = idx;
                        }
                    }
                }
                y.push(best);
                argmax.push(best_idx as u32);
            }
        }
    }
    (Tensor::from_parts(vec![n, c, ho, wo], y), argmax)
}

/// The common 2×2, stride-2 case of `max_pool2d_forward`, same results. A plane without NaN takes the
/// window's first maximum pairwise ((a, b), (c, d), then the two winners; ties keep the earlier), which
/// compiles to selects, not branches; a plane with a NaN goes value by value in row-major order, the
/// first NaN winning, as the reference does.
fn max_pool2d_2x2(xd: &[f32], [n, c, h, w]: [usize; 4], ho: usize, wo: usize) -> (Tensor, Vec<u32>) {
    let mut y = vec![0f32; n * c * ho * wo];
    let mut argmax = vec![0u32; n * c * ho * wo];
    let plane_out = (ho * wo).max(1);
    let threads = if xd.len() >= PAR_MIN_ELEMS { gemm::num_threads() } else { 1 };
    let per = (n * c).div_ceil(threads.max(1)).max(1) * plane_out;
    // Planes are independent: runs of them go to threads, each plane computed the same way anywhere.
    let parts: Vec<_> = y.chunks_mut(per).zip(argmax.chunks_mut(per)).map(std::sync::Mutex::new).collect();
    workers::run(parts.len(), |t| {
        let mut part = parts[t].lock().unwrap_or_else(|p| p.into_inner());
        let (yp, ap) = &mut *part;
        pool_planes_2x2(xd, t * per / plane_out, [h, w], [ho, wo], yp, ap);
    });
    drop(parts);
    (Tensor::from_parts(vec![n, c, ho, wo], y), argmax)
}

/// Inputs at least this long are pooled on all threads (below it a spawn costs more than it saves).
const PAR_MIN_ELEMS: usize = 1 << 17;

/// 2×2 pooling of the planes whose outputs are `y` / `argmax`, starting at plane `first` (argmax
/// entries index `xd`).
pub(super) fn pool_planes_2x2(
    xd: &[f32],
    first: usize,
    [h, w]: [usize; 2],
    [ho, wo]: [usize; 2],
    y: &mut [f32],
    argmax: &mut [u32],
) {
    let take = |(bv, bi): (f32, u32), v: f32, i: u32| {
        if takes_over(v, bv) {
            (v, i)
        } else {
            (bv, bi)
        }
    };
    let wu = w as u32;
    let planes = y.chunks_exact_mut(ho * wo).zip(argmax.chunks_exact_mut(ho * wo));
    for (plane, (yp, ap)) in (first..).zip(planes) {
        let base = plane * h * w;
        let xp = &xd[base..base + h * w];
        let nan = xp.iter().fold(false, |acc, v| acc | v.is_nan());
        for (oy, (yo, ao)) in yp.chunks_exact_mut(wo).zip(ap.chunks_exact_mut(wo)).enumerate() {
            let (row0, row1) = (&xp[2 * oy * w..2 * oy * w + 2 * wo], &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * wo]);
            let r0 = (base + 2 * oy * w) as u32;
            if nan {
                for ox in 0..wo {
                    let i0 = r0 + 2 * ox as u32;
                    let best = take((row0[2 * ox], i0), row0[2 * ox + 1], i0 + 1);
                    let best = take(take(best, row1[2 * ox], i0 + wu), row1[2 * ox + 1], i0 + wu + 1);
                    (yo[ox], ao[ox]) = best;
                }
            } else {
                for ox in 0..wo {
                    let (a, b, cc, d) = (row0[2 * ox], row0[2 * ox + 1], row1[2 * ox], row1[2 * ox + 1]);
                    let (m1, o1) = if b > a { (b, 1) } else { (a, 0) };
                    let (m2, o2) = if d > cc { (d, wu + 1) } else { (cc, wu) };
                    let (m, off) = if m2 > m1 { (m2, o2) } else { (m1, o1) };
                    (yo[ox], ao[ox]) = (m, r0 + 2 * ox as u32 + off);
                }
            }
        }
    }
}

/// dx of max pooling: dx[argmax[i]] += dy[i], zero elsewhere.
pub fn max_pool2d_backward(dy: &Tensor, argmax: &[u32], x_shape: &[usize]) -> Tensor {
    let (n, c, _, _) = shape4(x_shape, "max_pool2d input");
    let (dn, dc, _, _) = dy.dims4();
    assert_eq!((dn, dc), (n, c), "max_pool2d dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    assert_eq!(argmax.len(), dy.numel(), "max_pool2d argmax has {} entries for dy {:?}", argmax.len(), dy.shape());
    let numel: usize = x_shape.iter().product();
    let mut dx = vec![0f32; numel];
    if numel == 0 || dy.numel() == 0 {
        return Tensor::from_parts(x_shape.to_vec(), dx);
    }
    // Runs of planes go to threads. A plane's argmax points into that plane; an entry that does not
    // (a hand-made argmax) is a caller error, reported as out of range for its run of planes.
    let (in_plane, out_plane) = (numel / (n * c), dy.numel() / (n * c));
    let threads = if numel >= PAR_MIN_ELEMS { gemm::num_threads() } else { 1 };
    gemm::parallel_items(&mut dx, in_plane, threads, |first, part| {
        let (lo, outs) = (first * in_plane, first * out_plane..(first + part.len() / in_plane) * out_plane);
        for (&g, &idx) in dy.data()[outs.clone()].iter().zip(&argmax[outs]) {
            let at = (idx as usize).wrapping_sub(lo);
            assert!(at < part.len(), "max_pool2d argmax {idx} out of range for its plane (x_shape {x_shape:?})");
            part[at] += g;
        }
    });
    Tensor::from_parts(x_shape.to_vec(), dx)
}

/// k×k average pooling with the given stride: y = mean of each window. x: [N, C, H, W] → [N, C, Ho, Wo].
pub fn avg_pool2d_forward(x: &Tensor, k: usize, stride: usize) -> Tensor {
    let (n, c, h, w) = x.dims4();
    let (ho, wo) = pool2d_out_hw(h, w, k, stride);
    let xd = x.data();
    let area = (k * k) as f64;
    let mut y = Vec::with_capacity(n * c * ho * wo);
    for plane in 0..n * c {
        let base = plane * h * w;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut acc = 0f64;
                for ky in 0..k {
                    for kx in 0..k {
                        acc += xd[base + (oy * stride + ky) * w + ox * stride + kx] as f64;
                    }
                }
                y.push((acc / area) as f32);
            }
        }
    }
    Tensor::from_parts(vec![n, c, ho, wo], y)
}

/// dx of average pooling: every element of window (oy, ox) receives dy[oy, ox] / (k·k), summed over
/// the windows that cover it (zero for elements no window covers).
pub fn avg_pool2d_backward(dy: &Tensor, x_shape: &[usize], k: usize, stride: usize) -> Tensor {
    let (n, c, h, w) = shape4(x_shape, "avg_pool2d input");
    let (ho, wo) = pool2d_out_hw(h, w, k, stride);
    assert_eq!(dy.shape(), [n, c, ho, wo], "avg_pool2d dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    let dyd = dy.data();
    let area = (k * k) as f32;
    let mut dx = vec![0f32; n * c * h * w];
    for plane in 0..n * c {
        let base = plane * h * w;
        for oy in 0..ho {
            for ox in 0..wo {
                let g = dyd[(plane * ho + oy) * wo + ox] / area;
                for ky in 0..k {
                    for kx in 0..k {
                        dx[base + (oy * stride + ky) * w + ox * stride + kx] += g;
                    }
                }
            }
        }
    }
    Tensor::from_parts(x_shape.to_vec(), dx)
}

/// Mean over all spatial positions: x [N, C, H, W] → y [N, C].
pub fn global_avg_pool_forward(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.dims4();
    let hw = h * w;
    assert!(hw > 0, "global_avg_pool of an empty {h}x{w} plane");
    let y =
        x.data().chunks(hw).map(|plane| (plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32).collect();
    Tensor::from_parts(vec![n, c], y)
}

/// dx[n, c, y, x] = dy[n, c] / (H·W).
pub fn global_avg_pool_backward(dy: &Tensor, x_shape: &[usize]) -> Tensor {
    let (n, c, h, w) = shape4(x_shape, "global_avg_pool input");
    assert_eq!(dy.shape(), [n, c], "global_avg_pool dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    let hw = h * w;
    assert!(hw > 0, "global_avg_pool of an empty {h}x{w} plane");
    let mut dx = Vec::with_capacity(n * c * hw);
    for &g in dy.data() {
        dx.extend(std::iter::repeat_n(g / hw as f32, hw));
    }
    Tensor::from_parts(x_shape.to_vec(), dx)
}
