//! Projected optimiser steps: kernels/optim.cu, CPU reference src/optim.rs. `owner` (the parameter's
//! index) names the launch's hyper-parameter slot while a training step is captured into a graph.

use anyhow::{ensure, Result};

use cudarc::driver::PushKernelArg;

use super::{check_box, Gpu, GpuBox, GpuTensor};
use crate::optim::{AdamConfig, SgdConfig};

impl Gpu {
    /// One SGD step in place (`crate::optim::sgd_update`), then the optional b-box clamp.
    pub fn sgd_step(
        &self,
        theta: &mut GpuTensor,
        velocity: &mut GpuTensor,
        grad: &GpuTensor,
        cfg: SgdConfig,
        bbox: Option<GpuBox<'_>>,
        owner: Option<usize>,
    ) -> Result<()> {
        let n = theta.numel();
        ensure!(
            velocity.numel() == n && grad.numel() == n,
            "sgd_step: sizes θ {n}, v {}, g {}",
            velocity.numel(),
            grad.numel()
        );
        check_box("sgd_step", n, bbox)?;
        if n == 0 {
            return Ok(());
        }
        let (n64, null) = (n as u64, 0u64);
        // During a graph capture the launch reads lr (and Adam's bias corrections) from its slot.
        let hyper = self.hyper_slot(owner)?;
        let (b, project) = bbox.map_or((0.0f32, 0i32), |bx| (bx.b, 1));
        self.work(0.0, 20.0 * n as f64);
        self.launch("sgd_step", self.cfg(n), |l| {
            l.arg(&mut *theta.buf).arg(&mut *velocity.buf).arg(&*grad.buf);
            match bbox {
                Some(bx) => l.arg(&*bx.snapshot.buf),
                None => l.arg(&null),
            };
            l.arg(&n64).arg(&cfg.lr).arg(&cfg.momentum).arg(&cfg.weight_decay).arg(&b).arg(&project).arg(&hyper);
        })
    }

    /// One Adam step in place (`crate::optim::adam_update`; bc1 = 1 − β1^t, bc2 = 1 − β2^t), then the
    /// optional b-box clamp.
    #[allow(clippy::too_many_arguments)]
    pub fn adam_step(
        &self,
        theta: &mut GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        grad: &GpuTensor,
        cfg: AdamConfig,
        bc1: f32,
        bc2: f32,
        bbox: Option<GpuBox<'_>>,
        owner: Option<usize>,
    ) -> Result<()> {
        let n = theta.numel();
        ensure!(
            m.numel() == n && v.numel() == n && grad.numel() == n,
            "adam_step: sizes θ {n}, m {}, v {}, g {}",
            m.numel(),
            v.numel(),
            grad.numel()
        );
        check_box("adam_step", n, bbox)?;
        if n == 0 {
            return Ok(());
        }
        let (n64, null) = (n as u64, 0u64);
        // During a graph capture the launch reads lr (and Adam's bias corrections) from its slot.
        let hyper = self.hyper_slot(owner)?;
        let (b, project) = bbox.map_or((0.0f32, 0i32), |bx| (bx.b, 1));
        self.work(0.0, 28.0 * n as f64);
        self.launch("adam_step", self.cfg(n), |l| {
            l.arg(&mut *theta.buf).arg(&mut *m.buf).arg(&mut *v.buf).arg(&*grad.buf);
            match bbox {
                Some(bx) => l.arg(&*bx.snapshot.buf),
                None => l.arg(&null),
            };
            l.arg(&n64)
                .arg(&cfg.lr)
                .arg(&cfg.beta1)
                .arg(&cfg.beta2)
                .arg(&cfg.eps)
                .arg(&cfg.weight_decay)
                .arg(&bc1)
                .arg(&bc2)
                .arg(&b)
                .arg(&project)
                .arg(&hyper);
        })
    }
}
