//! Parity cases for kernels/pool.cu: max/avg pooling (several windows and strides, overlapping ones
//! included), global average pooling; argmax must equal the CPU's, including on ties and NaN.

use anyhow::Result;

use super::{Ctx, F32_TOL};
use crate::backend::cpu::pool as cpu;
use crate::Tensor;

/// The odd NCHW shapes every image-op family runs: N 1 and 3, C 1, 3 and 17, H×W 1×1, 5×7, 28×28, 65×3.
pub(super) fn nchw_shapes() -> Vec<[usize; 4]> {
    let mut shapes = vec![];
    for n in [1, 3] {
        for c in [1, 3, 17] {
            for (h, w) in [(1, 1), (5, 7), (28, 28), (65, 3)] {
                shapes.push([n, c, h, w]);
            }
        }
    }
    shapes
}

/// (k, stride): the identity, the usual 2×2/2, overlapping windows, and a window not dividing the input.
const WINDOWS: &[(usize, usize)] = &[(1, 1), (2, 2), (3, 1), (3, 2)];

pub fn run(c: &mut Ctx) -> Result<()> {
    for shape in nchw_shapes() {
        let x = c.nonzero(&shape);
        let dx_in = c.upload(&x)?;
        for &(k, s) in WINDOWS {
            if shape[2] < k || shape[3] < k {
                continue;
            }
            let case = format!("{shape:?} k={k} s={s}");
            max_pool_case(c, &x, k, s, &case)?;

            let want = cpu::avg_pool2d_forward(&x, k, s);
            let y = c.gpu.avg_pool2d_forward(&dx_in, k, s)?;
            c.check("avg_pool2d_forward", &case, &y, &want, F32_TOL)?;
            let dy = c.nonzero(want.shape());
            let dx = c.gpu.avg_pool2d_backward(&c.upload(&dy)?, &shape, k, s)?;
            c.check("avg_pool2d_backward", &case, &dx, &cpu::avg_pool2d_backward(&dy, &shape, k, s), F32_TOL)?;
        }
        let case = format!("{shape:?}");
        let want = cpu::global_avg_pool_forward(&x);
        let y = c.gpu.global_avg_pool_forward(&dx_in)?;
        c.check("global_avg_pool_forward", &case, &y, &want, F32_TOL)?;
        let dy = c.nonzero(&shape[..2]);
        let dx = c.gpu.global_avg_pool_backward(&c.upload(&dy)?, &shape)?;
        c.check("global_avg_pool_backward", &case, &dx, &cpu::global_avg_pool_backward(&dy, &shape), F32_TOL)?;
    }

    // Ties (three distinct values, so most windows hold several maxima) and NaN: the first maximum in
    // window order wins, a NaN beats every number.
    let shape = [3, 3, 9, 7];
    let levels = [-1.0f32, 0.5, 1.0];
    let ties =
        Tensor::new(&shape, (0..shape.iter().product::<usize>()).map(|i| levels[(i * 7 + i / 5) % 3]).collect())?;
    let mut with_nan = c.nonzero(&shape);
    for i in (0..with_nan.numel()).step_by(11) {
        with_nan.data_mut()[i] = f32::NAN;
    }
    for (label, x) in [("ties", ties), ("nan", with_nan)] {
        for &(k, s) in WINDOWS {
            max_pool_case(c, &x, k, s, &format!("{label} {shape:?} k={k} s={s}"))?;
        }
    }
    Ok(())
}

/// Forward (y, argmax) and backward (from the CPU's argmax) of one max-pooling configuration. y is
/// compared bit for bit (it copies elements of x, NaN included).
fn max_pool_case(c: &mut Ctx, x: &Tensor, k: usize, s: usize, case: &str) -> Result<()> {
    let shape = x.shape().to_vec();
    let (want_y, want_arg) = cpu::max_pool2d_forward(x, k, s);
    let (y, arg) = c.gpu.max_pool2d_forward(&c.upload(x)?, k, s)?;
    c.check_exact("max_pool2d_forward", case, &y, &want_y)?;
    let same = c.gpu.download_argmax(&arg)? == want_arg;
    c.record("max_pool2d_forward argmax", case, if same { 0.0 } else { f64::INFINITY }, 0.0);

    let dy = c.nonzero(want_y.shape());
    let cpu_arg = c.gpu.upload_argmax(&want_arg, &shape, k, s)?;
    let dx = c.gpu.max_pool2d_backward(&c.upload(&dy)?, &cpu_arg, &shape)?;
    c.check("max_pool2d_backward", case, &dx, &cpu::max_pool2d_backward(&dy, &want_arg, &shape), F32_TOL)
}
