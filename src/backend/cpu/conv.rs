//! 2-d convolution and transposed convolution (forward, backward data, backward weight), NCHW.
//! Kernels: `kernels/conv.cu` (same names).
//!
//! Convolution, PyTorch `Conv2d` semantics (cross-correlation, zero padding, no dilation, no groups):
//!
//!   y[n, co, oy, ox] = b[co] + Σ_{ci, ky, kx} x[n, ci, oy·s + ky − p, ox·s + kx − p] · w[co, ci, ky, kx]
//!
//! where reads outside the input are zero, w is [Co, Ci, kh, kw] and
//! Ho = (H + 2p − kh) / s + 1 (floor), likewise Wo.
//!
//! Transposed convolution, PyTorch `ConvTranspose2d` semantics (no output_padding, no dilation, no
//! groups) with w laid out [Ci, Co, kh, kw]: each input pixel scatters a weighted kernel patch,
//!
//!   y[n, co, iy·s + ky − p, ix·s + kx − p] += x[n, ci, iy, ix] · w[ci, co, ky, kx]
//!
//! (positions falling outside the output are dropped), plus b[co]; Ho = (H − 1)·s − 2p + kh.
//! It is exactly the adjoint of the convolution above, so its three functions are the convolution's
//! three functions with the roles of data and gradient swapped (see each function).
//!
//! The bias gradient of both ops is `elementwise::add_channel_bias_backward(dy)`.
//!
//! Two implementations of each function:
//! - the public names used by the tape are fast: per image, the input is unrolled into a column
//!   matrix col[(ci, ky, kx), (oy, ox)] (im2col) so that the convolution is one `gemm::sgemm`:
//!   y_n = w · col (forward), dcol = wᵀ · dy_n then col2im (data gradient), dw += dy_n · colᵀ (weight
//!   gradient). Images are spread over threads; sums are in f32 (FMA) and the result does not depend
//!   on the thread count.
//! - the `*_naive` functions are the reference: plain loops straight from the formulas above, sums
//!   accumulated in f64. Tests check the fast functions against them.

use super::conv_shifted::{self, Shifted};
use super::elementwise::add_channel_bias;
use super::gemm;
use super::shape4;
use crate::Tensor;

pub use crate::settings::Conv2dCfg;

/// Output (Ho, Wo) of a convolution: (H + 2p − kh) / s + 1, floored, likewise for W.
pub fn conv2d_out_hw(h: usize, w: usize, kh: usize, kw: usize, cfg: Conv2dCfg) -> (usize, usize) {
    let (s, p) = (cfg.stride, cfg.padding);
    assert!(s >= 1, "conv stride must be at least 1");
    assert!(kh >= 1 && kw >= 1, "conv kernel {kh}x{kw} is empty");
    assert!(
        h + 2 * p >= kh && w + 2 * p >= kw,
        "conv kernel {kh}x{kw} does not fit the padded input {h}x{w} (padding {p})"
    );
    ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1)
}

/// Output (Ho, Wo) of a transposed convolution: (H − 1)·s − 2p + kh, likewise for W.
pub fn conv_transpose2d_out_hw(h: usize, w: usize, kh: usize, kw: usize, cfg: Conv2dCfg) -> (usize, usize) {
    let (s, p) = (cfg.stride, cfg.padding);
    assert!(s >= 1, "conv_transpose stride must be at least 1");
    assert!(h >= 1 && w >= 1, "conv_transpose input {h}x{w} is empty");
    assert!(kh >= 1 && kw >= 1, "conv_transpose kernel {kh}x{kw} is empty");
    let (full_h, full_w) = ((h - 1) * s + kh, (w - 1) * s + kw);
    assert!(
        full_h > 2 * p && full_w > 2 * p,
        "conv_transpose padding {p} crops away the whole {full_h}x{full_w} output"
    );
    (full_h - 2 * p, full_w - 2 * p)
}

/// Index of the input row (or column) read by output position `o` through kernel tap `k`:
/// o·s + k − p, or None when that falls into the zero padding.
fn tap_source(o: usize, k: usize, s: usize, p: usize, len: usize) -> Option<usize> {
    let i = o * s + k;
    if i < p || i - p >= len {
        None
    } else {
        Some(i - p)
    }
}

/// Inverse of `tap_source`: the output position o with o·s + k − p = i, if there is one in 0..len.
fn tap_target(i: usize, k: usize, s: usize, p: usize, len: usize) -> Option<usize> {
    let t = i + p;
    if t < k || !(t - k).is_multiple_of(s) {
        return None;
    }
    let o = (t - k) / s;
    if o < len {
        Some(o)
    } else {
        None
    }
}

// ---------------------------------------------------------------- fast path: im2col + sgemm

