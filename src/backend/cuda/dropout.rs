//! Wrappers for kernels/dropout.cu (being written).
