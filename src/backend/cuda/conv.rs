//! Wrappers for kernels/conv.cu (being written).