/// Most floats a column matrix may have (1 MiB, about half an L2): larger images are unrolled in
/// bands of output rows, smaller ones several images at a time for the weight gradient.
const COL_BUDGET: usize = 1 << 18;
/// Most images whose weight-gradient columns are put side by side in one GEMM.
const MAX_GROUP: usize = 8;

/// One image's convolution geometry: input [ci, h, w], kernel kh×kw, output ho×wo, stride s,
/// padding p, and for each tap ky (kx) the output rows (columns) [lo, hi) that read inside the input.
/// Everything here, the bands and groups included, follows from the shapes alone (never from the
/// thread count), so the results are the same for every thread count.
#[derive(Clone, Debug)]
struct Geom {
    ci: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
    s: usize,
    p: usize,
    rows_in: Vec<(usize, usize)>,
    cols_in: Vec<(usize, usize)>,
}

impl Geom {
    fn new(ci: usize, h: usize, w: usize, kh: usize, kw: usize, cfg: Conv2dCfg) -> Geom {
        let (ho, wo) = conv2d_out_hw(h, w, kh, kw, cfg);
        let (s, p) = (cfg.stride, cfg.padding);
        let rows_in = (0..kh).map(|ky| valid_outputs(ky, s, p, h, ho)).collect();
        let cols_in = (0..kw).map(|kx| valid_outputs(kx, s, p, w, wo)).collect();
        Geom { ci, h, w, kh, kw, ho, wo, s, p, rows_in, cols_in }
    }
    /// Rows of the column matrix (= the GEMM depth of the forward): ci·kh·kw.
    fn rows(&self) -> usize {
        self.ci * self.kh * self.kw
    }
    /// Output pixels per channel: ho·wo.
    fn pix(&self) -> usize {
        self.ho * self.wo
    }
    /// Floats of one input image.
    fn in_len(&self) -> usize {
        self.ci * self.h * self.w
    }
    /// The bands [oy0, oy1) of output rows unrolled at a time: the whole image unless its column
    /// matrix exceeds COL_BUDGET.
    fn bands(&self) -> impl Iterator<Item = (usize, usize)> {
        let (ho, band) = (self.ho, (COL_BUDGET / (self.rows() * self.wo)).clamp(1, self.ho));
        (0..ho).step_by(band).map(move |oy0| (oy0, (oy0 + band).min(ho)))
    }
    /// Images per weight-gradient GEMM: as many whole column matrices as fit COL_BUDGET (1 if banded).
    fn group(&self) -> usize {
        (COL_BUDGET / (self.rows() * self.pix())).clamp(1, MAX_GROUP)
    }
    /// A 1×1, stride-1, unpadded convolution: the image is its own column matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.s == 1 && self.p == 0
    }
    /// Calls f(col row, input row, ky, kx) for every (c, ky, kx), col row = (c·kh + ky)·kw + kx and
    /// input row = the first row of channel c, c·h (in units of rows of w floats).
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize, usize)) {
        let mut r = 0;
        for c in 0..self.ci {
            for ky in 0..self.kh {
                for kx in 0..self.kw {
                    f(r, c * self.h, ky, kx);
                    r += 1;
                }
            }
        }
    }
}

/// Output positions o in 0..out whose tap k reads inside the input (0 ≤ o·s + k − p < len): [lo, hi).
fn valid_outputs(k: usize, s: usize, p: usize, len: usize, out: usize) -> (usize, usize) {
    let lo = p.saturating_sub(k).div_ceil(s).min(out);
    let hi = (len + p).saturating_sub(k).div_ceil(s).min(out);
    (lo, hi.max(lo))
}

/// im2col of output rows oy0..oy1 of one image: col[(c·kh + ky)·kw + kx, (oy − oy0)·wo + ox] =
/// x[c, oy·s + ky − p, ox·s + kx − p], zero where that falls into the padding. Col rows are `ld` apart.
fn im2col(g: &Geom, x: &[f32], (oy0, oy1): (usize, usize), col: &mut [f32], ld: usize) {
    let (w, wo, s, p) = (g.w, g.wo, g.s, g.p);
    g.for_each_tap(|r, row0, ky, kx| {
        let dst = &mut col[r * ld..][..(oy1 - oy0) * wo];
        // Band rows [y_lo, y_hi) read inside the input; the rest (top/bottom padding) are zeros.
        let (y_lo, y_hi) = (g.rows_in[ky].0.clamp(oy0, oy1) - oy0, g.rows_in[ky].1.clamp(oy0, oy1) - oy0);
        let (x_lo, x_hi) = g.cols_in[kx];
        if x_lo == x_hi || y_lo == y_hi {
            return dst.fill(0.0);
        }
        dst[..y_lo * wo].fill(0.0);
        dst[y_hi * wo..].fill(0.0);
        // Input row and column read by output (oy0 + y_lo, x_lo); input rows are w·s apart.
        let src = &x[(row0 + (oy0 + y_lo) * s + ky - p) * w + x_lo * s + kx - p..];
        let rows = dst[y_lo * wo..y_hi * wo].chunks_exact_mut(wo).zip(src.chunks(w * s));
        if s == 1 && x_lo == 0 && x_hi == wo {
            // The common case (no horizontal padding for this tap): whole rows.
            rows.for_each(|(d, src)| copy_row(d, &src[..wo]));
            return;
        }
        for (d, src) in rows {
            d[..x_lo].fill(0.0);
            d[x_hi..].fill(0.0);
            if s == 1 {
                copy_row(&mut d[x_lo..x_hi], &src[..x_hi - x_lo]);
            } else {
                d[x_lo..x_hi].iter_mut().zip(src.iter().step_by(s)).for_each(|(v, &xv)| *v = xv);
            }
        }
    });
}

