//! Parity cases for kernels/linear.cu: the GEMM kernels (every transpose, f32 and TF32), the linear
//! layer (bias epilogue, noisy forward, backward) against src/backend/cpu/linear.rs and gemm.rs.

use anyhow::Result;

use crate::backend::cuda::StepScalars;

use super::{Ctx, F32_TOL, TF32_TOL};
use crate::backend::cpu::{gemm, linear};
use crate::noise::NoiseKey;
use crate::Tensor;

/// GEMM extents: 1, odd, one past a 64-wide tile, two tiles + 1, and a few ragged tiles.
const SIZES: &[usize] = &[1, 7, 65, 129, 300];

/// (batch, in, out) of the linear-layer cases; the last two are MultiLeNet's fc layers.
const LINEAR: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 300, 7),
    (3, 17, 5),
    (7, 65, 129),
    (65, 129, 300),
    (129, 300, 1),
    (300, 7, 65),
    (256, 320, 50),
    (256, 50, 10),
];

pub fn run(c: &mut Ctx) -> Result<()> {
    gemm_cases(c)?;
    for (i, &(n, fin, fout)) in LINEAR.iter().enumerate() {
        linear_case(c, n, fin, fout, i.is_multiple_of(2))?;
    }
    Ok(())
}

/// op(A)·op(B) on the CPU (`gemm::sgemm`), A stored [m, k] or [k, m], B stored [k, n] or [n, k].
fn cpu_sgemm(a: &Tensor, ta: bool, b: &Tensor, tb: bool) -> Tensor {
    let (ar, ac) = a.dims2();
    let (br, bc) = b.dims2();
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    let mut y = vec![0f32; m * n];
    gemm::sgemm(ta, tb, m, n, k, 1.0, a.data(), ac, b.data(), bc, 0.0, &mut y, n);
    Tensor::new(&[m, n], y).expect("shape")
}

fn gemm_cases(c: &mut Ctx) -> Result<()> {
    let mut idx = 0usize;
    for &m in SIZES {
        for &n in SIZES {
            for &k in SIZES {
                idx += 1;
                let case = format!("m={m} n={n} k={k}");
                let (a, b) = (c.nonzero(&[m, k]), c.nonzero(&[k, n]));
                let (ga, gb) = (c.upload(&a)?, c.upload(&b)?);
                let y = c.gpu.matmul(&ga, &gb)?;
                c.check("sgemm_nn", &format!("matmul {case}"), &y, &linear::matmul(&a, &b), F32_TOL)?;
                if idx.is_multiple_of(3) {
                    let dy = c.nonzero(&[m, n]);
                    let (da, db) = c.gpu.matmul_backward(&ga, &gb, &c.upload(&dy)?)?;
                    let (want_da, want_db) = linear::matmul_backward(&a, &b, &dy);
                    c.check("sgemm_nt", &format!("matmul_backward da {case}"), &da, &want_da, F32_TOL)?;
                    c.check("sgemm_tn", &format!("matmul_backward db {case}"), &db, &want_db, F32_TOL)?;
                }
                if idx % 3 == 1 {
                    // Both operands stored transposed: a as [k, m], b as [n, k].
                    let (at, bt) = (c.nonzero(&[k, m]), c.nonzero(&[n, k]));
                    let y = c.gpu.sgemm(&c.upload(&at)?, true, &c.upload(&bt)?, true, None, false)?;
                    c.check("sgemm_tt", &case, &y, &cpu_sgemm(&at, true, &bt, true), F32_TOL)?;
                }
                // TF32: only where C has enough entries that ‖C‖∞ is not one cancelling dot product.
                if m * n >= 49 && idx.is_multiple_of(2) {
                    let (ta, tb) = (idx.is_multiple_of(4), idx % 8 < 4);
                    let sa = if ta { [k, m] } else { [m, k] };
                    let sb = if tb { [n, k] } else { [k, n] };
                    let (a2, b2) = (c.nonzero(&sa), c.nonzero(&sb));
                    let y = c.gpu.sgemm(&c.upload(&a2)?, ta, &c.upload(&b2)?, tb, None, true)?;
                    let name = match (ta, tb) {
                        (false, false) => "sgemm_tf32_nn",
                        (false, true) => "sgemm_tf32_nt",
                        (true, false) => "sgemm_tf32_tn",
                        (true, true) => "sgemm_tf32_tt",
                    };
                    c.check(name, &case, &y, &cpu_sgemm(&a2, ta, &b2, tb), TF32_TOL)?;
                }
            }
        }
    }
    Ok(())
}

