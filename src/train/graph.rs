//! `--graph`: the training step captured once into a CUDA graph and replayed.
//!
//! The first `WARMUP` steps run eagerly (they fill the caching allocator and create the optimiser
//! state); the next one is recorded instead of run — every kernel, copy and memset of the whole step
//! (MT-CooL's two sub-steps with their noisy forwards, b-box snapshots and projected updates, or the
//! summed-loss step), with the batch in buffers the graph keeps — and each step from then on is:
//! the new batch copied into those buffers, the step number and each optimiser launch's
//! [lr, bc1, bc2] written where the kernels read them (`Gpu::begin_step_capture`), one graph launch,
//! and the step's losses and correct counts copied out. The kernels are the uncaptured step's, with
//! the same inputs, so the weights are the same bit for bit (tests/gpu_training.rs).
//!
//! A batch of another size (an epoch's last, smaller one) runs eagerly. The gradient-combination
//! methods are not captured: they solve their small problems on the host in the middle of the step.

use std::sync::Arc;

use anyhow::{ensure, Result};
use cudarc::driver::CudaGraph;

use super::{train_step, TrainConfig};
use crate::backend::cpu::loss::one_hot;
use crate::backend::cuda::{Gpu, GpuBuf, GpuTensor, StepScalars};
use crate::backend::dispatch::Labels;
use crate::backend::Backend;
use crate::model::{Method, MultiTaskModel, TaskSpec};
use crate::mtl::mtcool::mtcool_step_on;
use crate::mtl::{summed_step_on, Batch, Objective, StepOut, Targets};
use crate::optim::Optimizer;
use crate::Tensor;

/// Eager steps before the capture.
pub const WARMUP: u32 = 2;

/// Whether `cfg`'s step can be captured (one reason per refusal).
pub fn check(cfg: &TrainConfig, backend: &Backend) -> Result<()> {
    ensure!(backend.is_cuda(), "--graph needs --device cuda (CUDA graphs are a GPU feature)");
    ensure!(
        cfg.combiner().is_none(),
        "--graph does not capture {:?}: its gradient combiner runs on the host in the middle of the step",
        cfg.method
    );
    Ok(())
}

/// A step recorded into a graph, and the buffers it reads and writes.
struct Captured {
    graph: CudaGraph,
    x: Tensor,
    targets: Vec<Targets>,
    step_buf: GpuBuf<u32>,
    hyper: GpuTensor,
    /// The parameter each optimiser launch updates, in launch order.
    owners: Vec<usize>,
    out: StepOut,
}

/// Runs training steps through a captured graph (see the module notes).
pub struct GraphStep {
    gpu: Arc<Gpu>,
    eager_left: u32,
    captured: Option<Captured>,
    /// Steps replayed so far.
    pub replays: u64,
}

impl GraphStep {
    pub fn new(gpu: Arc<Gpu>) -> GraphStep {
        GraphStep { gpu, eager_left: WARMUP, captured: None, replays: 0 }
    }

    /// One training step of `cfg.method` on `batch` (global step `step`).
    pub fn step(
        &mut self,
        cfg: &TrainConfig,
        model: &mut MultiTaskModel,
        opt: &mut Optimizer,
        batch: &Batch,
        obj: &Objective,
        step: u32,
    ) -> Result<StepOut> {
        if self.eager_left > 0 {
            self.eager_left -= 1;
            return train_step(cfg, model, opt, batch, obj, step);
        }
        match &self.captured {
            // Capture a full shared batch (per-task batches run eagerly).
            None if batch.x.shape()[0] != cfg.batch_size || batch.task_x.is_some() => {
                return train_step(cfg, model, opt, batch, obj, step)
            }
            None => self.capture(cfg, model, opt, batch, obj, step)?,
            Some(c) if !fits(c, batch) => return train_step(cfg, model, opt, batch, obj, step),
            Some(_) => self.load_batch(batch, obj)?,
        }
        self.replay(opt, step)
    }

