//! Parity cases for kernels/conv.cu: forward (with and without bias), the fused noisy forward, data
//! and weight gradients, and the transposed convolution built on them, against
//! src/backend/cpu/conv.rs on odd shapes and the MultiLeNet shapes.

use anyhow::Result;

use crate::backend::cuda::StepScalars;

use super::{Ctx, F32_TOL};
use crate::backend::cpu::conv::{self as cpu, Conv2dCfg};
use crate::noise::NoiseKey;
use crate::Tensor;

/// One convolution: x [n, ci, h, w], w [co, ci, k, k].
#[derive(Clone, Copy)]
struct Case {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    k: usize,
    cfg: Conv2dCfg,
}

impl Case {
    fn name(&self) -> String {
        let Case { n, ci, co, h, w, k, cfg } = *self;
        format!("x[{n},{ci},{h},{w}] k{k} co{co} s{} p{}", cfg.stride, cfg.padding)
    }
    fn fits(&self) -> bool {
        self.h + 2 * self.cfg.padding >= self.k && self.w + 2 * self.cfg.padding >= self.k
    }
    /// The transposed convolution of an [n, ci, h, w] input has a non-empty output.
    fn transpose_fits(&self) -> bool {
        let (s, p) = (self.cfg.stride, self.cfg.padding);
        (self.h - 1) * s + self.k > 2 * p && (self.w - 1) * s + self.k > 2 * p
    }
}

pub fn run(c: &mut Ctx) -> Result<()> {
    let mut i = 0usize;
    for n in [1, 3] {
        for ci in [1, 3, 17] {
            for (h, w) in [(1, 1), (5, 7), (28, 28)] {
                for k in [1, 3, 5] {
                    for stride in [1, 2] {
                        for padding in [0, 1, 2] {
                            let co = [3, 17, 1][(i + ci) % 3];
                            let case = Case { n, ci, co, h, w, k, cfg: Conv2dCfg { stride, padding } };
                            if !case.fits() {
                                continue;
                            }
                            i += 1;
                            conv_case(c, case, i.is_multiple_of(2), i.is_multiple_of(3))?;
                            if i.is_multiple_of(4) && case.transpose_fits() {
                                transpose_case(c, case, i.is_multiple_of(8))?;
                            }
                        }
                    }
                }
            }
        }
    }
    // MultiLeNet's two convolutions (batch 256), channels spanning several 64-wide tiles, a
    // transposed case with bias, a non-square kernel.
    let cfg = Conv2dCfg { stride: 1, padding: 0 };
    conv_case(c, Case { n: 256, ci: 1, co: 10, h: 28, w: 28, k: 5, cfg }, true, true)?;
    conv_case(c, Case { n: 256, ci: 10, co: 20, h: 12, w: 12, k: 5, cfg }, true, true)?;
    conv_case(
        c,
        Case { n: 2, ci: 70, co: 130, h: 9, w: 9, k: 3, cfg: Conv2dCfg { stride: 1, padding: 1 } },
        true,
        true,
    )?;
    transpose_case(c, Case { n: 3, ci: 5, co: 4, h: 6, w: 9, k: 3, cfg: Conv2dCfg { stride: 2, padding: 1 } }, true)?;
    non_square(c)
}

/// Forward (with or without bias), optionally the noisy forward, data and weight gradients.
fn conv_case(c: &mut Ctx, case: Case, with_bias: bool, noisy: bool) -> Result<()> {
    let Case { n, ci, co, h, w, k, cfg } = case;
    let name = case.name();
    let (x, wt, b) = (c.nonzero(&[n, ci, h, w]), c.nonzero(&[co, ci, k, k]), c.nonzero(&[co]));
    let (gx, gw, gb) = (c.upload(&x)?, c.upload(&wt)?, c.upload(&b)?);
    let (bias, gbias) = if with_bias { (Some(&b), Some(&gb)) } else { (None, None) };

    let want = cpu::conv2d_forward(&x, &wt, bias, cfg);
    let y = c.gpu.conv2d_forward(&gx, &gw, gbias, cfg)?;
    c.check("conv2d_forward", &format!("{name}{}", if with_bias { " bias" } else { "" }), &y, &want, F32_TOL)?;

    if noisy {
        // θ = [w, b] flat with w at offset 37: perturb on the CPU, then the plain forward.
        let key = NoiseKey { seed: 0xc0ff_ee00_1234_5678, step: 3, stream: 1, sample: (ci % 4) as u32 };
        let (radius, w_offset) = (0.1f32, 37u32);
        let b_offset = w_offset + wt.numel() as u32;
        let wp = Tensor::new(wt.shape(), key.perturb(wt.data(), radius, w_offset))?;
        let bp = Tensor::new(&[co], key.perturb(b.data(), radius, b_offset))?;
        let want = cpu::conv2d_forward(&x, &wp, Some(&bp), cfg);
        let y = c.gpu.conv2d_forward_noisy(&gx, &gw, Some(&gb), cfg, key, radius, w_offset, b_offset)?;
        c.check("conv2d_forward_noisy", &name, &y, &want, F32_TOL)?;
        // The graph path: the step number read from device memory, not from the (wrong) argument.
        let step = c.gpu.upload_labels(&[key.step])?;
        let scalars = StepScalars { step_ptr: c.gpu.device_addr(&step), hyper_ptr: 0, max_slots: 0 };
        c.gpu.begin_step_capture(scalars);
        let wrong = NoiseKey { step: key.step + 1, ..key };
        let y = c.gpu.conv2d_forward_noisy(&gx, &gw, Some(&gb), cfg, wrong, radius, w_offset, b_offset);
        c.gpu.end_step_capture();
        c.check("conv2d_forward_noisy (step from device memory)", &name, &y?, &want, F32_TOL)?;
    }

    let dy = c.nonzero(want.shape());
    let gdy = c.upload(&dy)?;
    let dx = c.gpu.conv2d_backward_data(&gdy, &gw, x.shape(), cfg)?;
    c.check("conv2d_backward_data", &name, &dx, &cpu::conv2d_backward_data(&dy, &wt, x.shape(), cfg), F32_TOL)?;

    let dw = c.gpu.conv2d_backward_weight(&gdy, &gx, wt.shape(), cfg)?;
    c.check("conv2d_backward_weight", &name, &dw, &cpu::conv2d_backward_weight(&dy, &x, wt.shape(), cfg), F32_TOL)?;
    Ok(())
}

