//! Parity cases for kernels/optim.cu: projected SGD and Adam steps, bit-identical to src/optim.rs.

use anyhow::Result;

use super::elementwise::SIZES;
use super::Ctx;
use crate::backend::cuda::GpuBox;
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
                c.gpu.sgd_step(&mut dtheta, &mut dvel, &c.upload(&grad)?, sgd, bbox)?;
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
                c.gpu.adam_step(&mut dtheta, &mut dm, &mut dv, &c.upload(&grad)?, adam, bc1, bc2, bbox)?;
                let cbox = project.then_some((snap.data(), b));
                adam_update(theta.data_mut(), grad.data(), m.data_mut(), v.data_mut(), adam, bc1, bc2, cbox);
                let case = format!("n={n} project={project} t={t}");
                c.check_exact("adam_step θ", &case, &dtheta, &theta)?;
                c.check_exact("adam_step m", &case, &dm, &m)?;
                c.check_exact("adam_step v", &case, &dv, &v)?;
            }
        }
    }
    Ok(())
}
