//! Wrappers for kernels/pool.cu (being written).
