//! Wrappers for kernels/linear.cu (being written).
