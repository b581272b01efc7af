//! Inverted dropout: mask generation from a counter-based key, forward and backward.
//! Kernels: `kernels/dropout.cu` (same names).
//!
//! Element i (flat index) is kept iff `key.unit(i) >= p`; kept elements are scaled by 1 / (1 − p), so
//! the expectation is unchanged. The mask is a pure function of (key, index), so the GPU kernel draws
//! the same mask without storing it.

use crate::noise::NoiseKey;
use crate::Tensor;

/// The scaled keep mask: 1 / (1 − p) where kept, 0 where dropped. p in [0, 1); p = 0 keeps everything
/// (every unit value is > 0) and gives all ones.
pub fn dropout_mask(shape: &[usize], p: f32, key: NoiseKey) -> Tensor {
    assert!((0.0..1.0).contains(&p), "dropout probability {p} not in [0, 1)");
    let n: usize = shape.iter().product();
    assert!(n as u64 <= u32::MAX as u64 + 1, "dropout mask of {n} elements exceeds 32-bit indices");
    let keep_scale = 1.0 / (1.0 - p);
    let data = (0..n).map(|i| if key.unit(i as u32) >= p { keep_scale } else { 0.0 }).collect();
    Tensor::from_parts(shape.to_vec(), data)
}

/// y = x · mask.
pub fn dropout_forward(x: &Tensor, mask: &Tensor) -> Tensor {
    assert_eq!(x.shape(), mask.shape(), "dropout: x shape {:?} vs mask shape {:?}", x.shape(), mask.shape());
    x.zip(mask, |v, m| v * m)
}

/// dx = dy · mask.
pub fn dropout_backward(dy: &Tensor, mask: &Tensor) -> Tensor {
    assert_eq!(
        dy.shape(),
        mask.shape(),
        "dropout backward: dy shape {:?} vs mask shape {:?}",
        dy.shape(),
        mask.shape()
    );
    dy.zip(mask, |g, m| g * m)
}
