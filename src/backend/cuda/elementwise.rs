//! Elementwise wrappers: kernels/elementwise.cu, CPU reference src/backend/cpu/elementwise.rs.

use anyhow::{ensure, Result};

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{channel_dims, Gpu, GpuTensor, BLOCK};

impl Gpu {
    fn binary_into(&self, name: &'static str, a: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(
            a.shape == b.shape && a.shape == y.shape,
            "{name}: shapes {:?}, {:?} -> {:?}",
            a.shape,
            b.shape,
            y.shape
        );
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.work(0.0, 12.0 * n as f64);
        self.launch(name, self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*a.buf).arg(&*b.buf).arg(&n64);
        })
    }

    fn binary(&self, name: &'static str, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&a.shape)?;
        self.binary_into(name, a, b, &mut y)?;
        Ok(y)
    }

    fn unary_into(&self, name: &'static str, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(x.shape == y.shape, "{name}: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.work(0.0, 8.0 * n as f64);
        self.launch(name, self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&n64);
        })
    }

    fn unary(&self, name: &'static str, x: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.unary_into(name, x, &mut y)?;
        Ok(y)
    }

    pub fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("add", a, b)
    }
    pub fn sub(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("sub", a, b)
    }
    pub fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("mul", a, b)
    }

    pub(super) fn scale_into(&self, x: &GpuTensor, s: f32, y: &mut GpuTensor) -> Result<()> {
        ensure!(x.shape == y.shape, "scale: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.work(0.0, 8.0 * n as f64);
        self.launch("scale", self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&s).arg(&n64);
        })
    }
    pub fn scale(&self, x: &GpuTensor, s: f32) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.scale_into(x, s, &mut y)?;
        Ok(y)
    }

    pub fn relu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.unary("relu", x)
    }
    /// dx = dy where x > 0, else 0.
    pub fn relu_backward(&self, dy: &GpuTensor, x: &GpuTensor) -> Result<GpuTensor> {
        self.binary("relu_backward", dy, x)
    }
    pub(super) fn sigmoid_into(&self, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.unary_into("sigmoid", x, y)
    }
    pub fn sigmoid(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.unary("sigmoid", x)
    }
    /// dx = dy · y · (1 − y), from the forward output y.
    pub fn sigmoid_backward(&self, dy: &GpuTensor, y: &GpuTensor) -> Result<GpuTensor> {
        self.binary("sigmoid_backward", dy, y)
    }

    /// `y[n, c, ...] = x[n, c, ...] + bias[c]` for x of shape `[N, C, ...]`.
    pub(super) fn add_channel_bias_into(&self, x: &GpuTensor, bias: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        let (_, c, inner) = channel_dims(&x.shape)?;
        ensure!(bias.shape == [c], "add_channel_bias: bias shape {:?} for {c} channels", bias.shape);
        ensure!(x.shape == y.shape, "add_channel_bias: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.work(0.0, 8.0 * n as f64);
        self.launch("add_channel_bias", self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&*bias.buf).arg(&n64).arg(&c64).arg(&inner64);
        })
    }
    pub fn add_channel_bias(&self, x: &GpuTensor, bias: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.add_channel_bias_into(x, bias, &mut y)?;
        Ok(y)
    }

    /// `db[c]` = Σ over n and spatial positions of `dy[n, c, ...]` (one block per channel).
    pub(super) fn add_channel_bias_backward_into(&self, dy: &GpuTensor, db: &mut GpuTensor) -> Result<()> {
        let (batch, c, inner) = channel_dims(&dy.shape)?;
        ensure!(db.shape == [c], "add_channel_bias_backward: db shape {:?} for {c} channels", db.shape);
        if c == 0 {
            return Ok(());
        }
        let blocks = c.min(i32::MAX as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let (batch64, c64, inner64) = (batch as u64, c as u64, inner as u64);
        self.work(0.0, 4.0 * dy.numel() as f64);
        self.launch("add_channel_bias_backward", cfg, |l| {
            l.arg(&mut *db.buf).arg(&*dy.buf).arg(&batch64).arg(&c64).arg(&inner64);
        })
    }
    pub fn add_channel_bias_backward(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        let (_, c, _) = channel_dims(&dy.shape)?;
        let mut db = self.empty(&[c])?;
        self.add_channel_bias_backward_into(dy, &mut db)?;
        Ok(db)
    }
}
