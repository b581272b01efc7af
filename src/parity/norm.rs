//! Parity cases for kernels/norm.cu: batch norm train/eval forward and backward, running-stat update,
//! on the NCHW shapes plus [N, C] inputs (inner = 1).

use anyhow::Result;

use super::pool::nchw_shapes;
use super::{Ctx, F32_TOL};
use crate::backend::cpu::norm as cpu;
use crate::Tensor;

const EPS: f32 = 1e-5;

fn vec_tensor(v: &[f32]) -> Tensor {
    Tensor::new(&[v.len()], v.to_vec()).expect("shape")
}

pub fn run(c: &mut Ctx) -> Result<()> {
    let mut shapes: Vec<Vec<usize>> = nchw_shapes().iter().map(|s| s.to_vec()).collect();
    shapes.extend([vec![3, 17], vec![1, 3], vec![64, 5]]);
    for shape in shapes {
        let case = format!("{shape:?}");
        let ch = shape[1];
        let (x, gamma, beta, dy) = (c.nonzero(&shape), c.nonzero(&[ch]), c.nonzero(&[ch]), c.nonzero(&shape));
        let (gx, ggamma, gbeta, gdy) = (c.upload(&x)?, c.upload(&gamma)?, c.upload(&beta)?, c.upload(&dy)?);

        // Train forward.
        let (want_y, stats) = cpu::batch_norm_train_forward(&x, &gamma, &beta, EPS);
        let (y, gstats) = c.gpu.batch_norm_train_forward(&gx, &ggamma, &gbeta, EPS)?;
        c.check("batch_norm_train_forward", &case, &y, &want_y, F32_TOL)?;
        c.check("batch_norm_train_forward mean", &case, &gstats.mean, &vec_tensor(&stats.mean), F32_TOL)?;
        c.check("batch_norm_train_forward var", &case, &gstats.var, &vec_tensor(&stats.var), F32_TOL)?;
        c.check("batch_norm_train_forward invstd", &case, &gstats.invstd, &vec_tensor(&stats.invstd), F32_TOL)?;

        // Train backward, from the CPU's statistics.
        let (want_dx, want_dgamma, want_dbeta) = cpu::batch_norm_train_backward(&dy, &x, &gamma, &stats);
        let cpu_stats = c.gpu.upload_batch_norm_stats(&stats)?;
        let grads = c.gpu.batch_norm_train_backward(&gdy, &gx, &ggamma, &cpu_stats)?;
        c.check("batch_norm_train_backward dx", &case, &grads.dx, &want_dx, F32_TOL)?;
        c.check("batch_norm_train_backward dgamma", &case, &grads.dgamma, &want_dgamma, F32_TOL)?;
        c.check("batch_norm_train_backward dbeta", &case, &grads.dbeta, &want_dbeta, F32_TOL)?;

        // Eval forward and backward with positive running variances.
        let rmean = c.nonzero(&[ch]);
        let rvar = Tensor::uniform(&[ch], 0.5, 1.5, &mut c.rng);
        let (grmean, grvar) = (c.upload(&rmean)?, c.upload(&rvar)?);
        let want = cpu::batch_norm_eval_forward(&x, &gamma, &beta, &rmean, &rvar, EPS);
        let y = c.gpu.batch_norm_eval_forward(&gx, &ggamma, &gbeta, &grmean, &grvar, EPS)?;
        c.check("batch_norm_eval_forward", &case, &y, &want, F32_TOL)?;
        let (want_dx, want_dgamma, want_dbeta) = cpu::batch_norm_eval_backward(&dy, &x, &gamma, &rmean, &rvar, EPS);
        let grads = c.gpu.batch_norm_eval_backward(&gdy, &gx, &ggamma, &grmean, &grvar, EPS)?;
        c.check("batch_norm_eval_backward dx", &case, &grads.dx, &want_dx, F32_TOL)?;
        c.check("batch_norm_eval_backward dgamma", &case, &grads.dgamma, &want_dgamma, F32_TOL)?;
        c.check("batch_norm_eval_backward dbeta", &case, &grads.dbeta, &want_dbeta, F32_TOL)?;

        // Running statistics (needs more than one value per channel).
        let count = x.numel() / ch;
        if count > 1 {
            let (mut want_mean, mut want_var) = (rmean.clone(), rvar.clone());
            cpu::update_running_stats(&mut want_mean, &mut want_var, &stats, count, 0.1);
            let (mut gm, mut gv) = (c.upload(&rmean)?, c.upload(&rvar)?);
            c.gpu.update_running_stats(&mut gm, &mut gv, &cpu_stats, count, 0.1)?;
            c.check("update_running_stats mean", &case, &gm, &want_mean, F32_TOL)?;
            c.check("update_running_stats var", &case, &gv, &want_var, F32_TOL)?;
        }
    }
    Ok(())
}
