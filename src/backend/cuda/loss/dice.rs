//! Soft Dice wrappers (kernels/loss.cu: soft_dice_*), CPU reference `soft_dice_forward` /
//! `soft_dice_backward` in src/backend/cpu/loss.rs. Per-channel sums (Σ p·t, Σ p, Σ t) run one block
//! per channel with fixed-order double reductions, the loss one block: deterministic run to run.

use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

use super::super::{channel_dims, Gpu, GpuBuf, GpuTensor};
use super::blocks;
use crate::backend::cpu::loss::DiceMode;

fn dice_dims(what: &str, logits: &GpuTensor, target: &GpuTensor) -> Result<(usize, usize, usize)> {
    ensure!(logits.shape == target.shape, "{what}: logits shape {:?} vs target shape {:?}", logits.shape, target.shape);
    let (n, c, inner) = channel_dims(&logits.shape)?;
    ensure!(n * inner > 0 && c > 0, "{what}: empty input {:?}", logits.shape);
    Ok((n, c, inner))
}

impl Gpu {
    /// [Σ p·t (C), Σ p (C), Σ t (C)] over N and spatial positions, as device doubles.
    fn dice_sums(
        &self,
        probs: &GpuTensor,
        target: &GpuTensor,
        (n, c, inner): (usize, usize, usize),
    ) -> Result<GpuBuf<f64>> {
        let mut sums = self.scratch_f64(3 * c)?;
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch("soft_dice_sums", self.per_channel_cfg(c), |l| {
            l.arg(&mut *sums).arg(&*probs.buf).arg(&*target.buf).arg(&n64).arg(&c64).arg(&inner64);
        })?;
        Ok(sums)
    }

    /// Dice probabilities: elementwise sigmoid (Binary) or softmax over dim 1 (MultiClass).
    pub(super) fn soft_dice_probs_into(&self, logits: &GpuTensor, mode: DiceMode, probs: &mut GpuTensor) -> Result<()> {
        match mode {
            DiceMode::Binary => self.sigmoid_into(logits, probs),
            DiceMode::MultiClass => self.softmax_dim1_into(logits, probs),
        }
    }

    /// Soft Dice: loss (device scalar) = 1 − mean_c (2·Σ p·t + eps) / (Σ p + Σ t + eps), and p.
    pub(super) fn soft_dice_forward_into(
        &self,
        logits: &GpuTensor,
        target: &GpuTensor,
        mode: DiceMode,
        eps: f32,
        loss: &mut GpuTensor,
        probs: &mut GpuTensor,
    ) -> Result<()> {
        let dims = dice_dims("soft_dice_forward", logits, target)?;
        ensure!(
            probs.shape == logits.shape,
            "soft_dice_forward: probs shape {:?} for logits {:?}",
            probs.shape,
            logits.shape
        );
        ensure!(loss.numel() == 1, "soft_dice_forward: loss has {} elements, expected a scalar", loss.numel());
        self.soft_dice_probs_into(logits, mode, probs)?;
        let sums = self.dice_sums(probs, target, dims)?;
        let c64 = dims.1 as u64;
        self.launch("soft_dice_loss", blocks(1), |l| {
            l.arg(&mut *loss.buf).arg(&*sums).arg(&c64).arg(&eps);
        })
    }
    /// (loss as a device scalar, probs).
    pub fn soft_dice_forward(
        &self,
        logits: &GpuTensor,
        target: &GpuTensor,
        mode: DiceMode,
        eps: f32,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let (mut loss, mut probs) = (self.empty(&[])?, self.empty(&logits.shape)?);
        self.soft_dice_forward_into(logits, target, mode, eps, &mut loss, &mut probs)?;
        Ok((loss, probs))
    }
    /// (loss downloaded to the host, probs).
    pub fn soft_dice_forward_host(
        &self,
        logits: &GpuTensor,
        target: &GpuTensor,
        mode: DiceMode,
        eps: f32,
    ) -> Result<(f32, GpuTensor)> {
        let (loss, probs) = self.soft_dice_forward(logits, target, mode, eps)?;
        Ok((self.download(&loss)?.data()[0], probs))
    }

    /// dlogits of soft Dice from the forward's probabilities: g = −dloss/C · (2t/S − D/S), then
    /// Binary g·p·(1 − p), MultiClass p·(g − Σ_k p_k·g_k) per item.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn soft_dice_backward_into(
        &self,
        logits: &GpuTensor,
        probs: &GpuTensor,
        target: &GpuTensor,
        mode: DiceMode,
        eps: f32,
        dloss: f32,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let dims = dice_dims("soft_dice_backward", probs, target)?;
        ensure!(
            logits.shape == probs.shape,
            "soft_dice_backward: logits shape {:?} vs probs shape {:?}",
            logits.shape,
            probs.shape
        );
        ensure!(dx.shape == probs.shape, "soft_dice_backward: dx shape {:?} for probs {:?}", dx.shape, probs.shape);
        let sums = self.dice_sums(probs, target, dims)?;
        let (n, c, inner) = dims;
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        let multiclass = i32::from(mode == DiceMode::MultiClass);
        self.launch("soft_dice_backward", self.cfg(n * inner), |l| {
            l.arg(&mut *dx.buf).arg(&*probs.buf).arg(&*target.buf).arg(&*sums);
            l.arg(&n64).arg(&c64).arg(&inner64).arg(&eps).arg(&dloss).arg(&multiclass);
        })
    }
    pub fn soft_dice_backward(
        &self,
        logits: &GpuTensor,
        probs: &GpuTensor,
        target: &GpuTensor,
        mode: DiceMode,
        eps: f32,
        dloss: f32,
    ) -> Result<GpuTensor> {
        let mut dx = self.empty(&probs.shape)?;
        self.soft_dice_backward_into(logits, probs, target, mode, eps, dloss, &mut dx)?;
        Ok(dx)
    }
}
