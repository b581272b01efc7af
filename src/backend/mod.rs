//! Backends: `cpu` is the reference (the specification of every op); `cuda` runs the same ops as
//! hand-written kernels from `kernels/*.cu`.

pub mod cpu;
pub mod cuda;
