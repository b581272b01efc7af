//! Upsampling wrappers: kernels/upsample.cu, CPU reference src/backend/cpu/upsample.rs. Nearest by an
//! integer scale and bilinear (align_corners=False) resizing, NCHW. The backward passes gather (no
//! atomics) and add their terms in the CPU loops' order, so all four ops reproduce the CPU bit for bit.

use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

use super::{Gpu, GpuTensor};

/// (N·C, H, W) of a 4-d shape with each of H, W within u32 and non-empty.
fn planes_hw(what: &str, shape: &[usize]) -> Result<(u64, u32, u32)> {
    ensure!(shape.len() == 4, "{what}: shape must be [N, C, H, W], got {shape:?}");
    let (h, w) = (shape[2], shape[3]);
    ensure!(h >= 1 && w >= 1, "{what}: empty {h}x{w} planes");
    ensure!(h <= u32::MAX as usize && w <= u32::MAX as usize, "{what}: {h}x{w} planes too large");
    Ok(((shape[0] * shape[1]) as u64, h as u32, w as u32))
}

impl Gpu {
    /// y[n, c, oy, ox] = x[n, c, oy / scale, ox / scale]: [N, C, H, W] → [N, C, H·scale, W·scale].
    pub(super) fn upsample_nearest_forward_into(&self, x: &GpuTensor, scale: usize, y: &mut GpuTensor) -> Result<()> {
        ensure!(scale >= 1, "upsample_nearest_forward: scale must be at least 1");
        let (planes, h, w) = planes_hw("upsample_nearest_forward", &x.shape)?;
        let want = [x.shape[0], x.shape[1], x.shape[2] * scale, x.shape[3] * scale];
        ensure!(y.shape == want, "upsample_nearest_forward: y shape {:?}, expected {want:?}", y.shape);
        ensure!(
            want[2] <= u32::MAX as usize && want[3] <= u32::MAX as usize,
            "upsample_nearest_forward: output too large"
        );
        if y.numel() == 0 {
            return Ok(());
        }
        let s = scale as u32;
        self.work(0.0, 4.0 * (x.numel() + y.numel()) as f64);
        self.launch("upsample_nearest_forward", self.cfg(y.numel()), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&planes).arg(&h).arg(&w).arg(&s);
        })
    }
    pub fn upsample_nearest_forward(&self, x: &GpuTensor, scale: usize) -> Result<GpuTensor> {
        ensure!(scale >= 1, "upsample_nearest_forward: scale must be at least 1");
        planes_hw("upsample_nearest_forward", &x.shape)?;
        let mut y = self.empty(&[x.shape[0], x.shape[1], x.shape[2] * scale, x.shape[3] * scale])?;
        self.upsample_nearest_forward_into(x, scale, &mut y)?;
        Ok(y)
    }

    /// dx[n, c, iy, ix] = Σ of dy over its scale×scale block: dy [N, C, H·s, W·s] → dx [N, C, H, W].
    pub(super) fn upsample_nearest_backward_into(
        &self,
        dy: &GpuTensor,
        scale: usize,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        ensure!(scale >= 1, "upsample_nearest_backward: scale must be at least 1");
        planes_hw("upsample_nearest_backward", &dy.shape)?;
        let (ho, wo) = (dy.shape[2], dy.shape[3]);
        ensure!(
            ho % scale == 0 && wo % scale == 0,
            "upsample_nearest_backward: dy shape {:?} is not a multiple of scale {scale}",
            dy.shape
        );
        let want = [dy.shape[0], dy.shape[1], ho / scale, wo / scale];
        ensure!(dx.shape == want, "upsample_nearest_backward: dx shape {:?}, expected {want:?}", dx.shape);
        let (planes, h, w) = planes_hw("upsample_nearest_backward", &want)?;
        if dx.numel() == 0 {
            return Ok(());
        }
        let s = scale as u32;
        self.work(0.0, 4.0 * (dy.numel() + dx.numel()) as f64);
        self.launch("upsample_nearest_backward", self.cfg(dx.numel()), |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&planes).arg(&h).arg(&w).arg(&s);
        })
    }
    pub fn upsample_nearest_backward(&self, dy: &GpuTensor, scale: usize) -> Result<GpuTensor> {
        planes_hw("upsample_nearest_backward", &dy.shape)?;
        ensure!(scale >= 1, "upsample_nearest_backward: scale must be at least 1");
        let mut dx = self.empty(&[dy.shape[0], dy.shape[1], dy.shape[2] / scale, dy.shape[3] / scale])?;
        self.upsample_nearest_backward_into(dy, scale, &mut dx)?;
        Ok(dx)
    }

    /// Bilinear resize (align_corners=False): [N, C, H, W] → y [N, C, out_h, out_w] (y's shape gives the
    /// output size).
    pub(super) fn upsample_bilinear_forward_into(&self, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        let (planes, h, w) = planes_hw("upsample_bilinear_forward", &x.shape)?;
        let (_, ho, wo) = planes_hw("upsample_bilinear_forward", &y.shape)?;
        ensure!(y.shape[..2] == x.shape[..2], "upsample_bilinear_forward: y shape {:?} for x {:?}", y.shape, x.shape);
        if y.numel() == 0 {
            return Ok(());
        }
        self.launch("upsample_bilinear_forward", self.cfg(y.numel()), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&planes).arg(&h).arg(&w).arg(&ho).arg(&wo);
        })
    }
    pub fn upsample_bilinear_forward(&self, x: &GpuTensor, out_h: usize, out_w: usize) -> Result<GpuTensor> {
        planes_hw("upsample_bilinear_forward", &x.shape)?;
        let mut y = self.empty(&[x.shape[0], x.shape[1], out_h, out_w])?;
        self.upsample_bilinear_forward_into(x, &mut y)?;
        Ok(y)
    }

    /// dx [x_shape] of the bilinear resize: each dy[oy, ox] reaches its four source pixels with the
    /// forward's weights (gathered per dx element).
    pub(super) fn upsample_bilinear_backward_into(
        &self,
        dy: &GpuTensor,
        x_shape: &[usize],
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let (planes, h, w) = planes_hw("upsample_bilinear_backward", x_shape)?;
        let (_, ho, wo) = planes_hw("upsample_bilinear_backward", &dy.shape)?;
        ensure!(
            dy.shape[..2] == x_shape[..2],
            "upsample_bilinear_backward: dy shape {:?} for x_shape {x_shape:?}",
            dy.shape
        );
        ensure!(dx.shape == x_shape, "upsample_bilinear_backward: dx shape {:?}, expected {x_shape:?}", dx.shape);
        if dx.numel() == 0 {
            return Ok(());
        }
        self.launch("upsample_bilinear_backward", self.cfg(dx.numel()), |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&planes).arg(&h).arg(&w).arg(&ho).arg(&wo);
        })
    }
    pub fn upsample_bilinear_backward(&self, dy: &GpuTensor, x_shape: &[usize]) -> Result<GpuTensor> {
        let mut dx = self.empty(x_shape)?;
        self.upsample_bilinear_backward_into(dy, x_shape, &mut dx)?;
        Ok(dx)
    }
}
