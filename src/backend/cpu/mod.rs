//! The CPU reference backend: plain, readable loops. Every op's forward and backward lives here,
//! one file per family; the CUDA kernels are checked against these functions.

pub mod attention;
pub mod concat;
pub mod conv;
mod conv_shifted;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod upsample;
pub mod workers;

/// (N, C, H, W) of a 4-d shape; panics naming `what` otherwise (callers check shapes first).
pub(crate) fn shape4(shape: &[usize], what: &str) -> (usize, usize, usize, usize) {
    assert_eq!(shape.len(), 4, "{what} shape must be 4-d, got {shape:?}");
    (shape[0], shape[1], shape[2], shape[3])
}