    /// Records the step on `batch` (nothing runs yet: the first replay runs it).
    fn capture(
        &mut self,
        cfg: &TrainConfig,
        model: &mut MultiTaskModel,
        opt: &mut Optimizer,
        batch: &Batch,
        obj: &Objective,
        step: u32,
    ) -> Result<()> {
        let gpu = self.gpu.clone();
        let placed = batch.place(&Backend::Cuda(gpu.clone()), obj)?;
        let (x, targets) = (placed.x.into_owned(), placed.targets);
        let launches_per_param = if cfg.method == Method::Mtcool { 2 * cfg.inner_steps.max(1) as usize } else { 1 };
        let max_slots = model.all_params().len() * launches_per_param;
        let step_buf = gpu.upload_labels(&[step])?;
        let hyper = gpu.zeros(&[3 * max_slots])?;
        gpu.synchronize()?;
        let scalars =
            StepScalars { step_ptr: gpu.device_addr(&step_buf), hyper_ptr: gpu.device_addr(&hyper.buf), max_slots };
        gpu.begin_step_capture(scalars);
        let recorded = gpu.begin_capture().and_then(|_| {
            let out = match cfg.method {
                Method::Mtcool => mtcool_step_on(model, opt, &[&x], &targets, obj, step, &cfg.mtcool_config()),
                _ => summed_step_on(model, opt, &[&x], &targets, obj),
            };
            let graph = gpu.end_capture();
            Ok((out?, graph?))
        });
        let owners = gpu.end_step_capture();
        let (out, graph) = recorded?;
        // Recording advanced the optimiser's step counts; the first replay advances them again.
        opt.rewind(&owners);
        self.captured = Some(Captured { graph, x, targets, step_buf, hyper, owners, out });
        Ok(())
    }

    /// Copies `batch` into the captured step's input buffers.
    fn load_batch(&mut self, batch: &Batch, obj: &Objective) -> Result<()> {
        let c = self.captured.as_mut().expect("captured");
        let gpu = &self.gpu;
        gpu.write_slice(batch.x.data(), &mut c.x.gpu_mut()?.buf)?;
        for (t, target) in c.targets.iter_mut().enumerate() {
            let labels = &batch.labels[t];
            match &mut target.labels {
                Labels::Cuda(buf) => {
                    let buf = Arc::get_mut(buf).ok_or_else(|| anyhow::anyhow!("captured labels still shared"))?;
                    gpu.write_slice(labels, buf)?;
                }
                Labels::Cpu(_) => anyhow::bail!("captured labels are on the host"),
            }
            if let (Some(onehot), TaskSpec::Segment { classes }) = (&mut target.onehot, obj.specs[t]) {
                let s = batch.x.shape();
                let host = one_hot(labels, classes, &[s[0], s[2], s[3]]);
                gpu.write_slice(host.data(), &mut onehot.gpu_mut()?.buf)?;
            }
        }
        Ok(())
    }

    /// Writes the step's scalars, launches the graph, and copies its stats out (a replay reuses the
    /// same output buffers).
    fn replay(&mut self, opt: &mut Optimizer, step: u32) -> Result<StepOut> {
        let c = self.captured.as_mut().expect("captured");
        let gpu = &self.gpu;
        gpu.write_slice(&[step], &mut c.step_buf)?;
        let mut table = opt.replay_hyper(&c.owners)?;
        table.resize(c.hyper.numel(), 0.0);
        gpu.write_slice(&table, &mut c.hyper.buf)?;
        c.graph.launch().map_err(crate::backend::cuda::cuda_error("launching the captured step's graph"))?;
        self.replays += 1;
        let copy = |t: &Tensor| t.deep_copy();
        Ok(StepOut {
            loss: c.out.loss.iter().map(copy).collect::<Result<_>>()?,
            correct: c.out.correct.iter().map(copy).collect::<Result<_>>()?,
        })
    }
}

/// Whether `batch` has the captured batch's shapes.
fn fits(c: &Captured, batch: &Batch) -> bool {
    batch.task_x.is_none()
        && batch.x.shape() == c.x.shape()
        && batch.labels.iter().zip(&c.targets).all(|(l, t)| l.len() == t.labels.len())
}
