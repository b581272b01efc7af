//! Channel concat / split wrappers: kernels/concat.cu, CPU reference src/backend/cpu/concat.rs. One
//! launch per part (input of the concat, output of the split); pure copies, bit-identical to the CPU.

use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;

use super::{channel_dims, Gpu, GpuTensor};

impl Gpu {
    /// [N, C1, ...], [N, C2, ...], … → y [N, C1 + C2 + …, ...]; all dims other than 1 must be equal.
    pub(super) fn concat_channels_into(&self, xs: &[&GpuTensor], y: &mut GpuTensor) -> Result<()> {
        ensure!(!xs.is_empty(), "concat_channels of no tensors");
        let (n, c_total, inner) = channel_dims(&y.shape)?;
        let mut offset = 0;
        for x in xs {
            let s = &x.shape;
            ensure!(
                s.len() == y.shape.len() && s[0] == n && s[2..] == y.shape[2..],
                "concat_channels: input shape {s:?} does not match output {:?} outside dim 1",
                y.shape
            );
            offset += s[1];
        }
        ensure!(
            offset == c_total,
            "concat_channels: inputs have {offset} channels, output {:?} has {c_total}",
            y.shape
        );
        let mut offset = 0;
        for x in xs {
            let cp = x.shape[1];
            let (numel, part_block, whole_block, off) =
                (x.numel() as u64, (cp * inner) as u64, (c_total * inner) as u64, (offset * inner) as u64);
            if numel > 0 {
                self.work(0.0, 8.0 * x.numel() as f64);
                self.launch("concat_channels", self.cfg(x.numel()), |l| {
                    l.arg(&mut *y.buf).arg(&*x.buf).arg(&numel).arg(&part_block).arg(&whole_block).arg(&off);
                })?;
            }
            offset += cp;
        }
        Ok(())
    }
    pub fn concat_channels(&self, xs: &[&GpuTensor]) -> Result<GpuTensor> {
        ensure!(!xs.is_empty(), "concat_channels of no tensors");
        channel_dims(&xs[0].shape)?;
        let mut shape = xs[0].shape.clone();
        shape[1] = xs.iter().map(|x| x.shape.get(1).copied().unwrap_or(0)).sum();
        let mut y = self.empty(&shape)?;
        self.concat_channels_into(xs, &mut y)?;
        Ok(y)
    }

    /// The backward of `concat_channels`: cuts dy [N, ΣC_i, ...] into `parts` [N, C_i, ...].
    pub(super) fn split_channels_into(&self, dy: &GpuTensor, parts: &mut [GpuTensor]) -> Result<()> {
        let (n, c_total, inner) = channel_dims(&dy.shape)?;
        let mut offset = 0;
        for p in parts.iter() {
            let s = &p.shape;
            ensure!(
                s.len() == dy.shape.len() && s[0] == n && s[2..] == dy.shape[2..],
                "split_channels: part shape {s:?} does not match dy {:?} outside dim 1",
                dy.shape
            );
            offset += s[1];
        }
        ensure!(offset == c_total, "split_channels: parts have {offset} channels, dy {:?} has {c_total}", dy.shape);
        let mut offset = 0;
        for p in parts.iter_mut() {
            let cp = p.shape[1];
            let (numel, part_block, whole_block, off) =
                (p.numel() as u64, (cp * inner) as u64, (c_total * inner) as u64, (offset * inner) as u64);
            if numel > 0 {
                self.work(0.0, 8.0 * p.numel() as f64);
                self.launch("split_channels", self.cfg(p.numel()), |l| {
                    l.arg(&mut *p.buf).arg(&*dy.buf).arg(&numel).arg(&part_block).arg(&whole_block).arg(&off);
                })?;
            }
            offset += cp;
        }
        Ok(())
    }
    /// `sizes` = C_i of each part.
    pub fn split_channels(&self, dy: &GpuTensor, sizes: &[usize]) -> Result<Vec<GpuTensor>> {
        let (_, c, _) = channel_dims(&dy.shape)?;
        ensure!(sizes.iter().sum::<usize>() == c, "split_channels: sizes {sizes:?} do not add up to {c} channels");
        let mut parts = sizes
            .iter()
            .map(|&ci| {
                let mut shape = dy.shape.clone();
                shape[1] = ci;
                self.empty(&shape)
            })
            .collect::<Result<Vec<_>>>()?;
        self.split_channels_into(dy, &mut parts)?;
        Ok(parts)
    }
}
