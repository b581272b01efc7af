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
//! All sums are accumulated in f64.

use super::elementwise::add_channel_bias;
use crate::Tensor;

/// Stride and zero padding of a 2-d convolution (the same in both spatial dimensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: usize,
    pub padding: usize,
}

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

fn shape4(shape: &[usize], what: &str) -> (usize, usize, usize, usize) {
    assert_eq!(shape.len(), 4, "{what} shape must be 4-d, got {shape:?}");
    (shape[0], shape[1], shape[2], shape[3])
}

/// y = conv(x, w) + b. x: [N, Ci, H, W], w: [Co, Ci, kh, kw], b: [Co] → y: [N, Co, Ho, Wo].
pub fn conv2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
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
pub fn conv2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
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
pub fn conv2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
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

/// y = conv_transpose(x, w) + b. x: [N, Ci, H, W], w: [Ci, Co, kh, kw] → y: [N, Co, Ho, Wo] with
/// Ho = (H − 1)·s − 2p + kh.
///
/// The scatter in the module doc is the convolution's data gradient: reading x as a "dy" of a
/// convolution with Co_conv = Ci and Ci_conv = Co (whose [Co_conv, Ci_conv, kh, kw] weight layout is
/// exactly w's [Ci, Co, kh, kw]), y = conv2d_backward_data(x, w, [N, Co, Ho, Wo]).
/// (The convolution of an Ho-sized input gives back H positions: (Ho + 2p − kh)/s + 1 = H.)
pub fn conv_transpose2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (wci, co, kh, kw) = w.dims4();
    assert_eq!(wci, ci, "conv_transpose weight {:?} expects {wci} input channels, x {:?} has {ci}", w.shape(), x.shape());
    let (ho, wo) = conv_transpose2d_out_hw(h, wd, kh, kw, cfg);
    let y = conv2d_backward_data(x, w, &[n, co, ho, wo], cfg);
    match b {
        Some(b) => {
            assert_eq!(b.shape(), [co], "conv_transpose bias shape {:?} for {co} output channels", b.shape());
            add_channel_bias(&y, b)
        }
        None => y,
    }
}

/// dx of the transposed convolution: dx[n, ci, iy, ix] = Σ_{co, ky, kx} dy[n, co, iy·s + ky − p, ix·s + kx − p] · w[ci, co, ky, kx],
/// which is the plain convolution of dy with w read as [Co_conv = Ci, Ci_conv = Co, kh, kw].
pub fn conv_transpose2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = shape4(x_shape, "conv_transpose input");
    let (wci, co, kh, kw) = w.dims4();
    assert_eq!(wci, ci, "conv_transpose weight {:?} expects {wci} input channels, x_shape {x_shape:?} has {ci}", w.shape());
    let (ho, wo) = conv_transpose2d_out_hw(h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, ho, wo], "conv_transpose dy shape {:?} for x_shape {x_shape:?}", dy.shape());
    conv2d_forward(dy, w, None, cfg)
}

/// dw of the transposed convolution: dw[ci, co, ky, kx] = Σ_{n, iy, ix} x[n, ci, iy, ix] · dy[n, co, iy·s + ky − p, ix·s + kx − p],
/// which is the convolution's weight gradient with x in the role of dy and dy in the role of x.
pub fn conv_transpose2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Tensor {
    let (n, ci, h, wd) = x.dims4();
    let (wci, co, kh, kw) = shape4(w_shape, "conv_transpose weight");
    assert_eq!(wci, ci, "conv_transpose w_shape {w_shape:?} expects {wci} input channels, x {:?} has {ci}", x.shape());
    let (ho, wo) = conv_transpose2d_out_hw(h, wd, kh, kw, cfg);
    assert_eq!(dy.shape(), [n, co, ho, wo], "conv_transpose dy shape {:?} for x {:?}", dy.shape(), x.shape());
    conv2d_backward_weight(x, dy, w_shape, cfg)
}
