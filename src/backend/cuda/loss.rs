//! Loss and reduction wrappers: kernels/loss.cu, CPU references src/backend/cpu/loss.rs and
//! `sum_all` / `mean_all` of src/backend/cpu/elementwise.rs. Soft Dice is in `loss/dice.rs`.
//!
//! Scalars (losses, sums) stay on the device as one-element tensors of shape `[]`; the `*_host` forms
//! download them. Targets are `u32` class indices in (n, h, w) order on the device
//! ([`Gpu::upload_labels`]); an out-of-range target cannot be reported by a kernel and turns the loss
//! and gradients NaN instead. Every reduction runs in fixed chunks of [`REDUCE_CHUNK`] with no atomics,
//! so the results are identical from run to run and do not depend on the GPU's SM count.

use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::{channel_dims, Gpu, GpuBuf, GpuTensor, BLOCK};

mod dice;

/// Elements per block in the chunked reductions; must equal MTC_REDUCE_CHUNK in kernels/loss.cu.
pub const REDUCE_CHUNK: usize = 4096;

/// A null device pointer, for the kernels' optional pointer parameters.
const NULL: u64 = 0;

fn blocks(n: usize) -> LaunchConfig {
    let blocks = n.clamp(1, i32::MAX as usize) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

impl Gpu {
    /// Class indices for the cross-entropy kernels.
    pub fn upload_labels(&self, labels: &[u32]) -> Result<GpuBuf<u32>> {
        let mut buf = self.buffer_of::<u32>(labels.len())?;
        self.write_slice(labels, &mut buf)?;
        Ok(buf)
    }

    /// Reduction scratch (every kernel below writes its scratch before reading it).
    fn scratch_f64(&self, n: usize) -> Result<GpuBuf<f64>> {
        self.buffer_of::<f64>(n)
    }

    /// r = Σ x[..n] / (divisor or denom), written as f32 to `out` and/or as f64 to `out64`: chunked
    /// passes until one chunk is left, then one block finishes.
    fn reduce_finish(
        &self,
        x: &CudaSlice<f64>,
        n: usize,
        out: Option<&mut CudaSlice<f32>>,
        out64: Option<&mut CudaSlice<f64>>,
        divisor: Option<&CudaSlice<f64>>,
        denom: f64,
    ) -> Result<()> {
        let mut owned: Option<GpuBuf<f64>> = None;
        let mut len = n;
        while len > REDUCE_CHUNK {
            let parts = len.div_ceil(REDUCE_CHUNK);
            let mut next = self.scratch_f64(parts)?;
            let src: &CudaSlice<f64> = owned.as_deref().unwrap_or(x);
            let len64 = len as u64;
            self.launch("reduce_sum_f64_chunks", blocks(parts), |l| {
                l.arg(&mut *next).arg(src).arg(&len64);
            })?;
            owned = Some(next);
            len = parts;
        }
        let src: &CudaSlice<f64> = owned.as_deref().unwrap_or(x);
        let len64 = len as u64;
        self.launch("reduce_sum_finish", blocks(1), |l| {
            match out {
                Some(o) => l.arg(o),
                None => l.arg(&NULL),
            };
            match out64 {
                Some(o) => l.arg(o),
                None => l.arg(&NULL),
            };
            l.arg(src).arg(&len64);
            match divisor {
                Some(d) => l.arg(d),
                None => l.arg(&NULL),
            };
            l.arg(&denom);
        })
    }

    /// out = Σ x / denom as an f32 scalar.
    fn reduce_f32_into(&self, what: &str, x: &GpuTensor, out: &mut GpuTensor, denom: f64) -> Result<()> {
        ensure!(out.numel() == 1, "{what}: output has {} elements, expected a scalar", out.numel());
        let n = x.numel();
        ensure!(n > 0, "{what} of an empty tensor {:?}", x.shape);
        let parts = n.div_ceil(REDUCE_CHUNK);
        let mut partials = self.scratch_f64(parts)?;
        let n64 = n as u64;
        self.launch("reduce_sum_f32_chunks", blocks(parts), |l| {
            l.arg(&mut *partials).arg(&*x.buf).arg(&n64);
        })?;
        self.reduce_finish(&partials, parts, Some(&mut *out.buf), None, None, denom)
    }

    /// Sum of all elements (double accumulation) into a scalar.
    pub(super) fn sum_all_into(&self, x: &GpuTensor, out: &mut GpuTensor) -> Result<()> {
        self.reduce_f32_into("sum_all", x, out, 1.0)
    }
    pub fn sum_all(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let mut out = self.empty(&[])?;
        self.sum_all_into(x, &mut out)?;
        Ok(out)
    }
    /// Mean of all elements into a scalar.
    pub(super) fn mean_all_into(&self, x: &GpuTensor, out: &mut GpuTensor) -> Result<()> {
        self.reduce_f32_into("mean_all", x, out, x.numel() as f64)
    }
    pub fn mean_all(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let mut out = self.empty(&[])?;
        self.mean_all_into(x, &mut out)?;
        Ok(out)
    }

    /// Checks the logits/probs [N, C, ...], targets (N·inner) and class weights ([C]).
    fn ce_dims(
        what: &str,
        x: &GpuTensor,
        targets: &CudaSlice<u32>,
        w: Option<&GpuTensor>,
    ) -> Result<(usize, usize, usize)> {
        let (n, c, inner) = channel_dims(&x.shape)?;
        ensure!(
            targets.len() == n * inner,
            "{what}: {} targets for {} items of shape {:?}",
            targets.len(),
            n * inner,
            x.shape
        );
        ensure!(n * inner > 0 && c > 0, "{what}: empty input {:?}", x.shape);
        if let Some(w) = w {
            ensure!(w.shape == [c], "{what}: class weights shape {:?} for {c} classes", w.shape);
        }
        Ok((n, c, inner))
    }

    /// Σ_i w[targets[i]] (the weighted mean's denominator) as one device double.
    fn ce_weight_sum(
        &self,
        targets: &CudaSlice<u32>,
        w: Option<&GpuTensor>,
        items: usize,
        c: usize,
    ) -> Result<GpuBuf<f64>> {
        let mut item_w = self.scratch_f64(items)?;
        let (items64, c64) = (items as u64, c as u64);
        self.launch("cross_entropy_item_weights", self.cfg(items), |l| {
            l.arg(&mut *item_w).arg(targets);
            match w {
                Some(w) => l.arg(&*w.buf),
                None => l.arg(&NULL),
            };
            l.arg(&items64).arg(&c64);
        })?;
        let mut total = self.scratch_f64(1)?;
        self.reduce_finish(&item_w, items, None, Some(&mut total), None, 1.0)?;
        Ok(total)
    }

    /// The number of items whose arg-max over dim 1 is their label, as an f32 scalar (exact up to 2²⁴
    /// items). CPU reference: `cpu::loss::count_correct`.
    pub fn count_correct(&self, logits: &GpuTensor, labels: &GpuBuf<u32>) -> Result<GpuTensor> {
        let (n, c, inner) = channel_dims(&logits.shape)?;
        ensure!(labels.len() == n * inner, "count_correct: {} labels for logits {:?}", labels.len(), logits.shape);
        ensure!(n * inner <= 1 << 24, "count_correct: {} items exceed f32's exact integers", n * inner);
        let mut out = self.empty(&[])?;
        if n * inner == 0 {
            self.fill_zero(&mut out)?;
            return Ok(out);
        }
        let mut hit = self.scratch_f64(n * inner)?;
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch("count_correct", self.cfg(n * inner), |l| {
            l.arg(&mut *hit).arg(&*logits.buf).arg(&**labels).arg(&n64).arg(&c64).arg(&inner64);
        })?;
        self.reduce_finish(&hit, n * inner, Some(&mut *out.buf), None, None, 1.0)?;
        Ok(out)
    }

    /// probs = softmax over dim 1 (double inside), one thread per item.
    pub(super) fn softmax_dim1_into(&self, logits: &GpuTensor, probs: &mut GpuTensor) -> Result<()> {
        let (n, c, inner) = channel_dims(&logits.shape)?;
        ensure!(probs.shape == logits.shape, "softmax_dim1: shapes {:?} -> {:?}", logits.shape, probs.shape);
        if logits.numel() == 0 {
            return Ok(());
        }
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch("softmax_dim1", self.cfg(n * inner), |l| {
            l.arg(&mut *probs.buf).arg(&*logits.buf).arg(&n64).arg(&c64).arg(&inner64);
        })
    }

    /// Weighted-mean softmax cross-entropy: `loss` (device scalar) = Σ w[y]·(−log p[y]) / Σ w[y], and the
    /// softmax probabilities.
    pub(super) fn softmax_cross_entropy_forward_into(
        &self,
        logits: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
        loss: &mut GpuTensor,
        probs: &mut GpuTensor,
    ) -> Result<()> {
        let what = "softmax_cross_entropy_forward";
        let (n, c, inner) = Self::ce_dims(what, logits, targets, class_weights)?;
        ensure!(probs.shape == logits.shape, "{what}: probs shape {:?} for logits {:?}", probs.shape, logits.shape);
        ensure!(loss.numel() == 1, "{what}: loss has {} elements, expected a scalar", loss.numel());
        let wsum = self.ce_weight_sum(targets, class_weights, n * inner, c)?;
        let mut item_nll = self.scratch_f64(n * inner)?;
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch(what, self.cfg(n * inner), |l| {
            l.arg(&mut *probs.buf).arg(&mut *item_nll).arg(&*logits.buf).arg(targets);
            match class_weights {
                Some(w) => l.arg(&*w.buf),
                None => l.arg(&NULL),
            };
            l.arg(&n64).arg(&c64).arg(&inner64);
        })?;
        self.reduce_finish(&item_nll, n * inner, Some(&mut *loss.buf), None, Some(&wsum), 1.0)
    }
    /// (loss as a device scalar, probs).
    pub fn softmax_cross_entropy_forward(
        &self,
        logits: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let (mut loss, mut probs) = (self.empty(&[])?, self.empty(&logits.shape)?);
        self.softmax_cross_entropy_forward_into(logits, targets, class_weights, &mut loss, &mut probs)?;
        Ok((loss, probs))
    }
    /// (loss downloaded to the host, probs).
    pub fn softmax_cross_entropy_forward_host(
        &self,
        logits: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
    ) -> Result<(f32, GpuTensor)> {
        let (loss, probs) = self.softmax_cross_entropy_forward(logits, targets, class_weights)?;
        Ok((self.download(&loss)?.data()[0], probs))
    }

    /// dlogits = dloss · w[y] · (p − onehot(y)) / Σ_j w[y_j], from the forward's probabilities.
    pub(super) fn softmax_cross_entropy_backward_into(
        &self,
        probs: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
        dloss: f32,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        let what = "softmax_cross_entropy_backward";
        let (n, c, inner) = Self::ce_dims(what, probs, targets, class_weights)?;
        ensure!(dx.shape == probs.shape, "{what}: dx shape {:?} for probs {:?}", dx.shape, probs.shape);
        let wsum = self.ce_weight_sum(targets, class_weights, n * inner, c)?;
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch(what, self.cfg(probs.numel()), |l| {
            l.arg(&mut *dx.buf).arg(&*probs.buf).arg(targets);
            match class_weights {
                Some(w) => l.arg(&*w.buf),
                None => l.arg(&NULL),
            };
            l.arg(&*wsum).arg(&dloss).arg(&n64).arg(&c64).arg(&inner64);
        })
    }
    pub fn softmax_cross_entropy_backward(
        &self,
        probs: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
        dloss: f32,
    ) -> Result<GpuTensor> {
        let mut dx = self.empty(&probs.shape)?;
        self.softmax_cross_entropy_backward_into(probs, targets, class_weights, dloss, &mut dx)?;
        Ok(dx)
    }

    /// Forward and backward in one pass over the logits: the loss (device scalar, as the forward) and
    /// dlogits (as the backward with `dloss`), without materialising the probabilities.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn softmax_cross_entropy_fused_into(
        &self,
        logits: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
        dloss: f32,
        loss: &mut GpuTensor,
        dlogits: &mut GpuTensor,
    ) -> Result<()> {
        let what = "softmax_cross_entropy_fused";
        let (n, c, inner) = Self::ce_dims(what, logits, targets, class_weights)?;
        ensure!(
            dlogits.shape == logits.shape,
            "{what}: dlogits shape {:?} for logits {:?}",
            dlogits.shape,
            logits.shape
        );
        ensure!(loss.numel() == 1, "{what}: loss has {} elements, expected a scalar", loss.numel());
        let wsum = self.ce_weight_sum(targets, class_weights, n * inner, c)?;
        let mut item_nll = self.scratch_f64(n * inner)?;
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch(what, self.cfg(n * inner), |l| {
            l.arg(&mut *dlogits.buf).arg(&mut *item_nll).arg(&*logits.buf).arg(targets);
            match class_weights {
                Some(w) => l.arg(&*w.buf),
                None => l.arg(&NULL),
            };
            l.arg(&*wsum).arg(&dloss).arg(&n64).arg(&c64).arg(&inner64);
        })?;
        self.reduce_finish(&item_nll, n * inner, Some(&mut *loss.buf), None, Some(&wsum), 1.0)
    }
    /// (loss as a device scalar, dlogits).
    pub fn softmax_cross_entropy_fused(
        &self,
        logits: &GpuTensor,
        targets: &CudaSlice<u32>,
        class_weights: Option<&GpuTensor>,
        dloss: f32,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let (mut loss, mut dlogits) = (self.empty(&[])?, self.empty(&logits.shape)?);
        self.softmax_cross_entropy_fused_into(logits, targets, class_weights, dloss, &mut loss, &mut dlogits)?;
        Ok((loss, dlogits))
    }
}