/// The adjoint of `im2col` for output rows oy0..oy1: dx[c, iy, ix] += Σ of the col entries that
/// im2col copied from there.
#[inline(never)] // measured: inlined into its caller it ran ~8% slower (conv backward, fundus MT-CooL)
fn col2im(g: &Geom, col: &[f32], ld: usize, (oy0, oy1): (usize, usize), dx: &mut [f32]) {
    let (w, wo, s, p) = (g.w, g.wo, g.s, g.p);
    g.for_each_tap(|r, row0, ky, kx| {
        let src = &col[r * ld..][..(oy1 - oy0) * wo];
        let (y_lo, y_hi) = (g.rows_in[ky].0.clamp(oy0, oy1) - oy0, g.rows_in[ky].1.clamp(oy0, oy1) - oy0);
        let (x_lo, x_hi) = g.cols_in[kx];
        if x_lo == x_hi || y_lo == y_hi {
            return;
        }
        let dst = &mut dx[(row0 + (oy0 + y_lo) * s + ky - p) * w + x_lo * s + kx - p..];
        for (d, src) in dst.chunks_mut(w * s).zip(src[y_lo * wo..y_hi * wo].chunks_exact(wo)) {
            let src = &src[x_lo..x_hi];
            if s == 1 {
                add_row(&mut d[..src.len()], src);
            } else {
                d.iter_mut().step_by(s).zip(src).for_each(|(d, &v)| *d += v);
            }
        }
    });
}

/// dst += src for the short rows of col2im, in 8-float blocks.
fn add_row(dst: &mut [f32], src: &[f32]) {
    let (d8, d1) = dst.as_chunks_mut::<8>();
    let (s8, s1) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        for (d, &s) in d.iter_mut().zip(s) {
            *d += s;
        }
    }
    d1.iter_mut().zip(s1).for_each(|(d, &s)| *d += s);
}

/// `dst.copy_from_slice(src)` for the short rows of im2col, kept inline: 8-float blocks, the last
/// one overlapping the previous (a memcpy call per row would cost more than the copy).
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    if n < 8 {
        return dst.copy_from_slice(src);
    }
    for (d, s) in dst.as_chunks_mut::<8>().0.iter_mut().zip(src.as_chunks::<8>().0) {
        *d = *s;
    }
    let tail: &mut [f32; 8] = (&mut dst[n - 8..]).try_into().unwrap();
    *tail = src[n - 8..n].try_into().unwrap();
}

/// (threads over items, threads inside each GEMM) for `items` independent items and `macs` total
/// multiply-adds: items across threads when there are enough of them, else threaded GEMMs.
fn thread_split(items: usize, macs: usize) -> (usize, usize) {
    let t = gemm::threads_for(macs);
    if items >= t {
        (t, 1)
    } else {
        (1, t)
    }
}

/// y = conv(x, w) + b. x: [N, Ci, H, W], w: [Co, Ci, kh, kw], b: [Co] → y: [N, Co, Ho, Wo].
/// Per image and band of output rows: y_n[:, band] = w [Co, Ci·kh·kw] · im2col(x_n, band)
/// (+ b, which y is filled with first, as β = 1).
pub fn conv2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
    conv2d_forward_with(x, w, b, cfg, false)
}

/// relu(conv2d_forward(x, w, b, cfg)), the same bits: on the im2col-free path the ReLU is applied as
/// each output is written; otherwise in a pass over the result.
pub fn conv2d_relu_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
    conv2d_forward_with(x, w, b, cfg, true)
}

