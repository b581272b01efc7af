//! 2-d convolution wrappers: kernels/conv.cu (implicit GEMM, tile loop in kernels/igemm.cuh), CPU
//! reference src/backend/cpu/conv.rs (same names, same shapes; w is [Co, Ci, kh, kw], and
//! [Ci, Co, kh, kw] for the transposed convolution).
//!
//! Three kernels serve all six ops, as on the CPU: the transposed convolution's forward is the
//! convolution's data gradient (plus bias), its data gradient is the convolution's forward, its
//! weight gradient the convolution's weight gradient with x and dy swapped. The weight gradient
//! splits the batch·Ho·Wo reduction over blocks (the split depends on the shapes only), each
//! writing a partial dw, then adds the partials in a fixed order: deterministic, no atomics.

use anyhow::{ensure, Result};
use cudarc::driver::{DeviceRepr, PushKernelArg};

use super::linear::{tile_cfg, NoiseArgs, MAX_ELEMS, TILE};
use super::{Gpu, GpuTensor};
use crate::backend::cpu::conv::Conv2dCfg;
use crate::noise::NoiseKey;

/// Blocks the weight gradient aims for (tiles × splits) before it stops splitting.
const TARGET_BLOCKS: usize = 512;
/// Least reduction length per split of the weight gradient.
const MIN_K_PER_SPLIT: usize = 256;
/// Depth of a k slab (kernels/igemm.cuh MTC_BK); splits are whole slabs.
const SLAB: usize = 16;

/// One convolution's geometry: kernels/conv.cu `MtcConvGeom` (same layout). x: [n, ci, h, w],
/// weight [co, ci, kh, kw], y: [n, co, ho, wo].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ConvGeom {
    n: i32,
    ci: i32,
    h: i32,
    w: i32,
    co: i32,
    kh: i32,
    kw: i32,
    ho: i32,
    wo: i32,
    stride: i32,
    pad: i32,
}

// SAFETY: plain #[repr(C)] data with the layout of the C struct MtcConvGeom (11 ints).
unsafe impl DeviceRepr for ConvGeom {}

fn dims4(op: &str, what: &str, shape: &[usize]) -> Result<[usize; 4]> {
    ensure!(shape.len() == 4, "{op}: {what} must be 4-d, got shape {shape:?}");
    Ok([shape[0], shape[1], shape[2], shape[3]])
}

impl ConvGeom {
    /// The convolution of an input `x` [n, ci, h, w] with a weight of shape `w` read as [co, ci, kh, kw].
    fn new(op: &str, x: &[usize], w: &[usize], cfg: Conv2dCfg) -> Result<ConvGeom> {
        let [n, ci, h, wd] = dims4(op, "input", x)?;
        let [co, wci, kh, kw] = dims4(op, "weight", w)?;
        ensure!(wci == ci, "{op}: weight {w:?} expects {wci} input channels, the input {x:?} has {ci}");
        let (s, p) = (cfg.stride, cfg.padding);
        ensure!(s >= 1, "{op}: stride must be at least 1");
        ensure!(kh >= 1 && kw >= 1, "{op}: kernel {kh}x{kw} is empty");
        ensure!(
            h + 2 * p >= kh && wd + 2 * p >= kw,
            "{op}: kernel {kh}x{kw} does not fit the padded input {h}x{wd} (padding {p})"
        );
        let (ho, wo) = ((h + 2 * p - kh) / s + 1, (wd + 2 * p - kw) / s + 1);
        let big = [n * ci * h * wd, co * ci * kh * kw, n * co * ho * wo, s, p];
        ensure!(big.iter().all(|&v| v <= MAX_ELEMS), "{op}: input {x:?} / weight {w:?} too large for the kernels");
        let i = |v: usize| v as i32;
        Ok(ConvGeom {
            n: i(n),
            ci: i(ci),
            h: i(h),
            w: i(wd),
            co: i(co),
            kh: i(kh),
            kw: i(kw),
            ho: i(ho),
            wo: i(wo),
            stride: i(s),
            pad: i(p),
        })
    }
    fn in_shape(&self) -> [usize; 4] {
        [self.n, self.ci, self.h, self.w].map(|v| v as usize)
    }
    fn out_shape(&self) -> [usize; 4] {
        [self.n, self.co, self.ho, self.wo].map(|v| v as usize)
    }
}

