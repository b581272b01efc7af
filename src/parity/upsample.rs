//! Parity cases for kernels/upsample.cu: nearest (scales 1–3) and bilinear resizing (up, down, odd and
//! 1×1 targets), forward and backward.

use anyhow::Result;

use super::pool::nchw_shapes;
use super::{Ctx, F32_TOL};
use crate::backend::cpu::upsample as cpu;

pub fn run(c: &mut Ctx) -> Result<()> {
    for shape in nchw_shapes() {
        let x = c.nonzero(&shape);
        let gx = c.upload(&x)?;
        let (n, ch, h, w) = (shape[0], shape[1], shape[2], shape[3]);
        for scale in [1, 2, 3] {
            let case = format!("{shape:?} scale={scale}");
            let want = cpu::upsample_nearest_forward(&x, scale);
            let y = c.gpu.upsample_nearest_forward(&gx, scale)?;
            c.check("upsample_nearest_forward", &case, &y, &want, F32_TOL)?;
            let dy = c.nonzero(want.shape());
            let dx = c.gpu.upsample_nearest_backward(&c.upload(&dy)?, scale)?;
            c.check("upsample_nearest_backward", &case, &dx, &cpu::upsample_nearest_backward(&dy, scale), F32_TOL)?;
        }
        let sizes = [(2 * h, 2 * w), (h, w), (h + 3, (w / 2).max(1)), (1, 1), (37, 5), (3 * h + 1, 2 * w + 1)];
        for (oh, ow) in sizes {
            let case = format!("{shape:?} -> {oh}x{ow}");
            let want = cpu::upsample_bilinear_forward(&x, oh, ow);
            let y = c.gpu.upsample_bilinear_forward(&gx, oh, ow)?;
            c.check("upsample_bilinear_forward", &case, &y, &want, F32_TOL)?;
            let dy = c.nonzero(&[n, ch, oh, ow]);
            let dx = c.gpu.upsample_bilinear_backward(&c.upload(&dy)?, &shape)?;
            c.check("upsample_bilinear_backward", &case, &dx, &cpu::upsample_bilinear_backward(&dy, &shape), F32_TOL)?;
        }
    }
    Ok(())
}
