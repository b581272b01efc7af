//! Parity cases for kernels/concat.cu: concat of two and three inputs with different channel counts,
//! and the split back; pure copies, compared bit for bit.

use anyhow::Result;

use super::Ctx;
use crate::backend::cpu::concat as cpu;

pub fn run(c: &mut Ctx) -> Result<()> {
    let rests: &[&[usize]] = &[&[], &[1, 1], &[5, 7], &[28, 28], &[65, 3]];
    let channel_sets: &[&[usize]] = &[&[3, 1], &[1, 17, 3], &[17, 17]];
    for n in [1, 3] {
        for rest in rests {
            for sizes in channel_sets {
                let shape_of = |ci: usize| [&[n, ci][..], rest].concat();
                let case = format!("n={n} rest={rest:?} channels={sizes:?}");
                let xs: Vec<_> = sizes.iter().map(|&ci| c.nonzero(&shape_of(ci))).collect();
                let gxs = xs.iter().map(|x| c.upload(x)).collect::<Result<Vec<_>>>()?;
                let want = cpu::concat_channels(&xs.iter().collect::<Vec<_>>());
                let y = c.gpu.concat_channels(&gxs.iter().collect::<Vec<_>>())?;
                c.check_exact("concat_channels", &case, &y, &want)?;

                let dy = c.nonzero(want.shape());
                let wants = cpu::split_channels(&dy, sizes);
                let parts = c.gpu.split_channels(&c.upload(&dy)?, sizes)?;
                for (i, (got, want)) in parts.iter().zip(&wants).enumerate() {
                    c.check_exact("split_channels", &format!("{case} part {i}"), got, want)?;
                }
            }
        }
    }
    Ok(())
}
