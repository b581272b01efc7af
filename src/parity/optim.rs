//! Parity cases for kernels/optim.cu: projected SGD and Adam steps, bit-identical to src/optim.rs.

use anyhow::Result;

use super::elementwise::SIZES;
use super::Ctx;
use crate::backend::cuda::{GpuBox, StepScalars};
use crate::optim::{adam_update, sgd_update, AdamConfig, SgdConfig};
use crate::Tensor;

pub fn run(c: &mut Ctx) -> Result<()> {
    let sgd = SgdConfig { lr: 0.05, momentum: 0.9, weight_decay: 1e-3 };
    let adam = AdamConfig { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-3 };
    for &n in SIZES {
        for project in [false, true] {
            let b = 0.02f32;
            let mut theta = c.nonzero(&[n]);
            let snap = theta.clone();
            let mut vel = Tensor::zeros(&[n]);
            let (mut dtheta, mut dvel, dsnap) = (c.upload(&theta)?, c.upload(&vel)?, c.upload(&snap)?);
            for step in 0..3 {
                let grad = c.nonzero(&[n]);
                let bbox = project.then_some(GpuBox { snapshot: &dsnap, b });
                c.gpu.sgd_step(&mut dtheta, &mut dvel, &c.upload(&grad)?, sgd, bbox, None)?;
                sgd_update(theta.data_mut(), grad.data(), vel.data_mut(), sgd, project.then_some((snap.data(), b)));
                let case = format!("n={n} project={project} step={step}");
                c.check_exact("sgd_step θ", &case, &dtheta, &theta)?;
                c.check_exact("sgd_step velocity", &case, &dvel, &vel)?;
            }

            let mut theta = snap.clone();
            let (mut m, mut v) = (Tensor::zeros(&[n]), Tensor::zeros(&[n]));
            let (mut dtheta, mut dm, mut dv) = (c.upload(&theta)?, c.upload(&m)?, c.upload(&v)?);
            for t in 1..=3 {
                let grad = c.nonzero(&[n]);
                let (bc1, bc2) = (1.0 - adam.beta1.powi(t), 1.0 - adam.beta2.powi(t));
                let bbox = project.then_some(GpuBox { snapshot: &dsnap, b });
                c.gpu.adam_step(&mut dtheta, &mut dm, &mut dv, &c.upload(&grad)?, adam, bc1, bc2, bbox, None)?;
                let cbox = project.then_some((snap.data(), b));
                adam_update(theta.data_mut(), grad.data(), m.data_mut(), v.data_mut(), adam, bc1, bc2, cbox);
                let case = format!("n={n} project={project} t={t}");
                c.check_exact("adam_step θ", &case, &dtheta, &theta)?;
                c.check_exact("adam_step m", &case, &dm, &m)?;
                c.check_exact("adam_step v", &case, &dv, &v)?;
            }
        }
    }
    hyper_from_device(c, sgd, adam)
}

/// The graph path: with step scalars installed (as during a capture; here the launches run at once),
/// each launch reads [lr, bc1, bc2] from its slot, not from its (deliberately wrong) arguments.
fn hyper_from_device(c: &mut Ctx, sgd: SgdConfig, adam: AdamConfig) -> Result<()> {
    let n = 1000;
    let (bc1, bc2) = (1.0 - adam.beta1.powi(2), 1.0 - adam.beta2.powi(2));
    let table = c.upload(&Tensor::new(&[6], vec![sgd.lr, 1.0, 1.0, adam.lr, bc1, bc2])?)?;
    let step = c.gpu.upload_labels(&[0])?;
    let (theta, grad) = (c.nonzero(&[n]), c.nonzero(&[n]));
    let scalars =
        StepScalars { step_ptr: c.gpu.device_addr(&step), hyper_ptr: c.gpu.device_addr(&table.buf), max_slots: 2 };
    c.gpu.begin_step_capture(scalars);
    let wrong_sgd = SgdConfig { lr: 9.0, ..sgd };
    let wrong_adam = AdamConfig { lr: 9.0, ..adam };
    let (mut dtheta, mut dvel) = (c.upload(&theta)?, c.upload(&Tensor::zeros(&[n]))?);
    let ran = c.gpu.sgd_step(&mut dtheta, &mut dvel, &c.upload(&grad)?, wrong_sgd, None, Some(0)).and_then(|_| {
        let (mut dth2, mut dm, mut dv) =
            (c.upload(&theta)?, c.upload(&Tensor::zeros(&[n]))?, c.upload(&Tensor::zeros(&[n]))?);
        c.gpu.adam_step(&mut dth2, &mut dm, &mut dv, &c.upload(&grad)?, wrong_adam, 0.5, 0.5, None, Some(1))?;
        Ok(dth2)
    });
    let owners = c.gpu.end_step_capture();
    let dth2 = ran?;
    let (mut want, mut vel) = (theta.clone(), Tensor::zeros(&[n]));
    sgd_update(want.data_mut(), grad.data(), vel.data_mut(), sgd, None);
    c.check_exact("sgd_step θ (lr from the step's slot)", "n=1000", &dtheta, &want)?;
    let (mut want, mut m, mut v) = (theta.clone(), Tensor::zeros(&[n]), Tensor::zeros(&[n]));
    adam_update(want.data_mut(), grad.data(), m.data_mut(), v.data_mut(), adam, bc1, bc2, None);
    c.check_exact("adam_step θ (lr, bc1, bc2 from the step's slot)", "n=1000", &dth2, &want)?;
    c.record("optimiser slot owners", "sgd 0, adam 1", if owners == [0, 1] { 0.0 } else { f64::INFINITY }, 0.0);
    Ok(())
}
