//! Stride-1 convolution without im2col: the GEMM reads each kernel tap's rows straight from the
//! (zero-padded) image.
//!
//! With the image padded into a buffer whose rows are wp = W + 2p wide, output pixel (oy, ox) read
//! through tap (c, ky, kx) is buffer element off(c, ky, kx) + v with v = oy·wp + ox and
//! off = c·hp·wp + ky·wp + kx. So over the "wide" output v in 0..ho·wp (each output row followed by
//! wp − wo junk columns), row (c, ky, kx) of the im2col matrix is the buffer itself shifted by off:
//! `gemm::gemm_rows` multiplies the weights by those shifted rows in place. The junk columns are
//! computed and dropped (wo/wp of the work is useful: 86 % for conv1 of MultiLeNet, 67 % for conv2,
//! 97 % for a 64² U-Net layer), which costs less than writing and re-reading kh·kw copies of the image.
//!
//! Forward: y_n = W · shifted(x_n) (+ b), per image, W packed once per call. Weight gradient:
//! dW[co, tap] = Σ_n Σ_v dy_n[co, v] · x_n[off(tap) + v] with dy widened to ho·wp (junk columns zero),
//! dot products summed over a fixed group of images at a time (`gemm::dots` segments).
//! Each forward output is the same FMA chain over the same taps as the im2col path, so the two give
//! identical bits; the weight gradient sums in another order (checked against the reference).

use std::sync::Mutex;

use super::gemm::{self, PackedA, Segs};
use super::workers;

/// Images whose weight-gradient dot products are summed in one pass (then one partial per group).
pub(super) const GROUP: usize = 8;

/// Geometry of a stride-1 convolution over one image [ci, h, w] with padding p and a kh×kw kernel.
pub(super) struct Shifted {
    ci: usize,
    h: usize,
    w: usize,
    p: usize,
    hp: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    /// Buffer offset of each tap (c, ky, kx), in im2col row order.
    offs: Vec<usize>,
}

impl Shifted {
    pub(super) fn new(ci: usize, h: usize, w: usize, kh: usize, kw: usize, p: usize) -> Shifted {
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let (ho, wo) = (hp + 1 - kh, wp + 1 - kw);
        let mut offs = Vec::with_capacity(ci * kh * kw);
        for c in 0..ci {
            for ky in 0..kh {
                for kx in 0..kw {
                    offs.push(c * hp * wp + ky * wp + kx);
                }
            }
        }
        Shifted { ci, h, w, p, hp, wp, ho, wo, offs }
    }
    /// Columns of the wide output: ho·wp.
    fn wide(&self) -> usize {
        self.ho * self.wp
    }
    /// Floats of a padded image buffer: the image plus slack so that the last tap's rows, which run
    /// kw − 1 past the padded image, stay inside (zeros).
    fn frame(&self) -> usize {
        self.ci * self.hp * self.wp + self.wp
    }
    /// Writes image `x` [ci, h, w] zero-padded into `buf` (frame() floats).
    fn pad(&self, x: &[f32], buf: &mut [f32]) {
        let (h, w, p, wp) = (self.h, self.w, self.p, self.wp);
        if p > 0 {
            buf.fill(0.0);
        } else {
            buf[self.ci * h * w..].fill(0.0);
        }
        for (c, img) in x.chunks_exact(h * w).enumerate() {
            let plane = &mut buf[c * self.hp * wp..];
            for (y, row) in img.chunks_exact(w).enumerate() {
                plane[(y + p) * wp + p..][..w].copy_from_slice(row);
            }
        }
    }
}

/// Forward of one chunk of images: ys (images × co·ho·wo) from xs (images × ci·h·w), weights
/// packed. With `threads` > 1 each image's output rows are split into bands, one per thread (every
/// output is the same chain of FMAs whichever band computes it).
/// With `relu`, each output is max(·, 0) as it is written (the fused conv + ReLU).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    s: &Shifted,
    xs: &[f32],
    w: &PackedA,
    co: usize,
    bias: Option<&[f32]>,
    relu: bool,
    ys: &mut [f32],
    threads: usize,
) {
    let (in_len, out_len) = (s.ci * s.h * s.w, co * s.ho * s.wo);
    let mut buf = vec![0f32; s.frame()];
    for (x, y) in xs.chunks_exact(in_len).zip(ys.chunks_exact_mut(out_len)) {
        image_forward(s, &mut buf, x, w, co, bias, relu, y, threads);
    }
}

