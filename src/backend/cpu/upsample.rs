//! Nearest-neighbour upsampling by an integer scale and bilinear resizing, NCHW, forward and backward.
//! Kernels: `kernels/upsample.cu` (same names).
//!
//! Nearest: y[n, c, oy, ox] = x[n, c, oy / s, ox / s] (integer division), y is [N, C, H·s, W·s].
//!
//! Bilinear: PyTorch `interpolate(mode="bilinear", align_corners=False)` with an explicit output size,
//! computed in f32 like PyTorch's float kernel. Per axis, with scale = in / out:
//!
//!   src = max((dst + 0.5) · scale − 0.5, 0)
//!   i0 = floor(src),  i1 = i0 + 1 if i0 < in − 1 else i0   (clamped at the last pixel)
//!   λ1 = src − i0,  λ0 = 1 − λ1
//!
//! and y[oy, ox] = λ0y·(λ0x·x[y0, x0] + λ1x·x[y0, x1]) + λ1y·(λ0x·x[y1, x0] + λ1x·x[y1, x1]).
//! The backward scatters dy[oy, ox] to the same four pixels with the same weights.

use super::shape4;
use crate::Tensor;

/// Nearest-neighbour upsampling by `scale`: [N, C, H, W] → [N, C, H·scale, W·scale].
pub fn upsample_nearest_forward(x: &Tensor, scale: usize) -> Tensor {
    assert!(scale >= 1, "upsample scale must be at least 1");
    let (n, c, h, w) = x.dims4();
    let (ho, wo) = (h * scale, w * scale);
    let xd = x.data();
    let mut y = vec![0f32; n * c * ho * wo];
    if w == 0 {
        return Tensor::from_parts(vec![n, c, ho, wo], y);
    }
    // Each input row widened once (every value `scale` times), then copied to its `scale` output rows;
    // runs of rows on the CPU workers for large tensors.
    let threads = if y.len() >= 1 << 18 { super::gemm::num_threads() } else { 1 };
    super::gemm::parallel_items(&mut y, scale * wo, threads, |first_row, ys| {
        let rows = xd[first_row * w..].chunks_exact(w);
        for (src, out) in rows.zip(ys.chunks_exact_mut(scale * wo)) {
            let (first, rest) = out.split_at_mut(wo);
            if scale == 2 {
                // The common ×2, as pairs (LLVM vectorises this; `fill` per pair it does not).
                for (d, &v) in first.chunks_exact_mut(2).zip(src) {
                    d[0] = v;
                    d[1] = v;
                }
            } else {
                for (d, &v) in first.chunks_exact_mut(scale).zip(src) {
                    d.fill(v);
                }
            }
            rest.chunks_exact_mut(wo).for_each(|r| r.copy_from_slice(first));
        }
    });
    Tensor::from_parts(vec![n, c, ho, wo], y)
}