fn conv2d_forward_with(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg, relu: bool) -> Tensor {
    let (n, co, g) = forward_geom(x, w, b, cfg);
    let (ci, h, wd, kh, kw) = (g.ci, g.h, g.w, g.kh, g.kw);
    let (rows, pix) = (g.rows(), g.pix());
    let mut y = vec![0f32; n * co * pix];
    if y.is_empty() {
        return Tensor::from_parts(vec![n, co, g.ho, g.wo], y);
    }
    let (xd, wdat) = (x.data(), w.data());
    let (outer, inner) = thread_split(n, n * co * rows * pix);
    if shifted_fits(&g) {
        let s = Shifted::new(ci, h, wd, kh, kw, g.p);
        let packed = gemm::PackedA::new(wdat, rows, co, rows);
        let bias = b.map(|b| b.data());
        gemm::parallel_items(&mut y, co * pix, outer, |n0, ys| {
            let xs = &xd[n0 * g.in_len()..][..ys.len() / (co * pix) * g.in_len()];
            conv_shifted::forward(&s, xs, &packed, co, bias, relu, ys, inner);
        });
        return Tensor::from_parts(vec![n, co, g.ho, g.wo], y);
    }
    gemm::parallel_items(&mut y, co * pix, outer, |n0, ys| {
        let mut col = Vec::new();
        for (i, yn) in ys.chunks_exact_mut(co * pix).enumerate() {
            let xn = &xd[(n0 + i) * g.in_len()..][..g.in_len()];
            let beta = match b {
                Some(b) => {
                    yn.chunks_exact_mut(pix).zip(b.data()).for_each(|(row, &bv)| row.fill(bv));
                    1.0
                }
                None => 0.0,
            };
            for band in g.bands() {
                let (first, cols) = (band.0 * g.wo, (band.1 - band.0) * g.wo);
                let b_mat = if g.pointwise() {
                    &xn[first..] // rows pix apart
                } else {
                    col.resize(rows * cols, 0.0);
                    im2col(&g, xn, band, &mut col, cols);
                    &col[..]
                };
                let ldb = if g.pointwise() { pix } else { cols };
                let y_band = &mut yn[first..];
                gemm::sgemm_with_threads(
                    inner, false, false, co, cols, rows, 1.0, wdat, rows, b_mat, ldb, beta, y_band, pix,
                );
            }
        }
    });
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    Tensor::from_parts(vec![n, co, g.ho, g.wo], y)
}

/// (N, Co, geometry) of a forward convolution, its arguments' shapes checked.
fn forward_geom(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> (usize, usize, Geom) {
    let (n, ci, h, wd) = x.dims4();
    let (co, wci, kh, kw) = w.dims4();
    assert_eq!(wci, ci, "conv weight {:?} expects {wci} input channels, x {:?} has {ci}", w.shape(), x.shape());
    if let Some(b) = b {
        assert_eq!(b.shape(), [co], "conv bias shape {:?} for {co} output channels", b.shape());
    }
    (n, co, Geom::new(ci, h, wd, kh, kw, cfg))
}

/// max_pool2d_forward(conv2d_forward(x, w, b, cfg), 2, 2) in one pass where the im2col-free path runs
/// (each image's output is pooled while it is in cache; the unpooled output is never stored), else
/// the two calls. Returns (pooled y, argmax into the unpooled output, the unpooled output's shape);
/// the values and argmax are those of the two calls, bit for bit.
pub fn conv2d_max_pool_forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: Conv2dCfg,
) -> (Tensor, Vec<u32>, Vec<usize>) {
    let (n, co, g) = forward_geom(x, w, b, cfg);
    let (ci, h, wd, kh, kw) = (g.ci, g.h, g.w, g.kh, g.kw);
    let conv_shape = vec![n, co, g.ho, g.wo];
    if !shifted_fits(&g) || g.ho < 2 || g.wo < 2 || n * co * g.pix() > u32::MAX as usize {
        let y = conv2d_forward(x, w, b, cfg);
        let (p, argmax) = super::pool::max_pool2d_forward(&y, 2, 2);
        return (p, argmax, conv_shape);
    }
    let (ph, pw) = (g.ho / 2, g.wo / 2);
    let (rows, out_len) = (g.rows(), co * ph * pw);
    let mut y = vec![0f32; n * out_len];
    let mut argmax = vec![0u32; n * out_len];
    let s = Shifted::new(ci, h, wd, kh, kw, g.p);
    let packed = gemm::PackedA::new(w.data(), rows, co, rows);
    let bias = b.map(|b| b.data());
    let threads = gemm::threads_for(n * co * rows * g.pix()).min(n).max(1);
    let per = n.div_ceil(threads);
    let xd = x.data();
    let parts: Vec<_> =
        y.chunks_mut(per * out_len).zip(argmax.chunks_mut(per * out_len)).map(std::sync::Mutex::new).collect();
    super::workers::run(parts.len(), |t| {
        let mut part = parts[t].lock().unwrap_or_else(|p| p.into_inner());
        let (yp, ap) = &mut *part;
        let xs = &xd[t * per * g.in_len()..][..yp.len() / out_len * g.in_len()];
        conv_shifted::forward_max_pool(&s, xs, &packed, co, bias, t * per, yp, ap);
    });
    drop(parts);
    (Tensor::from_parts(vec![n, co, ph, pw], y), argmax, conv_shape)
}

