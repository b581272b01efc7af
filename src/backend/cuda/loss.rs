//! Wrappers for kernels/loss.cu (being written).
