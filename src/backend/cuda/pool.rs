//! Pooling wrappers: kernels/pool.cu, CPU reference src/backend/cpu/pool.rs (k×k windows, stride s,
//! no padding, floor mode). The backward kernels gather (no atomics), so every result is deterministic
//! and the max/avg backward sums are bit-identical to the CPU's.

use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

use super::{Gpu, GpuBuf, GpuTensor};

/// The argmax of [`Gpu::max_pool2d_forward`]: per output element, the flat index into x of the value it
/// took, plus the pooling geometry that produced it (the gather backward needs k and the stride).
pub struct GpuArgmax {
    pub buf: GpuBuf<u32>,
    /// The forward input's [N, C, H, W].
    pub x_shape: Vec<usize>,
    pub k: usize,
    pub stride: usize,
}

/// A checked pooling geometry in the kernels' parameter types.
struct Geometry {
    planes: u64,
    h: u32,
    w: u32,
    ho: u32,
    wo: u32,
    k: u32,
    s: u32,
}

impl Geometry {
    fn new(what: &str, x_shape: &[usize], k: usize, stride: usize) -> Result<Geometry> {
        ensure!(x_shape.len() == 4, "{what}: input shape must be [N, C, H, W], got {x_shape:?}");
        ensure!(k >= 1 && stride >= 1, "{what}: window {k} and stride {stride} must be at least 1");
        let (h, w) = (x_shape[2], x_shape[3]);
        ensure!(h >= k && w >= k, "{what}: window {k}x{k} does not fit the input {h}x{w}");
        ensure!(h <= u32::MAX as usize && w <= u32::MAX as usize, "{what}: input {h}x{w} too large");
        let (ho, wo) = ((h - k) / stride + 1, (w - k) / stride + 1);
        Ok(Geometry {
            planes: (x_shape[0] * x_shape[1]) as u64,
            h: h as u32,
            w: w as u32,
            ho: ho as u32,
            wo: wo as u32,
            k: k as u32,
            s: stride as u32,
        })
    }
    fn y_shape(&self, x_shape: &[usize]) -> Vec<usize> {
        vec![x_shape[0], x_shape[1], self.ho as usize, self.wo as usize]
    }
}

impl Gpu {
    /// Uploads an argmax (e.g. the CPU reference's) for `max_pool2d_backward`.
    pub fn upload_argmax(&self, argmax: &[u32], x_shape: &[usize], k: usize, stride: usize) -> Result<GpuArgmax> {
        let mut buf = self.buffer_of::<u32>(argmax.len())?;
        self.write_slice(argmax, &mut buf)?;
        Ok(GpuArgmax { buf, x_shape: x_shape.to_vec(), k, stride })
    }

    pub fn download_argmax(&self, argmax: &GpuArgmax) -> Result<Vec<u32>> {
        self.download_vec(&argmax.buf)
    }

    /// k×k max pooling: y [N, C, Ho, Wo] and the argmax (first maximum on ties, NaN wins), into
    /// existing buffers; `argmax` takes this call's geometry.
    pub(super) fn max_pool2d_forward_into(
        &self,
        x: &GpuTensor,
        k: usize,
        stride: usize,
        y: &mut GpuTensor,
        argmax: &mut GpuArgmax,
    ) -> Result<()> {
        let g = Geometry::new("max_pool2d_forward", &x.shape, k, stride)?;
        let y_shape = g.y_shape(&x.shape);
        ensure!(y.shape == y_shape, "max_pool2d_forward: y shape {:?}, expected {y_shape:?}", y.shape);
        ensure!(
            argmax.buf.len() == y.numel(),
            "max_pool2d_forward: argmax has {} entries for y {y_shape:?}",
            argmax.buf.len()
        );
        ensure!(
            x.numel() <= u32::MAX as usize,
            "max_pool2d_forward: {} input elements overflow u32 indices",
            x.numel()
        );
        (argmax.x_shape, argmax.k, argmax.stride) = (x.shape.clone(), k, stride);
        if y.numel() == 0 {
            return Ok(());
        }
        self.work(0.0, 4.0 * (x.numel() + 2 * y.numel()) as f64);
        self.launch("max_pool2d_forward", self.cfg(y.numel()), |l| {
            l.arg(&mut *y.buf).arg(&mut *argmax.buf).arg(&*x.buf).arg(&g.planes);
            l.arg(&g.h).arg(&g.w).arg(&g.ho).arg(&g.wo).arg(&g.k).arg(&g.s);
        })
    }
    pub fn max_pool2d_forward(&self, x: &GpuTensor, k: usize, stride: usize) -> Result<(GpuTensor, GpuArgmax)> {
        let g = Geometry::new("max_pool2d_forward", &x.shape, k, stride)?;
        let mut y = self.empty(&g.y_shape(&x.shape))?;
        // The kernel writes every entry before it is read.
        let buf = self.buffer_of::<u32>(y.numel())?;
        let mut argmax = GpuArgmax { buf, x_shape: x.shape.clone(), k, stride };
        self.max_pool2d_forward_into(x, k, stride, &mut y, &mut argmax)?;
        Ok((y, argmax))
    }