/// dx of the convolution (see `conv2d_backward_data_naive` for the formula).
/// Per image and band of output rows: dcol = wᵀ [Ci·kh·kw, Co] · dy_n[:, band], then col2im adds
/// dcol into dx_n.
pub fn conv2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = shape4(x_shape, "conv input");
    let (co, wci, kh, kw) = w.dims4();
    assert_eq!(wci, ci, "conv weight {:?} expects {wci} input channels, x_shape {x_shape:?} has {ci}", w.shape());
    let g = Geom::new(ci, h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, g.ho, g.wo], "conv dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    if let Some(pad) = full_correlation_pad(&g) {
        // dx is the "full" correlation of dy with the kernel flipped and transposed, which is a
        // stride-1 convolution: it runs on the im2col-free forward (no col2im scatter).
        let wt = flip_transpose(w);
        return conv2d_forward(dy, &wt, None, Conv2dCfg { stride: 1, padding: pad });
    }
    let (rows, pix) = (g.rows(), g.pix());
    let mut dx = vec![0f32; n * g.in_len()];
    if dx.is_empty() {
        return Tensor::from_parts(x_shape.to_vec(), dx);
    }
    let (dyd, wdat) = (dy.data(), w.data());
    if shifted_fits(&g) {
        // Images over the threads (one image: one thread; the path depends on the shapes only).
        let s = Shifted::new(ci, h, wd, kh, kw, g.p);
        let wt: Vec<f32> = (0..rows).flat_map(|r| (0..co).map(move |o| wdat[o * rows + r])).collect();
        let packed = gemm::PackedA::new(&wt, co, rows, co);
        let threads = gemm::threads_for(n * co * rows * pix).min(n);
        gemm::parallel_items(&mut dx, g.in_len(), threads, |n0, dxs| {
            let dys = &dyd[n0 * co * pix..][..dxs.len() / g.in_len() * co * pix];
            conv_shifted::backward_data(&s, dys, &packed, co, dxs);
        });
        return Tensor::from_parts(x_shape.to_vec(), dx);
    }
    let (outer, inner) = thread_split(n, n * co * rows * pix);
    gemm::parallel_items(&mut dx, g.in_len(), outer, |n0, dxs| {
        let mut col = Vec::new();
        for (i, dxn) in dxs.chunks_exact_mut(g.in_len()).enumerate() {
            let dyn_ = &dyd[(n0 + i) * co * pix..][..co * pix];
            if g.pointwise() {
                // dx_n is dcol itself. w is [Co, rows] row-major: wᵀ is the transposed operand.
                gemm::sgemm_with_threads(inner, true, false, rows, pix, co, 1.0, wdat, rows, dyn_, pix, 0.0, dxn, pix);
                continue;
            }
            for band in g.bands() {
                let (first, cols) = (band.0 * g.wo, (band.1 - band.0) * g.wo);
                col.resize(rows * cols, 0.0);
                let dy_band = &dyn_[first..];
                gemm::sgemm_with_threads(
                    inner, true, false, rows, cols, co, 1.0, wdat, rows, dy_band, pix, 0.0, &mut col, cols,
                );
                col2im(&g, &col, cols, band, dxn);
            }
        }
    });
    Tensor::from_parts(x_shape.to_vec(), dx)
}

/// The padding k − 1 − p under which dx is a plain stride-1 convolution of dy (square kernel,
/// stride 1, p < k, not pointwise), if that costs about as much as the im2col path: the correlation
/// multiplies over the whole zero-padded dy, (ho + 2(k−1−p))·(wo + 2(k−1−p)) positions per output
/// row band against ho·wo, so it is taken when that is at most 1.5× (a 3×3 "same" conv: ~1.03×;
/// MultiLeNet's 5×5 on 12² → 8²: 3×, which stays on im2col). Decided on the shapes alone.
fn full_correlation_pad(g: &Geom) -> Option<usize> {
    let k = g.kh;
    if g.s != 1 || g.kw != k || g.p >= k || g.pointwise() {
        return None;
    }
    let pad = k - 1 - g.p;
    let wide = g.h * (g.wo + 2 * pad); // the forward's wide output: dx rows × padded dy width
    (2 * wide <= 3 * g.ho * g.wo).then_some(pad)
}

/// w [Co, Ci, k, k] → [Ci, Co, k, k] with each kernel rotated by 180°: the weights of dx as a
/// convolution of dy.
fn flip_transpose(w: &Tensor) -> Tensor {
    let (co, ci, kh, kw) = w.dims4();
    let wd = w.data();
    let mut out = vec![0f32; wd.len()];
    for o in 0..co {
        for c in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    out[((c * co + o) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)] =
                        wd[((o * ci + c) * kh + ky) * kw + kx];
                }
            }
        }
    }
    Tensor::from_parts(vec![ci, co, kh, kw], out)
}