/// Output (Ho, Wo) of a transposed convolution of `x` [N, Ci, H, W] with w [Ci, Co, kh, kw]:
/// (H − 1)·s − 2p + kh (`cpu::conv::conv_transpose2d_out_hw`, checked instead of asserted).
fn transpose_out_hw(op: &str, x: &[usize], w: &[usize], cfg: Conv2dCfg) -> Result<(usize, usize)> {
    let [_, _, h, wd] = dims4(op, "input", x)?;
    let [_, _, kh, kw] = dims4(op, "weight", w)?;
    let (s, p) = (cfg.stride, cfg.padding);
    ensure!(s >= 1 && h >= 1 && wd >= 1 && kh >= 1 && kw >= 1, "{op}: stride {s}, input {x:?}, weight {w:?}: empty");
    let (full_h, full_w) = ((h - 1) * s + kh, (wd - 1) * s + kw);
    ensure!(full_h > 2 * p && full_w > 2 * p, "{op}: padding {p} crops away the whole {full_h}x{full_w} output");
    Ok((full_h - 2 * p, full_w - 2 * p))
}

/// (splits, reduction length per split) of a weight gradient with an m×n result and depth k.
fn weight_splits(m: usize, n: usize, k: usize) -> (usize, usize) {
    if k == 0 {
        return (1, SLAB);
    }
    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    let splits = k.div_ceil(MIN_K_PER_SPLIT).clamp(1, (TARGET_BLOCKS / tiles).max(1));
    let per = k.div_ceil(splits).div_ceil(SLAB) * SLAB;
    (k.div_ceil(per), per)
}

fn check_bias(op: &str, bias: Option<&GpuTensor>, channels: usize) -> Result<()> {
    if let Some(b) = bias {
        ensure!(b.shape == [channels], "{op}: bias shape {:?} for {channels} output channels", b.shape);
    }
    Ok(())
}

impl Gpu {
    /// y = conv(x, w) (+ bias), optionally with fused weight noise (`conv2d_forward(_noisy)`).
    #[allow(clippy::too_many_arguments)]
    fn conv_forward_launch(
        &self,
        op: &'static str,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        g: ConvGeom,
        noise: Option<NoiseArgs>,
        y: &mut GpuTensor,
    ) -> Result<()> {
        check_bias(op, bias, g.co as usize)?;
        ensure!(x.shape == g.in_shape(), "{op}: input shape {:?}, expected {:?}", x.shape, g.in_shape());
        ensure!(y.shape == g.out_shape(), "{op}: output shape {:?}, expected {:?}", y.shape, g.out_shape());
        if y.numel() == 0 {
            return Ok(());
        }
        let cfg = tile_cfg(op, g.co as usize, (g.n * g.ho * g.wo) as usize, 1)?;
        let has_bias = i32::from(bias.is_some());
        let bias_buf = bias.map_or(&*w.buf, |t| &*t.buf); // never read without a bias
        self.work(2.0 * y.numel() as f64 * (w.numel() / g.co as usize) as f64, 0.0);
        match noise {
            None => self.launch("conv2d_forward", cfg, |l| {
                l.arg(&mut *y.buf).arg(&*x.buf).arg(&*w.buf).arg(bias_buf).arg(&has_bias).arg(&g);
            }),
            Some(nz) => self.launch("conv2d_forward_noisy", cfg, |l| {
                l.arg(&mut *y.buf).arg(&*x.buf).arg(&*w.buf).arg(bias_buf).arg(&has_bias).arg(&g).arg(&nz);
            }),
        }
    }

