//! Parity cases for kernels/elementwise.cu.

use anyhow::Result;

use super::{Ctx, F32_TOL};
use crate::backend::cpu::elementwise as cpu;
use crate::backend::cuda::{Gpu, GpuTensor};
use crate::Tensor;

type Binary = fn(&Gpu, &GpuTensor, &GpuTensor) -> Result<GpuTensor>;

/// Odd sizes, including one larger than a full grid (exercises the grid-stride loops).
pub const SIZES: &[usize] = &[1, 7, 1000, 65537, 3_000_017];

pub fn run(c: &mut Ctx) -> Result<()> {
    for &n in SIZES {
        let case = format!("n={n}");
        let (a, b) = (c.nonzero(&[n]), c.nonzero(&[n]));
        let (da, db) = (c.upload(&a)?, c.upload(&b)?);
        let binaries: [(&str, Binary, Tensor); 3] = [
            ("add", |g, a, b| g.add(a, b), cpu::add(&a, &b)),
            ("sub", |g, a, b| g.sub(a, b), cpu::sub(&a, &b)),
            ("mul", |g, a, b| g.mul(a, b), cpu::mul(&a, &b)),
        ];
        for (name, f, want) in binaries {
            let y = f(c.gpu, &da, &db)?;
            c.check(name, &case, &y, &want, F32_TOL)?;
        }
        let y = c.gpu.scale(&da, -1.7)?;
        c.check("scale", &case, &y, &cpu::scale(&a, -1.7), F32_TOL)?;
        let y = c.gpu.relu(&da)?;
        c.check("relu", &case, &y, &cpu::relu(&a), F32_TOL)?;
        let y = c.gpu.relu_backward(&db, &da)?;
        c.check("relu_backward", &case, &y, &cpu::relu_backward(&b, &a), F32_TOL)?;
        // Wider inputs for the logistic, so both branches and the tails are exercised.
        let x = cpu::scale(&a, 5.0);
        let y = c.gpu.sigmoid(&c.upload(&x)?)?;
        let s = cpu::sigmoid(&x);
        c.check("sigmoid", &case, &y, &s, F32_TOL)?;
        let y = c.gpu.sigmoid_backward(&db, &c.upload(&s)?)?;
        c.check("sigmoid_backward", &case, &y, &cpu::sigmoid_backward(&b, &s), F32_TOL)?;
    }
    let shapes: &[&[usize]] = &[&[1, 1], &[7, 3], &[2, 3, 5, 7], &[3, 5, 65537], &[1, 1000, 7, 1], &[9, 1, 333, 5]];
    for &shape in shapes {
        let case = format!("{shape:?}");
        let (x, bias) = (c.nonzero(shape), c.nonzero(&[shape[1]]));
        let (dx, dbias) = (c.upload(&x)?, c.upload(&bias)?);
        let y = c.gpu.add_channel_bias(&dx, &dbias)?;
        c.check("add_channel_bias", &case, &y, &cpu::add_channel_bias(&x, &bias), F32_TOL)?;
        let db = c.gpu.add_channel_bias_backward(&dx)?;
        c.check("add_channel_bias_backward", &case, &db, &cpu::add_channel_bias_backward(&x), F32_TOL)?;
    }
    Ok(())
}