/// dx of nearest upsampling: dx[n, c, iy, ix] = Σ of dy over its scale×scale block.
pub fn upsample_nearest_backward(dy: &Tensor, scale: usize) -> Tensor {
    assert!(scale >= 1, "upsample scale must be at least 1");
    let (n, c, ho, wo) = dy.dims4();
    assert!(
        ho % scale == 0 && wo % scale == 0,
        "upsample dy shape {:?} is not a multiple of scale {scale}",
        dy.shape()
    );
    let (h, w) = (ho / scale, wo / scale);
    let dyd = dy.data();
    let mut dx = vec![0f32; n * c * h * w];
    if wo == 0 || w == 0 {
        return Tensor::from_parts(vec![n, c, h, w], dx);
    }
    // Per input row: the f64 sums of its scale×scale blocks, added row by row (sy), then along each
    // row (sx): the same order as summing each block on its own. Runs of rows on the CPU workers.
    let threads = if dyd.len() >= 1 << 18 { super::gemm::num_threads() } else { 1 };
    super::gemm::parallel_items(&mut dx, w, threads, |first_row, dxs| {
        let mut acc = vec![0f64; w];
        let blocks = dyd[first_row * scale * wo..].chunks_exact(scale * wo);
        for (block, out) in blocks.zip(dxs.chunks_exact_mut(w)) {
            acc.fill(0.0);
            for row in block.chunks_exact(wo) {
                for (a, d) in acc.iter_mut().zip(row.chunks_exact(scale)) {
                    for &v in d {
                        *a += v as f64;
                    }
                }
            }
            out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
    });
    Tensor::from_parts(vec![n, c, h, w], dx)
}

/// Source taps of one bilinear output position along one axis: (i0, i1, λ0, λ1), see the module doc.
fn bilinear_taps(dst: usize, in_len: usize, out_len: usize) -> (usize, usize, f32, f32) {
    let scale = in_len as f32 / out_len as f32;
    let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let i0 = (src as usize).min(in_len - 1);
    let i1 = if i0 < in_len - 1 { i0 + 1 } else { i0 };
    let l1 = (src - i0 as f32).clamp(0.0, 1.0);
    (i0, i1, 1.0 - l1, l1)
}

/// Bilinear resize (align_corners=False): [N, C, H, W] → [N, C, out_h, out_w].
pub fn upsample_bilinear_forward(x: &Tensor, out_h: usize, out_w: usize) -> Tensor {
    let (n, c, h, w) = x.dims4();
    assert!(h >= 1 && w >= 1, "bilinear input {h}x{w} is empty");
    assert!(out_h >= 1 && out_w >= 1, "bilinear output {out_h}x{out_w} is empty");
    let rows: Vec<_> = (0..out_h).map(|oy| bilinear_taps(oy, h, out_h)).collect();
    let cols: Vec<_> = (0..out_w).map(|ox| bilinear_taps(ox, w, out_w)).collect();
    let xd = x.data();
    let mut y = Vec::with_capacity(n * c * out_h * out_w);
    for plane in 0..n * c {
        let p = &xd[plane * h * w..(plane + 1) * h * w];
        for &(y0, y1, ly0, ly1) in &rows {
            for &(x0, x1, lx0, lx1) in &cols {
                let top = lx0 * p[y0 * w + x0] + lx1 * p[y0 * w + x1];
                let bottom = lx0 * p[y1 * w + x0] + lx1 * p[y1 * w + x1];
                y.push(ly0 * top + ly1 * bottom);
            }
        }
    }
    Tensor::from_parts(vec![n, c, out_h, out_w], y)
}

/// dx of the bilinear resize: each dy[oy, ox] is added to its four source pixels with the forward's
/// weights λy·λx. x_shape is the forward input's [N, C, H, W]; dy is [N, C, out_h, out_w].
pub fn upsample_bilinear_backward(dy: &Tensor, x_shape: &[usize]) -> Tensor {
    let (n, c, h, w) = shape4(x_shape, "bilinear input");
    let (dn, dc, out_h, out_w) = dy.dims4();
    assert_eq!((dn, dc), (n, c), "bilinear dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    assert!(h >= 1 && w >= 1, "bilinear input {h}x{w} is empty");
    let rows: Vec<_> = (0..out_h).map(|oy| bilinear_taps(oy, h, out_h)).collect();
    let cols: Vec<_> = (0..out_w).map(|ox| bilinear_taps(ox, w, out_w)).collect();
    let dyd = dy.data();
    let mut dx = vec![0f32; n * c * h * w];
    for plane in 0..n * c {
        let p = &mut dx[plane * h * w..(plane + 1) * h * w];
        for (oy, &(y0, y1, ly0, ly1)) in rows.iter().enumerate() {
            for (ox, &(x0, x1, lx0, lx1)) in cols.iter().enumerate() {
                let g = dyd[(plane * out_h + oy) * out_w + ox];
                p[y0 * w + x0] += ly0 * lx0 * g;
                p[y0 * w + x1] += ly0 * lx1 * g;
                p[y1 * w + x0] += ly1 * lx0 * g;
                p[y1 * w + x1] += ly1 * lx1 * g;
            }
        }
    }
    Tensor::from_parts(x_shape.to_vec(), dx)
}