/// `forward` of one image, `buf` (frame() floats) its padded copy's scratch.
#[allow(clippy::too_many_arguments)]
fn image_forward(
    s: &Shifted,
    buf: &mut [f32],
    x: &[f32],
    w: &PackedA,
    co: usize,
    bias: Option<&[f32]>,
    relu: bool,
    y: &mut [f32],
    threads: usize,
) {
    let band = s.ho.div_ceil(threads.max(1));
    s.pad(x, buf);
    let buf = &*buf;
    let starts: Vec<usize> = (0..s.ho).step_by(band).collect();
    let done: Vec<Mutex<Vec<f32>>> = starts.iter().map(|_| Mutex::new(Vec::new())).collect();
    workers::run(starts.len(), |t| {
        let out = rows_forward(s, buf, w, co, starts[t], (starts[t] + band).min(s.ho));
        *done[t].lock().unwrap_or_else(|p| p.into_inner()) = out;
    });
    let bands = starts.into_iter().zip(done.into_iter().map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner())));
    for (oy0, out) in bands {
        let len = out.len() / co;
        for (o, (yc, oc)) in y.chunks_exact_mut(s.ho * s.wo).zip(out.chunks_exact(len)).enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            for (yr, orow) in yc[oy0 * s.wo..].chunks_exact_mut(s.wo).zip(oc.chunks_exact(s.wp)) {
                match (bias.is_some(), relu) {
                    (true, false) => yr.iter_mut().zip(orow).for_each(|(y, &v)| *y = v + b),
                    (true, true) => yr.iter_mut().zip(orow).for_each(|(y, &v)| *y = (v + b).max(0.0)),
                    (false, false) => yr.copy_from_slice(&orow[..s.wo]),
                    (false, true) => yr.iter_mut().zip(orow).for_each(|(y, &v)| *y = v.max(0.0)),
                }
            }
        }
    }
}

/// `forward` followed by 2×2 max-pooling, per image while its output is in cache: ys / argmaxs get
/// each image's pooled planes and the argmax into the unpooled output (image `first` is the chunk's
/// first image in the batch), exactly as `pool::max_pool2d_forward` gives them.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_max_pool(
    s: &Shifted,
    xs: &[f32],
    w: &PackedA,
    co: usize,
    bias: Option<&[f32]>,
    first: usize,
    ys: &mut [f32],
    argmaxs: &mut [u32],
) {
    let (in_len, conv_len) = (s.ci * s.h * s.w, co * s.ho * s.wo);
    let (ph, pw) = (s.ho / 2, s.wo / 2);
    let (mut conv, mut buf) = (vec![0f32; conv_len], vec![0f32; s.frame()]);
    for (i, ((x, y), a)) in xs
        .chunks_exact(in_len)
        .zip(ys.chunks_exact_mut(co * ph * pw))
        .zip(argmaxs.chunks_exact_mut(co * ph * pw))
        .enumerate()
    {
        image_forward(s, &mut buf, x, w, co, bias, false, &mut conv, 1);
        super::pool::pool_planes_2x2(&conv, 0, [s.ho, s.wo], [ph, pw], y, a);
        let offset = ((first + i) * conv_len) as u32;
        a.iter_mut().for_each(|v| *v += offset);
    }
}

/// The wide output rows oy0..oy1 of one padded image: [co, (oy1 − oy0)·wp].
fn rows_forward(s: &Shifted, buf: &[f32], w: &PackedA, co: usize, oy0: usize, oy1: usize) -> Vec<f32> {
    let len = (oy1 - oy0) * s.wp;
    let mut out = vec![0f32; co * len];
    gemm::gemm_rows(w, &buf[oy0 * s.wp..], &s.offs, len, 1.0, 0.0, &mut out, len);
    out
}