    /// dx [x_shape]: each dy element routed to its argmax, summed where overlapping windows (stride < k)
    /// chose the same element; zero elsewhere.
    pub(super) fn max_pool2d_backward_into(
        &self,
        dy: &GpuTensor,
        argmax: &GpuArgmax,
        x_shape: &[usize],
        dx: &mut GpuTensor,
    ) -> Result<()> {
        ensure!(
            argmax.x_shape == x_shape,
            "max_pool2d_backward: argmax is for x {:?}, not {x_shape:?}",
            argmax.x_shape
        );
        let g = Geometry::new("max_pool2d_backward", x_shape, argmax.k, argmax.stride)?;
        let y_shape = g.y_shape(x_shape);
        ensure!(dy.shape == y_shape, "max_pool2d_backward: dy shape {:?}, expected {y_shape:?}", dy.shape);
        ensure!(
            argmax.buf.len() == dy.numel(),
            "max_pool2d_backward: argmax has {} entries for dy {y_shape:?}",
            argmax.buf.len()
        );
        ensure!(dx.shape == x_shape, "max_pool2d_backward: dx shape {:?}, expected {x_shape:?}", dx.shape);
        if dx.numel() == 0 {
            return Ok(());
        }
        self.work(0.0, 4.0 * (2 * dy.numel() + dx.numel()) as f64);
        self.launch("max_pool2d_backward", self.cfg(dx.numel()), |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&*argmax.buf).arg(&g.planes);
            l.arg(&g.h).arg(&g.w).arg(&g.ho).arg(&g.wo).arg(&g.k).arg(&g.s);
        })
    }
    pub fn max_pool2d_backward(&self, dy: &GpuTensor, argmax: &GpuArgmax, x_shape: &[usize]) -> Result<GpuTensor> {
        let mut dx = self.empty(x_shape)?;
        self.max_pool2d_backward_into(dy, argmax, x_shape, &mut dx)?;
        Ok(dx)
    }

    /// k×k average pooling: y = mean of each window.
    pub(super) fn avg_pool2d_forward_into(
        &self,
        x: &GpuTensor,
        k: usize,
        stride: usize,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let g = Geometry::new("avg_pool2d_forward", &x.shape, k, stride)?;
        let y_shape = g.y_shape(&x.shape);
        ensure!(y.shape == y_shape, "avg_pool2d_forward: y shape {:?}, expected {y_shape:?}", y.shape);
        if y.numel() == 0 {
            return Ok(());
        }
        self.launch("avg_pool2d_forward", self.cfg(y.numel()), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&g.planes);
            l.arg(&g.h).arg(&g.w).arg(&g.ho).arg(&g.wo).arg(&g.k).arg(&g.s);
        })
    }
    pub fn avg_pool2d_forward(&self, x: &GpuTensor, k: usize, stride: usize) -> Result<GpuTensor> {
        let g = Geometry::new("avg_pool2d_forward", &x.shape, k, stride)?;
        let mut y = self.empty(&g.y_shape(&x.shape))?;
        self.avg_pool2d_forward_into(x, k, stride, &mut y)?;
        Ok(y)
    }

    /// dx [x_shape]: each element receives dy / (k·k) from every window covering it.
    pub(super) fn avg_pool2d_backward_into(
        &self,
        dy: &GpuTensor,
        x_shape: &[usize],
        k: usize,
        stride: usize,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let g = Geometry::new("avg_pool2d_backward", x_shape, k, stride)?;
        let y_shape = g.y_shape(x_shape);
        ensure!(dy.shape == y_shape, "avg_pool2d_backward: dy shape {:?}, expected {y_shape:?}", dy.shape);
        ensure!(dx.shape == x_shape, "avg_pool2d_backward: dx shape {:?}, expected {x_shape:?}", dx.shape);
        if dx.numel() == 0 {
            return Ok(());
        }
        self.launch("avg_pool2d_backward", self.cfg(dx.numel()), |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&g.planes);
            l.arg(&g.h).arg(&g.w).arg(&g.ho).arg(&g.wo).arg(&g.k).arg(&g.s);
        })
    }
    pub fn avg_pool2d_backward(&self, dy: &GpuTensor, x_shape: &[usize], k: usize, stride: usize) -> Result<GpuTensor> {
        let mut dx = self.empty(x_shape)?;
        self.avg_pool2d_backward_into(dy, x_shape, k, stride, &mut dx)?;
        Ok(dx)
    }

    /// Mean over all spatial positions: x [N, C, H, W] → y [N, C] (one warp per plane).
    pub(super) fn global_avg_pool_forward_into(&self, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        let (planes, hw) = global_dims("global_avg_pool_forward", &x.shape)?;
        ensure!(y.shape == x.shape[..2], "global_avg_pool_forward: y shape {:?} for x {:?}", y.shape, x.shape);
        if planes == 0 {
            return Ok(());
        }
        let (planes64, hw64) = (planes as u64, hw as u64);
        self.launch("global_avg_pool_forward", self.cfg(planes.saturating_mul(32)), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&planes64).arg(&hw64);
        })
    }
    pub fn global_avg_pool_forward(&self, x: &GpuTensor) -> Result<GpuTensor> {
        global_dims("global_avg_pool_forward", &x.shape)?;
        let mut y = self.empty(&x.shape[..2])?;
        self.global_avg_pool_forward_into(x, &mut y)?;
        Ok(y)
    }

    /// dx[n, c, y, x] = dy[n, c] / (H·W).
    pub(super) fn global_avg_pool_backward_into(
        &self,
        dy: &GpuTensor,
        x_shape: &[usize],
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let (planes, hw) = global_dims("global_avg_pool_backward", x_shape)?;
        ensure!(dy.shape == x_shape[..2], "global_avg_pool_backward: dy shape {:?} for x_shape {x_shape:?}", dy.shape);
        ensure!(dx.shape == x_shape, "global_avg_pool_backward: dx shape {:?}, expected {x_shape:?}", dx.shape);
        if dx.numel() == 0 {
            return Ok(());
        }
        let (planes64, hw64) = (planes as u64, hw as u64);
        self.launch("global_avg_pool_backward", self.cfg(dx.numel()), |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&planes64).arg(&hw64);
        })
    }
    pub fn global_avg_pool_backward(&self, dy: &GpuTensor, x_shape: &[usize]) -> Result<GpuTensor> {
        let mut dx = self.empty(x_shape)?;
        self.global_avg_pool_backward_into(dy, x_shape, &mut dx)?;
        Ok(dx)
    }
}

/// (N·C planes, H·W) of a 4-d input with non-empty planes.
fn global_dims(what: &str, x_shape: &[usize]) -> Result<(usize, usize)> {
    ensure!(x_shape.len() == 4, "{what}: input shape must be [N, C, H, W], got {x_shape:?}");
    let hw = x_shape[2] * x_shape[3];
    ensure!(hw > 0, "{what}: empty {}x{} planes", x_shape[2], x_shape[3]);
    Ok((x_shape[0] * x_shape[1], hw))
}
