//! Wrappers for kernels/concat.cu (being written).
