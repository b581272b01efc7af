//! Noise wrappers: kernels/noise.cu, CPU reference src/noise.rs.

use anyhow::{ensure, Result};

use cudarc::driver::PushKernelArg;

use super::{Gpu, GpuTensor};
use crate::noise::{NoiseKey, WeightNoise};

impl Gpu {
    /// `out[i]` = ε_i ∈ (−b, b), bit-identical to `key.uniform(i, b)`.
    pub(super) fn noise_uniform_into(&self, key: NoiseKey, b: f32, out: &mut GpuTensor) -> Result<()> {
        let n = out.numel();
        ensure!(n as u64 <= 1 << 32, "noise_uniform: {n} elements exceed the 2^32 Philox index space");
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("noise_uniform", self.cfg(n), |l| {
            l.arg(&mut *out.buf).arg(&n64).arg(&key.seed).arg(&key.step).arg(&key.stream).arg(&key.sample).arg(&b);
        })
    }
    /// A fresh `[n]` tensor of noise.
    pub fn noise_uniform(&self, key: NoiseKey, b: f32, n: usize) -> Result<GpuTensor> {
        let mut out = self.empty(&[n])?;
        self.noise_uniform_into(key, b, &mut out)?;
        Ok(out)
    }

    /// out = w + ε, bit-identical to `noise.key.perturb(w, noise.b, noise.offset)`.
    pub(super) fn add_noise_into(&self, w: &GpuTensor, noise: WeightNoise, out: &mut GpuTensor) -> Result<()> {
        let WeightNoise { key, b, offset } = noise;
        ensure!(w.shape == out.shape, "add_noise: shapes {:?} -> {:?}", w.shape, out.shape);
        let n = out.numel();
        ensure!(offset as u64 + n as u64 <= 1 << 32, "add_noise: {n} elements exceed the 2^32 Philox index space");
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("add_noise", self.cfg(n), |l| {
            l.arg(&mut *out.buf)
                .arg(&*w.buf)
                .arg(&n64)
                .arg(&key.seed)
                .arg(&key.step)
                .arg(&key.stream)
                .arg(&key.sample)
                .arg(&b)
                .arg(&offset);
        })
    }
    pub fn add_noise(&self, w: &GpuTensor, noise: WeightNoise) -> Result<GpuTensor> {
        let mut out = self.empty(&w.shape)?;
        self.add_noise_into(w, noise, &mut out)?;
        Ok(out)
    }
}
