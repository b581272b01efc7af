//! Parity cases for kernels/dropout.cu: masks bit-identical to the CPU's Philox draw, forward/backward
//! products and the keyed (mask-free) form bit for bit.

use anyhow::Result;

use super::Ctx;
use crate::backend::cpu::dropout as cpu;
use crate::noise::{stream, NoiseKey};

pub fn run(c: &mut Ctx) -> Result<()> {
    let keys = [
        NoiseKey { seed: 0, step: 0, stream: stream::DROPOUT, sample: 0 },
        NoiseKey { seed: 0x0123_4567_89ab_cdef, step: 7, stream: stream::DROPOUT, sample: 3 },
        NoiseKey { seed: u64::MAX, step: u32::MAX, stream: stream::DROPOUT, sample: u32::MAX },
    ];
    let shapes: &[&[usize]] = &[&[1], &[7], &[3, 17, 5, 7], &[1, 3, 65, 3], &[65537], &[3_000_017]];
    for (ki, key) in keys.into_iter().enumerate() {
        for &shape in shapes {
            for p in [0.0f32, 0.3, 0.9] {
                // The large (beyond one grid) size once, to keep the suite quick.
                if shape == [3_000_017] && (ki > 0 || p != 0.3) {
                    continue;
                }
                let case = format!("{shape:?} p={p} {key:?}");
                let want_mask = cpu::dropout_mask(shape, p, key);
                let mask = c.gpu.dropout_mask(shape, p, key)?;
                c.check_exact("dropout_mask", &case, &mask, &want_mask)?;

                let (x, dy) = (c.nonzero(shape), c.nonzero(shape));
                let (gx, gdy, gmask) = (c.upload(&x)?, c.upload(&dy)?, c.upload(&want_mask)?);
                let want_y = cpu::dropout_forward(&x, &want_mask);
                let y = c.gpu.dropout_forward(&gx, &gmask)?;
                c.check_exact("dropout_forward", &case, &y, &want_y)?;
                let dx = c.gpu.dropout_backward(&gdy, &gmask)?;
                c.check_exact("dropout_backward", &case, &dx, &cpu::dropout_backward(&dy, &want_mask))?;
                let y = c.gpu.dropout_keyed(&gx, p, key)?;
                c.check_exact("dropout_keyed", &case, &y, &want_y)?;
            }
        }
    }
    Ok(())
}
