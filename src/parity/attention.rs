//! Parity cases for kernels/attention.cu: batched GEMM (every transpose, forward and backward), softmax
//! over the last axis, sigmoid gating, against src/backend/cpu/attention.rs.

use anyhow::Result;

use super::{Ctx, F32_TOL};
use crate::backend::cpu::attention as cpu;
use crate::Tensor;

/// (batch, m, k, n): single items, odd sizes, one past a 64-wide tile, and the attention shapes of the
/// MultiLeNet encoder (144 positions, 4-d keys) and a fundus bottleneck (256 positions).
const BMM: &[(usize, usize, usize, usize)] =
    &[(1, 1, 1, 1), (3, 7, 5, 9), (2, 65, 33, 129), (5, 144, 4, 144), (4, 256, 8, 256), (256, 16, 5, 16)];

/// (rows, cols) of the softmax cases: cols below, at and past a warp, and long rows.
const SOFTMAX: &[(usize, usize)] = &[(1, 1), (7, 5), (33, 32), (100, 33), (4096, 144), (3, 4099)];

pub fn run(c: &mut Ctx) -> Result<()> {
    for (i, &(batch, m, k, n)) in BMM.iter().enumerate() {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            if i > 2 && (ta, tb) == (true, true) {
                continue; // tt is not used by the models; the small shapes cover it
            }
            bmm_case(c, batch, m, k, n, ta, tb)?;
        }
    }
    for &(rows, cols) in SOFTMAX {
        let case = format!("[{rows}, {cols}]");
        let x = Tensor::new(&[rows, cols], c.nonzero(&[rows * cols]).data().iter().map(|v| 4.0 * v).collect())?;
        let gx = c.upload(&x)?;
        let y = c.gpu.softmax_lastdim_forward(&gx)?;
        let want = cpu::softmax_lastdim_forward(&x);
        c.check("softmax_lastdim_forward", &case, &y, &want, F32_TOL)?;
        let dy = c.nonzero(&[rows, cols]);
        let dx = c.gpu.softmax_lastdim_backward(&c.upload(&dy)?, &c.upload(&want)?)?;
        c.check("softmax_lastdim_backward", &case, &dx, &cpu::softmax_lastdim_backward(&dy, &want), F32_TOL)?;
    }
    for &n in &[1usize, 7, 1000, 65537, 3_000_017] {
        let case = format!("n={n}");
        let x = c.nonzero(&[n]);
        let g = Tensor::new(&[n], c.nonzero(&[n]).data().iter().map(|v| 6.0 * v).collect())?;
        let (gx, gg) = (c.upload(&x)?, c.upload(&g)?);
        let y = c.gpu.sigmoid_gate_forward(&gx, &gg)?;
        c.check("sigmoid_gate_forward", &case, &y, &cpu::sigmoid_gate_forward(&x, &g), F32_TOL)?;
        let dy = c.nonzero(&[n]);
        let (dx, dg) = c.gpu.sigmoid_gate_backward(&c.upload(&dy)?, &gx, &gg)?;
        let (want_dx, want_dg) = cpu::sigmoid_gate_backward(&dy, &x, &g);
        c.check("sigmoid_gate_backward", &format!("dx {case}"), &dx, &want_dx, F32_TOL)?;
        c.check("sigmoid_gate_backward", &format!("dg {case}"), &dg, &want_dg, F32_TOL)?;
    }
    Ok(())
}

fn bmm_case(c: &mut Ctx, batch: usize, m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Result<()> {
    let name = match (ta, tb) {
        (false, false) => "bmm_nn",
        (false, true) => "bmm_nt",
        (true, false) => "bmm_tn",
        (true, true) => "bmm_tt",
    };
    let case = format!("b={batch} m={m} k={k} n={n}");
    let a = c.nonzero(&if ta { [batch, k, m] } else { [batch, m, k] });
    let b = c.nonzero(&if tb { [batch, n, k] } else { [batch, k, n] });
    let (ga, gb) = (c.upload(&a)?, c.upload(&b)?);
    let y = c.gpu.bmm(&ga, ta, &gb, tb)?;
    c.check(name, &case, &y, &cpu::bmm(&a, ta, &b, tb), F32_TOL)?;
    let dy = c.nonzero(&[batch, m, n]);
    let (da, db) = c.gpu.bmm_backward(&ga, ta, &gb, tb, &c.upload(&dy)?)?;
    let (want_da, want_db) = cpu::bmm_backward(&a, ta, &b, tb, &dy);
    c.check(name, &format!("backward da {case}"), &da, &want_da, F32_TOL)?;
    c.check(name, &format!("backward db {case}"), &db, &want_db, F32_TOL)?;
    Ok(())
}