/// Data gradient of one chunk of images: dxs (images × ci·h·w) from dys (images × co·ho·wo), with
/// `wt` = Wᵀ [ci·kh·kw, co] packed. Per image: dy widened to rows of wp (junk columns zero), then
/// dcol = Wᵀ · dy_wide [ci·kh·kw, ho·wp] (one GEMM), then row (c, ky, kx) of dcol is added, whole, at
/// its tap's offset into a padded dx buffer (the adjoint of reading it there; junk columns add
/// zeros), whose interior is dx. Each dx element is the sum over taps in im2col row order, as in
/// the col2im path.
pub(super) fn backward_data(s: &Shifted, dys: &[f32], wt: &PackedA, co: usize, dxs: &mut [f32]) {
    let (in_len, dy_len, wide, frame) = (s.ci * s.h * s.w, co * s.ho * s.wo, s.wide(), s.frame());
    let offs: Vec<usize> = (0..co).map(|o| o * wide).collect();
    let (mut dyw, mut dcol, mut buf) = (vec![0f32; co * wide], vec![0f32; s.offs.len() * wide], vec![0f32; frame]);
    for (dy, dx) in dys.chunks_exact(dy_len).zip(dxs.chunks_exact_mut(in_len)) {
        for (dst, src) in dyw.chunks_exact_mut(s.wp).zip(dy.chunks_exact(s.wo)) {
            dst[..s.wo].copy_from_slice(src);
            dst[s.wo..].fill(0.0);
        }
        gemm::gemm_rows(wt, &dyw, &offs, wide, 1.0, 0.0, &mut dcol, wide);
        buf.fill(0.0);
        for (&off, row) in s.offs.iter().zip(dcol.chunks_exact(wide)) {
            buf[off..off + wide].iter_mut().zip(row).for_each(|(d, &v)| *d += v);
        }
        for (c, plane) in dx.chunks_exact_mut(s.h * s.w).enumerate() {
            let src = &buf[c * s.hp * s.wp..];
            for (y, row) in plane.chunks_exact_mut(s.w).enumerate() {
                row.copy_from_slice(&src[(y + s.p) * s.wp + s.p..][..s.w]);
            }
        }
    }
}

/// Weight-gradient partials: for each group of GROUP images in the chunk (first image index `n0`
/// a multiple of GROUP), its dW [co, ci·kh·kw] into the matching wlen-float slot of `parts`.
/// With `threads` > 1 each group's taps are split over that many threads.
pub(super) fn weight_partials(s: &Shifted, xs: &[f32], dys: &[f32], co: usize, parts: &mut [f32], threads: usize) {
    let (in_len, wide, frame) = (s.ci * s.h * s.w, s.wide(), s.frame());
    let dy_len = co * s.ho * s.wo;
    let wlen = co * s.offs.len();
    let mut bufs = vec![0f32; GROUP * frame];
    let mut dyw = vec![0f32; GROUP * co * wide];
    let images = xs.len() / in_len;
    for (gi, part) in parts.chunks_exact_mut(wlen).enumerate() {
        let first = gi * GROUP;
        let count = GROUP.min(images - first);
        for j in 0..count {
            s.pad(&xs[(first + j) * in_len..][..in_len], &mut bufs[j * frame..][..frame]);
            let dy = &dys[(first + j) * dy_len..][..dy_len];
            let wide_dy = &mut dyw[j * co * wide..][..co * wide];
            for (dst, src) in wide_dy.chunks_exact_mut(s.wp).zip(dy.chunks_exact(s.wo)) {
                dst[..s.wo].copy_from_slice(src);
                dst[s.wo..].fill(0.0);
            }
        }
        let a_rows: Vec<&[f32]> = (0..co).map(|o| &dyw[o * wide..]).collect();
        let b_rows: Vec<&[f32]> = s.offs.iter().map(|&off| &bufs[off..]).collect();
        let segs = Segs { count, len: wide, a_step: co * wide, b_step: frame };
        let taps = s.offs.len();
        if threads <= 1 {
            gemm::dots(&a_rows, &b_rows, segs, 1.0, 0.0, part, taps);
            continue;
        }
        // Few groups: the taps are split over threads instead (each dot is summed the same way).
        let per = taps.div_ceil(threads);
        let starts: Vec<usize> = (0..taps).step_by(per).collect();
        let done: Vec<Mutex<Vec<f32>>> = starts.iter().map(|_| Mutex::new(Vec::new())).collect();
        workers::run(starts.len(), |t| {
            let b_rows = &b_rows[starts[t]..(starts[t] + per).min(taps)];
            let mut c = vec![0f32; co * b_rows.len()];
            gemm::dots(&a_rows, b_rows, segs, 1.0, 0.0, &mut c, b_rows.len());
            *done[t].lock().unwrap_or_else(|p| p.into_inner()) = c;
        });
        let cols = starts.into_iter().zip(done.into_iter().map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner())));
        for (t0, c) in cols {
            let width = c.len() / co;
            for (dst, src) in part.chunks_exact_mut(taps).zip(c.chunks_exact(width)) {
                dst[t0..t0 + width].copy_from_slice(src);
            }
        }
    }
}
