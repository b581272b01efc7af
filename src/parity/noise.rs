//! Parity cases for kernels/noise.cu: bit-identical to src/noise.rs.

use anyhow::Result;

use super::elementwise::SIZES;
use super::Ctx;
use crate::noise::{NoiseKey, WeightNoise};
use crate::Tensor;

pub fn run(c: &mut Ctx) -> Result<()> {
    let keys = [
        NoiseKey { seed: 0, step: 0, stream: 1, sample: 0 },
        NoiseKey { seed: 0x0123_4567_89ab_cdef, step: 7, stream: 2, sample: 3 },
        NoiseKey { seed: u64::MAX, step: u32::MAX, stream: 0xD0, sample: u32::MAX },
    ];
    let b = 0.05f32;
    for key in keys {
        for &n in SIZES {
            let case = format!("{key:?} n={n}");
            let out = c.gpu.noise_uniform(key, b, n)?;
            let want = Tensor::new(&[n], (0..n).map(|i| key.uniform(i as u32, b)).collect())?;
            c.check_exact("noise_uniform", &case, &out, &want)?;

            let w = c.nonzero(&[n]);
            let offset = 12_345;
            let out = c.gpu.add_noise(&c.upload(&w)?, WeightNoise { key, b, offset })?;
            let want = Tensor::new(&[n], key.perturb(w.data(), b, offset))?;
            c.check_exact("add_noise", &case, &out, &want)?;
        }
    }
    Ok(())
}
