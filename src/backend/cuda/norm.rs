//! Batch-norm wrappers: kernels/norm.cu, CPU reference src/backend/cpu/norm.rs. Input [N, C, ...],
//! statistics per channel over M = N·(spatial) values. The train-mode kernels and the eval backward run
//! one block per channel with fixed-order double reductions: deterministic run to run.

use anyhow::{ensure, Result};
use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{channel_dims, Gpu, GpuTensor, BLOCK};
use crate::backend::cpu::norm::BatchNormStats;
use crate::Tensor;

/// Per-channel batch statistics saved by the train-mode forward (each [C]).
pub struct GpuBatchNormStats {
    pub mean: GpuTensor,
    /// Biased variance (divided by M).
    pub var: GpuTensor,
    /// 1 / sqrt(var + eps).
    pub invstd: GpuTensor,
}

/// What the backward passes produce: dx [N, C, ...], dgamma and dbeta [C].
pub struct GpuBatchNormGrads {
    pub dx: GpuTensor,
    pub dgamma: GpuTensor,
    pub dbeta: GpuTensor,
}

/// (N, C, inner) of x, with every [C] tensor in `params` checked.
fn bn_dims(what: &str, x: &GpuTensor, params: &[(&str, &GpuTensor)]) -> Result<(usize, usize, usize)> {
    let (n, c, inner) = channel_dims(&x.shape)?;
    for (name, p) in params {
        ensure!(p.shape == [c], "{what}: {name} shape {:?} for {c} channels (x {:?})", p.shape, x.shape);
    }
    Ok((n, c, inner))
}