/// dw of the convolution (see `conv2d_backward_weight_naive` for the formula): Σ_n dy_n · im2col(x_n)ᵀ.
/// Small images go `Geom::group()` at a time, side by side as columns: partial = dy_g [Co, G·Ho·Wo]
/// · im2col(x_g)ᵀ, one long-k GEMM that sgemm runs as row dot products; large ones one band of
/// output rows at a time, accumulated. The groups spread over threads; their partials are added up
/// in order.
pub fn conv2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (co, wci, kh, kw) = shape4(w_shape, "conv weight");
    assert_eq!(wci, ci, "conv w_shape {w_shape:?} expects {wci} input channels, x {:?} has {ci}", x.shape());
    let g = Geom::new(ci, h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, g.ho, g.wo], "conv dy shape {:?} for x {:?}", dy.shape(), x.shape());
    let (rows, pix, wlen) = (g.rows(), g.pix(), co * g.rows());
    let (dyd, xd) = (dy.data(), x.data());
    let macs = n * co * rows * pix;
    let shifted = shifted_fits(&g);
    let group = if shifted { conv_shifted::GROUP } else { g.group() };
    let groups = n.div_ceil(group);
    if groups == 0 || wlen == 0 {
        return Tensor::zeros(w_shape);
    }
    let mut partials = vec![0f32; groups * wlen];
    let (outer, inner) = thread_split(groups, macs);
    if shifted {
        let s = Shifted::new(ci, h, wd, kh, kw, g.p);
        gemm::parallel_items(&mut partials, wlen, outer, |g0, parts| {
            let (first, last) = (g0 * group, (n).min((g0 + parts.len() / wlen) * group));
            let xs = &xd[first * g.in_len()..last * g.in_len()];
            let dys = &dyd[first * co * pix..last * co * pix];
            conv_shifted::weight_partials(&s, xs, dys, co, parts, inner);
        });
        return sum_partials(partials, wlen, w_shape);
    }
    gemm::parallel_items(&mut partials, wlen, outer, |g0, parts| {
        let (mut cols, mut dys) = (Vec::new(), Vec::new());
        for (gi, part) in parts.chunks_exact_mut(wlen).enumerate() {
            let first = (g0 + gi) * group;
            let images = group.min(n - first);
            let image = |j: usize| &xd[(first + j) * g.in_len()..][..g.in_len()];
            let grads = |j: usize| &dyd[(first + j) * co * pix..][..co * pix];
            if group > 1 || g.bands().nth(1).is_none() {
                // Whole images side by side: row r of cols is [col_0 row r | col_1 row r | ...].
                let ld = images * pix;
                cols.resize(rows * ld, 0.0);
                dys.resize(co * ld, 0.0);
                for j in 0..images {
                    im2col(&g, image(j), (0, g.ho), &mut cols[j * pix..], ld);
                    for (o, dy_row) in grads(j).chunks_exact(pix).enumerate() {
                        dys[o * ld + j * pix..][..pix].copy_from_slice(dy_row);
                    }
                }
                gemm::sgemm_with_threads(inner, false, true, co, rows, ld, 1.0, &dys, ld, &cols, ld, 0.0, part, rows);
            } else {
                // One large image, a band at a time: part += dy_n[:, band] · im2col(x_n, band)ᵀ.
                for (bi, band) in g.bands().enumerate() {
                    let (first_px, k) = (band.0 * g.wo, (band.1 - band.0) * g.wo);
                    cols.resize(rows * k, 0.0);
                    im2col(&g, image(0), band, &mut cols, k);
                    let beta = if bi == 0 { 0.0 } else { 1.0 };
                    let dy_band = &grads(0)[first_px..];
                    gemm::sgemm_with_threads(
                        inner, false, true, co, rows, k, 1.0, dy_band, pix, &cols, k, beta, part, rows,
                    );
                }
            }
        }
    });
    sum_partials(partials, wlen, w_shape)
}

/// dw = the sum of the wlen-float partials, added in order (so independent of the thread count).
fn sum_partials(mut partials: Vec<f32>, wlen: usize, w_shape: &[usize]) -> Tensor {
    let (dw, rest) = partials.split_at_mut(wlen);
    for part in rest.chunks_exact(wlen) {
        dw.iter_mut().zip(part).for_each(|(d, &v)| *d += v);
    }
    partials.truncate(wlen);
    Tensor::from_parts(w_shape.to_vec(), partials)
}

/// Whether the im2col-free path (`conv_shifted`) takes this convolution: stride 1 and not pointwise
/// (that one needs no im2col anyway). Decided on the shapes alone, never the thread count.
fn shifted_fits(g: &Geom) -> bool {
    g.s == 1 && !g.pointwise()
}