    /// dx = the data gradient of conv(·, w) at dy (+ bias[ci]): kernel `conv2d_backward_data`.
    fn conv_backward_data_launch(
        &self,
        op: &'static str,
        dy: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        g: ConvGeom,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        check_bias(op, bias, g.ci as usize)?;
        ensure!(dy.shape == g.out_shape(), "{op}: gradient shape {:?}, expected {:?}", dy.shape, g.out_shape());
        ensure!(dx.shape == g.in_shape(), "{op}: output shape {:?}, expected {:?}", dx.shape, g.in_shape());
        if dx.numel() == 0 {
            return Ok(());
        }
        let cfg = tile_cfg(op, g.ci as usize, (g.n * g.h * g.w) as usize, 1)?;
        let has_bias = i32::from(bias.is_some());
        let bias_buf = bias.map_or(&*w.buf, |t| &*t.buf);
        self.work(2.0 * dy.numel() as f64 * (w.numel() / g.co as usize) as f64, 0.0);
        self.launch("conv2d_backward_data", cfg, |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&*w.buf).arg(bias_buf).arg(&has_bias).arg(&g);
        })
    }

    /// dw = Σ over the batch and output positions of dy ⊗ windows of x: kernels
    /// `conv2d_backward_weight` (+ `conv2d_backward_weight_reduce` when split).
    fn conv_backward_weight_launch(
        &self,
        op: &'static str,
        dy: &GpuTensor,
        x: &GpuTensor,
        g: ConvGeom,
        dw: &mut GpuTensor,
    ) -> Result<()> {
        ensure!(dy.shape == g.out_shape(), "{op}: gradient shape {:?}, expected {:?}", dy.shape, g.out_shape());
        ensure!(x.shape == g.in_shape(), "{op}: input shape {:?}, expected {:?}", x.shape, g.in_shape());
        if dw.numel() == 0 {
            return Ok(());
        }
        let (m, n, k) = (g.co as usize, dw.numel() / g.co as usize, (g.n * g.ho * g.wo) as usize);
        let (splits, per) = weight_splits(m, n, k);
        let cfg = tile_cfg(op, m, n, splits)?;
        let per32 = per as i32;
        self.work(2.0 * (m * n * k) as f64, 0.0);
        if splits == 1 {
            return self.launch("conv2d_backward_weight", cfg, |l| {
                l.arg(&mut *dw.buf).arg(&*dy.buf).arg(&*x.buf).arg(&g).arg(&per32);
            });
        }
        let mut part = self.empty(&[splits, m * n])?;
        self.launch("conv2d_backward_weight", cfg, |l| {
            l.arg(&mut *part.buf).arg(&*dy.buf).arg(&*x.buf).arg(&g).arg(&per32);
        })?;
        let (splits32, len32) = (splits as i32, (m * n) as i32);
        self.launch("conv2d_backward_weight_reduce", self.cfg(m * n), |l| {
            l.arg(&mut *dw.buf).arg(&*part.buf).arg(&splits32).arg(&len32);
        })
    }

    /// y = conv(x, w) + b. x: [N, Ci, H, W], w: [Co, Ci, kh, kw], b: [Co] → y: [N, Co, Ho, Wo].
    pub fn conv2d_forward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        cfg: Conv2dCfg,
    ) -> Result<GpuTensor> {
        let g = ConvGeom::new("conv2d_forward", &x.shape, &w.shape, cfg)?;
        let mut y = self.empty(&g.out_shape())?;
        self.conv_forward_launch("conv2d_forward", x, w, b, g, None, &mut y)?;
        Ok(y)
    }

    /// y = conv(x, w + ε_w) + (bias + ε_b) without a perturbed copy of θ: ε_w[i] = key.uniform(w_offset + i, b)
    /// for the flat index i of w, ε_b[co] = key.uniform(b_offset + co, b), drawn as the kernel reads them
    /// (equals `conv2d_forward(x, key.perturb(w, b, w_offset), key.perturb(bias, b, b_offset))`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv2d_forward_noisy_into(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        cfg: Conv2dCfg,
        key: NoiseKey,
        b: f32,
        w_offset: u32,
        b_offset: u32,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let op = "conv2d_forward_noisy";
        let g = ConvGeom::new(op, &x.shape, &w.shape, cfg)?;
        let noise = NoiseArgs::new(op, key, b, w, w_offset, bias, b_offset, self.captured_step_ptr())?;
        self.conv_forward_launch(op, x, w, bias, g, Some(noise), y)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_forward_noisy(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        cfg: Conv2dCfg,
        key: NoiseKey,
        b: f32,
        w_offset: u32,
        b_offset: u32,
    ) -> Result<GpuTensor> {
        let g = ConvGeom::new("conv2d_forward_noisy", &x.shape, &w.shape, cfg)?;
        let mut y = self.empty(&g.out_shape())?;
        self.conv2d_forward_noisy_into(x, w, bias, cfg, key, b, w_offset, b_offset, &mut y)?;
        Ok(y)
    }

    /// dx of the convolution; the input shape is `dx`'s. Pixels no window reads get 0.
    pub(super) fn conv2d_backward_data_into(
        &self,
        dy: &GpuTensor,
        w: &GpuTensor,
        cfg: Conv2dCfg,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let g = ConvGeom::new("conv2d_backward_data", &dx.shape, &w.shape, cfg)?;
        self.conv_backward_data_launch("conv2d_backward_data", dy, w, None, g, dx)
    }
    pub fn conv2d_backward_data(
        &self,
        dy: &GpuTensor,
        w: &GpuTensor,
        x_shape: &[usize],
        cfg: Conv2dCfg,
    ) -> Result<GpuTensor> {
        let mut dx = self.empty(x_shape)?;
        self.conv2d_backward_data_into(dy, w, cfg, &mut dx)?;
        Ok(dx)
    }

    /// dw of the convolution; the weight shape is `dw`'s.
    pub(super) fn conv2d_backward_weight_into(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        cfg: Conv2dCfg,
        dw: &mut GpuTensor,
    ) -> Result<()> {
        let g = ConvGeom::new("conv2d_backward_weight", &x.shape, &dw.shape, cfg)?;
        self.conv_backward_weight_launch("conv2d_backward_weight", dy, x, g, dw)
    }
    pub fn conv2d_backward_weight(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        w_shape: &[usize],
        cfg: Conv2dCfg,
    ) -> Result<GpuTensor> {
        let mut dw = self.empty(w_shape)?;
        self.conv2d_backward_weight_into(dy, x, cfg, &mut dw)?;
        Ok(dw)
    }

    /// The convolution whose data gradient is the transposed convolution of `x` [N, Ci, H, W] with
    /// w [Ci, Co, kh, kw]: input [N, Co, Ho, Wo], weight w read as [Co_conv = Ci, Ci_conv = Co, kh, kw].
    fn transpose_geom(op: &str, x: &[usize], w: &[usize], cfg: Conv2dCfg) -> Result<ConvGeom> {
        let [n, ci, h, wd] = dims4(op, "input", x)?;
        let [wci, co, _, _] = dims4(op, "weight", w)?;
        ensure!(wci == ci, "{op}: weight {w:?} expects {wci} input channels, the input {x:?} has {ci}");
        let (ho, wo) = transpose_out_hw(op, x, w, cfg)?;
        let g = ConvGeom::new(op, &[n, co, ho, wo], w, cfg)?;
        ensure!(g.out_shape() == [n, ci, h, wd], "{op}: internal shape mismatch {:?} vs {x:?}", g.out_shape());
        Ok(g)
    }

    /// y = conv_transpose(x, w) + b. x: [N, Ci, H, W], w: [Ci, Co, kh, kw], b: [Co] → y: [N, Co, Ho, Wo],
    /// Ho = (H − 1)·s − 2p + kh: the convolution's data gradient with the bias fused.
    pub(super) fn conv_transpose2d_forward_into(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        cfg: Conv2dCfg,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let op = "conv_transpose2d_forward";
        let g = Self::transpose_geom(op, &x.shape, &w.shape, cfg)?;
        ensure!(y.shape == g.in_shape(), "{op}: output shape {:?}, expected {:?}", y.shape, g.in_shape());
        self.conv_backward_data_launch(op, x, w, b, g, y)
    }
    pub fn conv_transpose2d_forward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        cfg: Conv2dCfg,
    ) -> Result<GpuTensor> {
        let g = Self::transpose_geom("conv_transpose2d_forward", &x.shape, &w.shape, cfg)?;
        let mut y = self.empty(&g.in_shape())?;
        self.conv_transpose2d_forward_into(x, w, b, cfg, &mut y)?;
        Ok(y)
    }

    /// dx of the transposed convolution (the input shape is `dx`'s): the convolution of dy with w.
    pub(super) fn conv_transpose2d_backward_data_into(
        &self,
        dy: &GpuTensor,
        w: &GpuTensor,
        cfg: Conv2dCfg,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let op = "conv_transpose2d_backward_data";
        let g = Self::transpose_geom(op, &dx.shape, &w.shape, cfg)?;
        ensure!(dy.shape == g.in_shape(), "{op}: gradient shape {:?}, expected {:?}", dy.shape, g.in_shape());
        self.conv_forward_launch(op, dy, w, None, g, None, dx)
    }
    pub fn conv_transpose2d_backward_data(
        &self,
        dy: &GpuTensor,
        w: &GpuTensor,
        x_shape: &[usize],
        cfg: Conv2dCfg,
    ) -> Result<GpuTensor> {
        let mut dx = self.empty(x_shape)?;
        self.conv_transpose2d_backward_data_into(dy, w, cfg, &mut dx)?;
        Ok(dx)
    }

    /// dw [Ci, Co, kh, kw] of the transposed convolution (the weight shape is `dw`'s): the
    /// convolution's weight gradient with x in the role of dy and dy in the role of x.
    pub(super) fn conv_transpose2d_backward_weight_into(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        cfg: Conv2dCfg,
        dw: &mut GpuTensor,
    ) -> Result<()> {
        let op = "conv_transpose2d_backward_weight";
        let g = Self::transpose_geom(op, &x.shape, &dw.shape, cfg)?;
        self.conv_backward_weight_launch(op, x, dy, g, dw)
    }
    pub fn conv_transpose2d_backward_weight(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        w_shape: &[usize],
        cfg: Conv2dCfg,
    ) -> Result<GpuTensor> {
        let mut dw = self.empty(w_shape)?;
        self.conv_transpose2d_backward_weight_into(dy, x, cfg, &mut dw)?;
        Ok(dw)
    }
}
