//! Backends: `cpu` is the reference (the specification of every op); `cuda` runs the same ops as
//! hand-written kernels from `kernels/*.cu`. `dispatch` is the one interface above them: a forward and
//! a backward function per op that runs on the device its tensors live on.

pub mod cpu;
pub mod cuda;
pub mod dispatch;

use std::sync::Arc;

/// Where ops run (and tensors live): the host, or one opened GPU.
#[derive(Clone)]
pub enum Backend {
    Cpu,
    Cuda(Arc<cuda::Gpu>),
}

impl Backend {
    pub fn is_cuda(&self) -> bool {
        matches!(self, Backend::Cuda(_))
    }
    /// Whether two backends are the same device.
    pub fn same(&self, other: &Backend) -> bool {
        match (self, other) {
            (Backend::Cpu, Backend::Cpu) => true,
            (Backend::Cuda(a), Backend::Cuda(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
    /// Opens the device `select` chose (a GPU: context, stream, kernels).
    pub fn open(device: crate::device::Device) -> anyhow::Result<Backend> {
        Ok(match device {
            crate::device::Device::Cpu => Backend::Cpu,
            crate::device::Device::Cuda(ordinal) => Backend::Cuda(Arc::new(cuda::Gpu::new(ordinal)?)),
        })
    }

    /// `cpu` or `cuda:<ordinal>`.
    pub fn name(&self) -> String {
        match self {
            Backend::Cpu => "cpu".into(),
            Backend::Cuda(g) => format!("cuda:{}", g.info().ordinal),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