// ---------------------------------------------------------------- reference loops

/// y = conv(x, w) + b. x: [N, Ci, H, W], w: [Co, Ci, kh, kw], b: [Co] → y: [N, Co, Ho, Wo].
pub fn conv2d_forward_naive(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (co, wci, kh, kw) = w.dims4();
    assert_eq!(wci, ci, "conv weight {:?} expects {wci} input channels, x {:?} has {ci}", w.shape(), x.shape());
    if let Some(b) = b {
        assert_eq!(b.shape(), [co], "conv bias shape {:?} for {co} output channels", b.shape());
    }
    let (ho, wo) = conv2d_out_hw(h, wd, kh, kw, cfg);
    let (s, p) = (cfg.stride, cfg.padding);
    let (xd, wdat) = (x.data(), w.data());
    let mut y = vec![0f32; n * co * ho * wo];
    for ni in 0..n {
        for o in 0..co {
            let bias = b.map_or(0.0, |b| b.data()[o] as f64);
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = bias;
                    for c in 0..ci {
                        for ky in 0..kh {
                            let Some(iy) = tap_source(oy, ky, s, p, h) else { continue };
                            for kx in 0..kw {
                                let Some(ix) = tap_source(ox, kx, s, p, wd) else { continue };
                                let xv = xd[((ni * ci + c) * h + iy) * wd + ix];
                                let wv = wdat[((o * ci + c) * kh + ky) * kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    y[((ni * co + o) * ho + oy) * wo + ox] = acc as f32;
                }
            }
        }
    }
    Tensor::from_parts(vec![n, co, ho, wo], y)
}

/// dx of the convolution: dx[n, ci, iy, ix] = Σ dy[n, co, oy, ox] · w[co, ci, ky, kx] over all
/// (co, ky, kx) and the output positions with oy·s + ky − p = iy, ox·s + kx − p = ix.
/// Input pixels that no window reads (dropped by the floor in Ho/Wo) get zero.
pub fn conv2d_backward_data_naive(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = shape4(x_shape, "conv input");
    let (co, wci, kh, kw) = w.dims4();
    assert_eq!(wci, ci, "conv weight {:?} expects {wci} input channels, x_shape {x_shape:?} has {ci}", w.shape());
    let (ho, wo) = conv2d_out_hw(h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, ho, wo], "conv dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    let (s, p) = (cfg.stride, cfg.padding);
    let (dyd, wdat) = (dy.data(), w.data());
    let mut dx = vec![0f32; n * ci * h * wd];
    for ni in 0..n {
        for c in 0..ci {
            for iy in 0..h {
                for ix in 0..wd {
                    let mut acc = 0f64;
                    for o in 0..co {
                        for ky in 0..kh {
                            let Some(oy) = tap_target(iy, ky, s, p, ho) else { continue };
                            for kx in 0..kw {
                                let Some(ox) = tap_target(ix, kx, s, p, wo) else { continue };
                                let g = dyd[((ni * co + o) * ho + oy) * wo + ox];
                                let wv = wdat[((o * ci + c) * kh + ky) * kw + kx];
                                acc += g as f64 * wv as f64;
                            }
                        }
                    }
                    dx[((ni * ci + c) * h + iy) * wd + ix] = acc as f32;
                }
            }
        }
    }
    Tensor::from_parts(x_shape.to_vec(), dx)
}

/// dw of the convolution: dw[co, ci, ky, kx] = Σ_{n, oy, ox} dy[n, co, oy, ox] · x[n, ci, oy·s + ky − p, ox·s + kx − p]
/// (padding reads contribute zero).
pub fn conv2d_backward_weight_naive(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (co, wci, kh, kw) = shape4(w_shape, "conv weight");
    assert_eq!(wci, ci, "conv w_shape {w_shape:?} expects {wci} input channels, x {:?} has {ci}", x.shape());
    let (ho, wo) = conv2d_out_hw(h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, ho, wo], "conv dy shape {:?} for x {:?}", dy.shape(), x.shape());
    let (s, p) = (cfg.stride, cfg.padding);
    let (dyd, xd) = (dy.data(), x.data());
    let mut dw = vec![0f32; co * ci * kh * kw];
    for o in 0..co {
        for c in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    let mut acc = 0f64;
                    for ni in 0..n {
                        for oy in 0..ho {
                            let Some(iy) = tap_source(oy, ky, s, p, h) else { continue };
                            for ox in 0..wo {
                                let Some(ix) = tap_source(ox, kx, s, p, wd) else { continue };
                                let g = dyd[((ni * co + o) * ho + oy) * wo + ox];
                                let xv = xd[((ni * ci + c) * h + iy) * wd + ix];
                                acc += g as f64 * xv as f64;
                            }
                        }
                    }
                    dw[((o * ci + c) * kh + ky) * kw + kx] = acc as f32;
                }
            }
        }
    }
    Tensor::from_parts(w_shape.to_vec(), dw)
}

