//! Wrappers for kernels/norm.cu (being written).