impl Gpu {
    /// One block per channel (grid-stride over channels).
    pub(super) fn per_channel_cfg(&self, c: usize) -> LaunchConfig {
        let blocks = c.clamp(1, i32::MAX as usize) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// Uninitialised gradient buffers for an input of shape `x_shape` ([N, C, ...]).
    pub fn batch_norm_grads_empty(&self, x_shape: &[usize]) -> Result<GpuBatchNormGrads> {
        let (_, c, _) = channel_dims(x_shape)?;
        Ok(GpuBatchNormGrads { dx: self.empty(x_shape)?, dgamma: self.empty(&[c])?, dbeta: self.empty(&[c])? })
    }

    /// Copies host statistics (e.g. the CPU reference's) to the device.
    pub fn upload_batch_norm_stats(&self, stats: &BatchNormStats) -> Result<GpuBatchNormStats> {
        let up = |v: &[f32]| self.upload(&Tensor::new(&[v.len()], v.to_vec())?);
        Ok(GpuBatchNormStats { mean: up(&stats.mean)?, var: up(&stats.var)?, invstd: up(&stats.invstd)? })
    }

    pub fn download_batch_norm_stats(&self, stats: &GpuBatchNormStats) -> Result<BatchNormStats> {
        let down = |t: &GpuTensor| Ok::<_, anyhow::Error>(self.download(t)?.into_data());
        Ok(BatchNormStats { mean: down(&stats.mean)?, var: down(&stats.var)?, invstd: down(&stats.invstd)? })
    }

    /// Train mode: normalise with the batch's own statistics, written to `stats`.
    pub(super) fn batch_norm_train_forward_into(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f32,
        y: &mut GpuTensor,
        stats: &mut GpuBatchNormStats,
    ) -> Result<()> {
        let what = "batch_norm_train_forward";
        let (n, c, inner) = bn_dims(what, x, &[("gamma", gamma), ("beta", beta)])?;
        bn_dims(what, x, &[("mean", &stats.mean), ("var", &stats.var), ("invstd", &stats.invstd)])?;
        ensure!(y.shape == x.shape, "{what}: y shape {:?} for x {:?}", y.shape, x.shape);
        ensure!(n * inner > 0, "{what}: empty batch, shape {:?}", x.shape);
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch(what, self.per_channel_cfg(c), |l| {
            l.arg(&mut *y.buf).arg(&mut *stats.mean.buf).arg(&mut *stats.var.buf).arg(&mut *stats.invstd.buf);
            l.arg(&*x.buf).arg(&*gamma.buf).arg(&*beta.buf).arg(&n64).arg(&c64).arg(&inner64).arg(&eps);
        })
    }
    pub fn batch_norm_train_forward(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f32,
    ) -> Result<(GpuTensor, GpuBatchNormStats)> {
        let (_, c, _) = channel_dims(&x.shape)?;
        let mut y = self.empty(&x.shape)?;
        let mut stats =
            GpuBatchNormStats { mean: self.empty(&[c])?, var: self.empty(&[c])?, invstd: self.empty(&[c])? };
        self.batch_norm_train_forward_into(x, gamma, beta, eps, &mut y, &mut stats)?;
        Ok((y, stats))
    }

    /// Train-mode backward (the statistics depending on x): dbeta = Σ dy, dgamma = Σ dy·x̂,
    /// dx = gamma·invstd/M · (M·dy − dbeta − x̂·dgamma).
    pub(super) fn batch_norm_train_backward_into(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        stats: &GpuBatchNormStats,
        grads: &mut GpuBatchNormGrads,
    ) -> Result<()> {
        let what = "batch_norm_train_backward";
        let (n, c, inner) = bn_dims(what, x, &[("gamma", gamma), ("mean", &stats.mean), ("invstd", &stats.invstd)])?;
        bn_dims(what, x, &[("dgamma", &grads.dgamma), ("dbeta", &grads.dbeta)])?;
        ensure!(dy.shape == x.shape, "{what}: dy shape {:?} vs x shape {:?}", dy.shape, x.shape);
        ensure!(grads.dx.shape == x.shape, "{what}: dx shape {:?} vs x shape {:?}", grads.dx.shape, x.shape);
        ensure!(n * inner > 0, "{what}: empty batch, shape {:?}", x.shape);
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch(what, self.per_channel_cfg(c), |l| {
            l.arg(&mut *grads.dx.buf).arg(&mut *grads.dgamma.buf).arg(&mut *grads.dbeta.buf);
            l.arg(&*dy.buf).arg(&*x.buf).arg(&*gamma.buf).arg(&*stats.mean.buf).arg(&*stats.invstd.buf);
            l.arg(&n64).arg(&c64).arg(&inner64);
        })
    }
    pub fn batch_norm_train_backward(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        stats: &GpuBatchNormStats,
    ) -> Result<GpuBatchNormGrads> {
        let mut grads = self.batch_norm_grads_empty(&x.shape)?;
        self.batch_norm_train_backward_into(dy, x, gamma, stats, &mut grads)?;
        Ok(grads)
    }

    /// Eval mode: normalise with the running statistics (elementwise).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn batch_norm_eval_forward_into(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        running_mean: &GpuTensor,
        running_var: &GpuTensor,
        eps: f32,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let what = "batch_norm_eval_forward";
        let params = [("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)];
        let (_, c, inner) = bn_dims(what, x, &params)?;
        ensure!(y.shape == x.shape, "{what}: y shape {:?} for x {:?}", y.shape, x.shape);
        if x.numel() == 0 {
            return Ok(());
        }
        let (total, c64, inner64) = (x.numel() as u64, c as u64, inner as u64);
        self.launch(what, self.cfg(x.numel()), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&*gamma.buf).arg(&*beta.buf).arg(&*running_mean.buf);
            l.arg(&*running_var.buf).arg(&total).arg(&c64).arg(&inner64).arg(&eps);
        })
    }
    pub fn batch_norm_eval_forward(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        running_mean: &GpuTensor,
        running_var: &GpuTensor,
        eps: f32,
    ) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.batch_norm_eval_forward_into(x, gamma, beta, running_mean, running_var, eps, &mut y)?;
        Ok(y)
    }

    /// Eval-mode backward (statistics constant): dx = dy·gamma·invstd, dgamma = Σ dy·x̂, dbeta = Σ dy.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn batch_norm_eval_backward_into(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        running_mean: &GpuTensor,
        running_var: &GpuTensor,
        eps: f32,
        grads: &mut GpuBatchNormGrads,
    ) -> Result<()> {
        let what = "batch_norm_eval_backward";
        let params = [("gamma", gamma), ("running_mean", running_mean), ("running_var", running_var)];
        let (n, c, inner) = bn_dims(what, x, &params)?;
        bn_dims(what, x, &[("dgamma", &grads.dgamma), ("dbeta", &grads.dbeta)])?;
        ensure!(dy.shape == x.shape, "{what}: dy shape {:?} vs x shape {:?}", dy.shape, x.shape);
        ensure!(grads.dx.shape == x.shape, "{what}: dx shape {:?} vs x shape {:?}", grads.dx.shape, x.shape);
        ensure!(n * inner > 0, "{what}: empty batch, shape {:?}", x.shape);
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch(what, self.per_channel_cfg(c), |l| {
            l.arg(&mut *grads.dx.buf).arg(&mut *grads.dgamma.buf).arg(&mut *grads.dbeta.buf);
            l.arg(&*dy.buf).arg(&*x.buf).arg(&*gamma.buf).arg(&*running_mean.buf).arg(&*running_var.buf);
            l.arg(&n64).arg(&c64).arg(&inner64).arg(&eps);
        })
    }
    pub fn batch_norm_eval_backward(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        gamma: &GpuTensor,
        running_mean: &GpuTensor,
        running_var: &GpuTensor,
        eps: f32,
    ) -> Result<GpuBatchNormGrads> {
        let mut grads = self.batch_norm_grads_empty(&x.shape)?;
        self.batch_norm_eval_backward_into(dy, x, gamma, running_mean, running_var, eps, &mut grads)?;
        Ok(grads)
    }

    /// running = (1 − momentum)·running + momentum·batch, the batch variance made unbiased with
    /// count / (count − 1); `count` = M = N·H·W must be at least 2. In place, bit-identical to the CPU.
    pub fn update_running_stats(
        &self,
        running_mean: &mut GpuTensor,
        running_var: &mut GpuTensor,
        stats: &GpuBatchNormStats,
        count: usize,
        momentum: f32,
    ) -> Result<()> {
        let c = stats.mean.numel();
        for (name, t) in [("running_mean", &*running_mean), ("running_var", &*running_var), ("var", &stats.var)] {
            ensure!(t.shape == [c], "update_running_stats: {name} shape {:?} for {c} channels", t.shape);
        }
        ensure!(count > 1, "update_running_stats: needs more than one value per channel, got count {count}");
        if c == 0 {
            return Ok(());
        }
        let (c64, count64) = (c as u64, count as u64);
        self.launch("update_running_stats", self.cfg(c), |l| {
            l.arg(&mut *running_mean.buf).arg(&mut *running_var.buf).arg(&*stats.mean.buf).arg(&*stats.var.buf);
            l.arg(&c64).arg(&count64).arg(&momentum);
        })
    }
}