// ---------------------------------------------------------------- transposed convolution

type ConvForward = fn(&Tensor, &Tensor, Option<&Tensor>, Conv2dCfg) -> Tensor;
type ConvBackward = fn(&Tensor, &Tensor, &[usize], Conv2dCfg) -> Tensor;

/// y = conv_transpose(x, w) + b. x: [N, Ci, H, W], w: [Ci, Co, kh, kw] → y: [N, Co, Ho, Wo] with
/// Ho = (H − 1)·s − 2p + kh.
///
/// The scatter in the module doc is the convolution's data gradient: reading x as a "dy" of a
/// convolution with Co_conv = Ci and Ci_conv = Co (whose [Co_conv, Ci_conv, kh, kw] weight layout is
/// exactly w's [Ci, Co, kh, kw]), y = conv2d_backward_data(x, w, [N, Co, Ho, Wo]).
/// (The convolution of an Ho-sized input gives back H positions: (Ho + 2p − kh)/s + 1 = H.)
pub fn conv_transpose2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
    transpose_forward(x, w, b, cfg, conv2d_backward_data)
}

/// dx of the transposed convolution: dx[n, ci, iy, ix] = Σ_{co, ky, kx} dy[n, co, iy·s + ky − p, ix·s + kx − p] · w[ci, co, ky, kx],
/// which is the plain convolution of dy with w read as [Co_conv = Ci, Ci_conv = Co, kh, kw].
pub fn conv_transpose2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    transpose_backward_data(dy, w, x_shape, cfg, conv2d_forward)
}

/// dw of the transposed convolution: dw[ci, co, ky, kx] = Σ_{n, iy, ix} x[n, ci, iy, ix] · dy[n, co, iy·s + ky − p, ix·s + kx − p],
/// which is the convolution's weight gradient with x in the role of dy and dy in the role of x.
pub fn conv_transpose2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    transpose_backward_weight(dy, x, w_shape, cfg, conv2d_backward_weight)
}

/// Reference `conv_transpose2d_forward` (through `conv2d_backward_data_naive`).
pub fn conv_transpose2d_forward_naive(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
    transpose_forward(x, w, b, cfg, conv2d_backward_data_naive)
}

/// Reference `conv_transpose2d_backward_data` (through `conv2d_forward_naive`).
pub fn conv_transpose2d_backward_data_naive(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    transpose_backward_data(dy, w, x_shape, cfg, conv2d_forward_naive)
}

/// Reference `conv_transpose2d_backward_weight` (through `conv2d_backward_weight_naive`).
pub fn conv_transpose2d_backward_weight_naive(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    transpose_backward_weight(dy, x, w_shape, cfg, conv2d_backward_weight_naive)
}

fn transpose_forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: Conv2dCfg,
    backward_data: ConvBackward,
) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (wci, co, kh, kw) = w.dims4();
    assert_eq!(
        wci,
        ci,
        "conv_transpose weight {:?} expects {wci} input channels, x {:?} has {ci}",
        w.shape(),
        x.shape()
    );
    let (ho, wo) = conv_transpose2d_out_hw(h, wd, kh, kw, cfg);
    let y = backward_data(x, w, &[n, co, ho, wo], cfg);
    match b {
        Some(b) => {
            assert_eq!(b.shape(), [co], "conv_transpose bias shape {:?} for {co} output channels", b.shape());
            add_channel_bias(&y, b)
        }
        None => y,
    }
}

fn transpose_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg, forward: ConvForward) -> Tensor {
    let (n, ci, h, wd) = shape4(x_shape, "conv_transpose input");
    let (wci, co, kh, kw) = w.dims4();
    assert_eq!(
        wci,
        ci,
        "conv_transpose weight {:?} expects {wci} input channels, x_shape {x_shape:?} has {ci}",
        w.shape()
    );
    let (ho, wo) = conv_transpose2d_out_hw(h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, ho, wo], "conv_transpose dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    forward(dy, w, None, cfg)
}

fn transpose_backward_weight(
    dy: &Tensor,
    x: &Tensor,
    w_shape: &[usize],
    cfg: Conv2dCfg,
    weight: ConvBackward,
) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (wci, co, kh, kw) = shape4(w_shape, "conv_transpose weight");
    assert_eq!(wci, ci, "conv_transpose w_shape {w_shape:?} expects {wci} input channels, x {:?} has {ci}", x.shape());
    let (ho, wo) = conv_transpose2d_out_hw(h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, ho, wo], "conv_transpose dy shape {:?} for x {:?}", dy.shape(), x.shape());
    weight(x, dy, w_shape, cfg)
}
