//! Dropout wrappers: kernels/dropout.cu, CPU reference src/backend/cpu/dropout.rs. Element i is kept
//! iff `key.unit(i) >= p` (Philox, bit-identical to the CPU), kept elements scaled by 1 / (1 − p).
//! The `_keyed` forms redraw the mask from the key instead of reading a stored one.

use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

use super::{Gpu, GpuTensor};
use crate::noise::NoiseKey;

/// Checks p and the 2^32 index space; returns the keep scale, computed in f32 exactly as the CPU does.
fn keep_scale(what: &str, p: f32, n: usize) -> Result<f32> {
    ensure!((0.0..1.0).contains(&p), "{what}: dropout probability {p} not in [0, 1)");
    ensure!(n as u64 <= 1 << 32, "{what}: {n} elements exceed the 2^32 Philox index space");
    Ok(1.0 / (1.0 - p))
}

impl Gpu {
    /// The scaled keep mask: 1 / (1 − p) where kept, 0 where dropped (mask's shape is the tensor's).
    pub(super) fn dropout_mask_into(&self, p: f32, key: NoiseKey, mask: &mut GpuTensor) -> Result<()> {
        let n = mask.numel();
        let scale = keep_scale("dropout_mask", p, n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("dropout_mask", self.cfg(n), |l| {
            l.arg(&mut *mask.buf).arg(&n64).arg(&key.seed).arg(&key.step).arg(&key.stream).arg(&key.sample);
            l.arg(&p).arg(&scale);
        })
    }
    pub fn dropout_mask(&self, shape: &[usize], p: f32, key: NoiseKey) -> Result<GpuTensor> {
        let mut mask = self.empty(shape)?;
        self.dropout_mask_into(p, key, &mut mask)?;
        Ok(mask)
    }

    fn dropout_apply(&self, name: &'static str, x: &GpuTensor, mask: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(
            x.shape == mask.shape && x.shape == y.shape,
            "{name}: shapes {:?} · mask {:?} -> {:?}",
            x.shape,
            mask.shape,
            y.shape
        );
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(name, self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&*mask.buf).arg(&n64);
        })
    }

    /// y = x · mask.
    pub(super) fn dropout_forward_into(&self, x: &GpuTensor, mask: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.dropout_apply("dropout_forward", x, mask, y)
    }
    pub fn dropout_forward(&self, x: &GpuTensor, mask: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.dropout_forward_into(x, mask, &mut y)?;
        Ok(y)
    }
    /// dx = dy · mask.
    pub(super) fn dropout_backward_into(&self, dy: &GpuTensor, mask: &GpuTensor, dx: &mut GpuTensor) -> Result<()> {
        self.dropout_apply("dropout_backward", dy, mask, dx)
    }
    pub fn dropout_backward(&self, dy: &GpuTensor, mask: &GpuTensor) -> Result<GpuTensor> {
        let mut dx = self.empty(&dy.shape)?;
        self.dropout_backward_into(dy, mask, &mut dx)?;
        Ok(dx)
    }

    /// y = x · dropout_mask(x.shape, p, key) without a stored mask. The backward is the same call on dy
    /// with the same key (dx = dy · mask).
    pub(super) fn dropout_keyed_into(&self, x: &GpuTensor, p: f32, key: NoiseKey, y: &mut GpuTensor) -> Result<()> {
        ensure!(x.shape == y.shape, "dropout_keyed: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        let scale = keep_scale("dropout_keyed", p, n)?;
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("dropout_keyed", self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&n64).arg(&key.seed).arg(&key.step).arg(&key.stream);
            l.arg(&key.sample).arg(&p).arg(&scale);
        })
    }
    pub fn dropout_keyed(&self, x: &GpuTensor, p: f32, key: NoiseKey) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.dropout_keyed_into(x, p, key, &mut y)?;
        Ok(y)
    }
}
