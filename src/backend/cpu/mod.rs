//! The CPU reference backend: plain, readable loops. Every op's forward and backward lives here,
//! one file per family; the CUDA kernels are checked against these functions.

pub mod attention;
pub mod concat;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod pool;
pub mod upsample;