/// The transposed convolution of x [n, ci, h, w] with w [ci, co, k, k]: forward, data and weight
/// gradients (which run conv2d_backward_data, conv2d_forward and conv2d_backward_weight).
fn transpose_case(c: &mut Ctx, case: Case, with_bias: bool) -> Result<()> {
    let Case { n, ci, co, h, w, k, cfg } = case;
    let name = format!("transpose {}", case.name());
    let (x, wt, b) = (c.nonzero(&[n, ci, h, w]), c.nonzero(&[ci, co, k, k]), c.nonzero(&[co]));
    let (gx, gw, gb) = (c.upload(&x)?, c.upload(&wt)?, c.upload(&b)?);
    let (bias, gbias) = if with_bias { (Some(&b), Some(&gb)) } else { (None, None) };

    let want = cpu::conv_transpose2d_forward(&x, &wt, bias, cfg);
    let y = c.gpu.conv_transpose2d_forward(&gx, &gw, gbias, cfg)?;
    c.check(
        "conv2d_backward_data",
        &format!("{name} forward{}", if with_bias { " bias" } else { "" }),
        &y,
        &want,
        F32_TOL,
    )?;

    let dy = c.nonzero(want.shape());
    let gdy = c.upload(&dy)?;
    let dx = c.gpu.conv_transpose2d_backward_data(&gdy, &gw, x.shape(), cfg)?;
    let want_dx = cpu::conv_transpose2d_backward_data(&dy, &wt, x.shape(), cfg);
    c.check("conv2d_forward", &format!("{name} backward_data"), &dx, &want_dx, F32_TOL)?;

    let dw = c.gpu.conv_transpose2d_backward_weight(&gdy, &gx, wt.shape(), cfg)?;
    let want_dw = cpu::conv_transpose2d_backward_weight(&dy, &x, wt.shape(), cfg);
    c.check("conv2d_backward_weight", &format!("{name} backward_weight"), &dw, &want_dw, F32_TOL)?;
    Ok(())
}

/// A 3×2 kernel with stride 2, padding 1 on a 9×6 input: row and column index maths kept apart.
fn non_square(c: &mut Ctx) -> Result<()> {
    let cfg = Conv2dCfg { stride: 2, padding: 1 };
    let name = "x[2,3,9,6] w[5,3,3,2] s2 p1";
    let (x, wt, b) = (c.nonzero(&[2, 3, 9, 6]), c.nonzero(&[5, 3, 3, 2]), c.nonzero(&[5]));
    let (gx, gw, gb) = (c.upload(&x)?, c.upload(&wt)?, c.upload(&b)?);
    let want = cpu::conv2d_forward(&x, &wt, Some(&b), cfg);
    let y = c.gpu.conv2d_forward(&gx, &gw, Some(&gb), cfg)?;
    c.check("conv2d_forward", name, &y, &want, F32_TOL)?;
    let dy = c.nonzero(want.shape());
    let gdy = c.upload(&dy)?;
    let dx = c.gpu.conv2d_backward_data(&gdy, &gw, x.shape(), cfg)?;
    c.check("conv2d_backward_data", name, &dx, &cpu::conv2d_backward_data(&dy, &wt, x.shape(), cfg), F32_TOL)?;
    let dw = c.gpu.conv2d_backward_weight(&gdy, &gx, wt.shape(), cfg)?;
    c.check("conv2d_backward_weight", name, &dw, &cpu::conv2d_backward_weight(&dy, &x, wt.shape(), cfg), F32_TOL)?;
    Ok(())
}
