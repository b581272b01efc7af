//! Wrappers for kernels/upsample.cu (being written).
