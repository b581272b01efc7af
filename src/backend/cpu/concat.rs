//! Channel concatenation along dim 1 and its backward, the split.
//! Kernels: `kernels/concat.cu` (same names).
//!
//! For [N, C_i, ...] inputs the output is [N, ΣC_i, ...]: for each sample n, the C_i·inner block of
//! input i follows that of input i − 1.

use super::elementwise::channel_dims;
use crate::Tensor;

/// [N, C1, ...], [N, C2, ...], … → [N, C1 + C2 + …, ...]; all dims other than 1 must be equal.
pub fn concat_channels(xs: &[&Tensor]) -> Tensor {
    assert!(!xs.is_empty(), "concat_channels of no tensors");
    let first = xs[0].shape();
    let (n, _, inner) = channel_dims(xs[0]);
    for x in xs {
        let s = x.shape();
        assert!(
            s.len() == first.len() && s[0] == first[0] && s[2..] == first[2..],
            "concat_channels: shape {s:?} does not match {first:?} outside dim 1"
        );
    }
    let c_total: usize = xs.iter().map(|x| x.shape()[1]).sum();

    let mut out = Vec::with_capacity(n * c_total * inner);
    for b in 0..n {
        for x in xs {
            let block = x.shape()[1] * inner;
            out.extend_from_slice(&x.data()[b * block..(b + 1) * block]);
        }
    }
    let mut shape = first.to_vec();
    shape[1] = c_total;
    Tensor::from_parts(shape, out)
}

/// The backward of `concat_channels`: cuts [N, ΣC_i, ...] into [N, C_i, ...] pieces, `sizes` = C_i.
pub fn split_channels(dy: &Tensor, sizes: &[usize]) -> Vec<Tensor> {
    let (n, c, inner) = channel_dims(dy);
    assert_eq!(sizes.iter().sum::<usize>(), c, "split_channels: sizes {sizes:?} do not add up to {c} channels");
    let d = dy.data();
    let mut parts: Vec<Vec<f32>> = sizes.iter().map(|&ci| Vec::with_capacity(n * ci * inner)).collect();
    for b in 0..n {
        let mut offset = b * c * inner;
        for (part, &ci) in parts.iter_mut().zip(sizes) {
            part.extend_from_slice(&d[offset..offset + ci * inner]);
            offset += ci * inner;
        }
    }
    parts
        .into_iter()
        .zip(sizes)
        .map(|(data, &ci)| {
            let mut shape = dy.shape().to_vec();
            shape[1] = ci;
            Tensor::from_parts(shape, data)
        })
        .collect()
}