fn linear_case(c: &mut Ctx, n: usize, fin: usize, fout: usize, with_bias: bool) -> Result<()> {
    let case = format!("x[{n},{fin}] w[{fout},{fin}]{}", if with_bias { " bias" } else { "" });
    let (x, w, b) = (c.nonzero(&[n, fin]), c.nonzero(&[fout, fin]), c.nonzero(&[fout]));
    let (gx, gw, gb) = (c.upload(&x)?, c.upload(&w)?, c.upload(&b)?);
    let (bias, gbias) = if with_bias { (Some(&b), Some(&gb)) } else { (None, None) };

    let y = c.gpu.linear_forward(&gx, &gw, gbias)?;
    let want = linear::linear_forward(&x, &w, bias);
    c.check("sgemm_nt", &format!("linear_forward {case}"), &y, &want, F32_TOL)?;
    if n * fout >= 49 {
        let y = c.gpu.linear_forward_with(&gx, &gw, gbias, true)?;
        c.check("sgemm_tf32_nt", &format!("linear_forward {case}"), &y, &want, TF32_TOL)?;
    }

    // Noisy forward against "perturb θ, then the plain forward": θ = [w, b] flat, w first.
    let key = NoiseKey { seed: 0x5eed_0123_4567_89ab, step: 11, stream: 2, sample: (n % 5) as u32 };
    let (radius, w_offset) = (0.05f32, 1000 + fin as u32);
    let b_offset = w_offset + (fout * fin) as u32;
    let wp = Tensor::new(&[fout, fin], key.perturb(w.data(), radius, w_offset))?;
    let bp = Tensor::new(&[fout], key.perturb(b.data(), radius, b_offset))?;
    let y = c.gpu.linear_forward_noisy(&gx, &gw, gbias, key, radius, w_offset, b_offset)?;
    let want = linear::linear_forward(&x, &wp, if with_bias { Some(&bp) } else { None });
    c.check("linear_forward_noisy", &case, &y, &want, F32_TOL)?;
    // The graph path: the step number read from device memory, not from the (wrong) argument.
    let step = c.gpu.upload_labels(&[key.step])?;
    c.gpu.begin_step_capture(StepScalars { step_ptr: c.gpu.device_addr(&step), hyper_ptr: 0, max_slots: 0 });
    let wrong = NoiseKey { step: key.step + 1, ..key };
    let y = c.gpu.linear_forward_noisy(&gx, &gw, gbias, wrong, radius, w_offset, b_offset);
    c.gpu.end_step_capture();
    c.check("linear_forward_noisy (step from device memory)", &case, &y?, &want, F32_TOL)?;

    let dy = c.nonzero(&[n, fout]);
    let (dx, dw, db) = c.gpu.linear_backward(&gx, &gw, &c.upload(&dy)?)?;
    let (want_dx, want_dw, want_db) = linear::linear_backward(&x, &w, &dy);
    c.check("sgemm_nn", &format!("linear_backward dx {case}"), &dx, &want_dx, F32_TOL)?;
    c.check("sgemm_tn", &format!("linear_backward dw {case}"), &dw, &want_dw, F32_TOL)?;
    c.check("linear_backward_bias", &case, &db, &want_db, F32_TOL)?;
    Ok(())
}
