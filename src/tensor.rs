//! Tensors: f32, contiguous, row-major (NCHW for images), stored on the host (`Storage::Cpu`) or in
//! GPU memory (`Storage::Cuda`). The element type is fixed to f32 for now; `DType` names it so that
//! f16/bf16 storage (via `half`) can be added without changing call sites.
//!
//! Host reads (`data`, `item`, ...) are for host tensors only: a GPU tensor is read by an explicit
//! [`Tensor::to_host`] (a download), never by a silent copy. Cloning a GPU tensor shares its buffer
//! (values are immutable while shared); writing to one ([`Tensor::gpu_mut`]) first makes it unique.

use std::sync::Arc;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::backend::cuda::{Gpu, GpuTensor};
use crate::backend::Backend;

/// Element type of a tensor's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DType {
    F32,
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// Where a tensor's values live.
#[derive(Clone)]
pub enum Storage {
    Cpu(Vec<f32>),
    Cuda(CudaStorage),
}

/// A tensor's GPU buffer (its shape equals the tensor's) and the GPU that owns it.
#[derive(Clone)]
pub struct CudaStorage {
    pub gpu: Arc<Gpu>,
    pub t: Arc<GpuTensor>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.storage {
            Storage::Cpu(d) => f.debug_struct("Tensor").field("shape", &self.shape).field("data", d).finish(),
            Storage::Cuda(_) => f.debug_struct("Tensor").field("shape", &self.shape).field("device", &"cuda").finish(),
        }
    }
}

/// Host tensors compare by value; GPU tensors are equal only to themselves (same buffer).
impl PartialEq for Tensor {
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && match (&self.storage, &other.storage) {
                (Storage::Cpu(a), Storage::Cpu(b)) => a == b,
                (Storage::Cuda(a), Storage::Cuda(b)) => Arc::ptr_eq(&a.t, &b.t),
                _ => false,
            }
    }
}

/// A shape error: the one kind of failure tensor construction can have.
#[derive(Debug, thiserror::Error)]
#[error("shape {shape:?} needs {expected} elements, got {got}")]
pub struct ShapeError {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub got: usize,
}

impl Tensor {
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Tensor, ShapeError> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(ShapeError { shape: shape.to_vec(), expected, got: data.len() });
        }
        Ok(Tensor { shape: shape.to_vec(), storage: Storage::Cpu(data) })
    }

    /// Builds a tensor whose shape and length are known to agree (internal use by ops).
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?}");
        Tensor { shape, storage: Storage::Cpu(data) }
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(vec![v; shape.iter().product()]) }
    }

    pub fn scalar(v: f32) -> Tensor {
        Tensor { shape: vec![], storage: Storage::Cpu(vec![v]) }
    }

    /// Standard normal entries times `std`.
    pub fn randn(shape: &[usize], std: f32, rng: &mut impl Rng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(rng);
                std * z
            })
            .collect::<Vec<f32>>();
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(data) }
    }

    /// Uniform entries in [lo, hi).
    pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        Tensor { shape: shape.to_vec(), storage: Storage::Cpu(data) }
    }

    pub fn dtype(&self) -> DType {
        DType::F32
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Where this tensor's ops run.
    pub fn backend(&self) -> Backend {
        match &self.storage {
            Storage::Cpu(_) => Backend::Cpu,
            Storage::Cuda(c) => Backend::Cuda(c.gpu.clone()),
        }
    }
    pub fn is_cuda(&self) -> bool {
        matches!(self.storage, Storage::Cuda(_))
    }

    /// The host values. Panics for a GPU tensor: reading one is an explicit [`Tensor::to_host`].
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(d) => d,
            Storage::Cuda(_) => {
                panic!("host read of a GPU tensor {:?}: download it first (Tensor::to_host)", self.shape)
            }
        }
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(d) => d,
            Storage::Cuda(_) => panic!("host write to a GPU tensor {:?}", self.shape),
        }
    }
    pub fn into_data(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(d) => d,
            Storage::Cuda(_) => {
                panic!("host read of a GPU tensor {:?}: download it first (Tensor::to_host)", self.shape)
            }
        }
    }

    /// The single value of a one-element host tensor.
    pub fn item(&self) -> f32 {
        debug_assert_eq!(self.numel(), 1);
        self.data()[0]
    }

    /// A tensor on `gpu` holding `t` (whose shape becomes the tensor's).
    pub fn from_gpu(gpu: &Arc<Gpu>, t: GpuTensor) -> Tensor {
        Tensor { shape: t.shape.clone(), storage: Storage::Cuda(CudaStorage { gpu: gpu.clone(), t: Arc::new(t) }) }
    }
    /// The GPU buffer of a GPU tensor.
    pub fn gpu_tensor(&self) -> Option<&GpuTensor> {
        match &self.storage {
            Storage::Cuda(c) => Some(&c.t),
            Storage::Cpu(_) => None,
        }
    }
    /// Mutable access to a GPU tensor's buffer, copying it first if another tensor shares it
    /// (copy-on-write: clones never see the change).
    pub fn gpu_mut(&mut self) -> anyhow::Result<&mut GpuTensor> {
        let Storage::Cuda(c) = &mut self.storage else { anyhow::bail!("gpu_mut of a host tensor {:?}", self.shape) };
        if Arc::get_mut(&mut c.t).is_none() {
            let copy = c.gpu.copy_reshaped(&c.t, &self.shape)?;
            c.t = Arc::new(copy);
        }
        Ok(Arc::get_mut(&mut c.t).expect("unique after the copy"))
    }

    /// A copy with its own buffer (a device copy for a GPU tensor; `clone` would share it).
    pub fn deep_copy(&self) -> anyhow::Result<Tensor> {
        match &self.storage {
            Storage::Cpu(_) => Ok(self.clone()),
            Storage::Cuda(c) => Ok(Tensor::from_gpu(&c.gpu, c.gpu.copy_reshaped(&c.t, &self.shape)?)),
        }
    }

    /// This tensor on `backend`: an upload, a download, or a cheap clone when it is already there.
    pub fn to_backend(&self, backend: &Backend) -> anyhow::Result<Tensor> {
        match (backend, &self.storage) {
            (Backend::Cpu, _) => self.to_host(),
            (Backend::Cuda(g), Storage::Cuda(c)) if Arc::ptr_eq(g, &c.gpu) => Ok(self.clone()),
            (Backend::Cuda(g), _) => {
                let host = self.to_host()?;
                Ok(Tensor::from_gpu(g, g.upload(&host)?))
            }
        }
    }
    /// A host copy (a download for a GPU tensor: waits for the kernels that produce it).
    pub fn to_host(&self) -> anyhow::Result<Tensor> {
        match &self.storage {
            Storage::Cpu(_) => Ok(self.clone()),
            Storage::Cuda(c) => c.gpu.download(&c.t),
        }
    }
    /// The host values to read: the tensor itself on the host, a download of a GPU tensor.
    pub fn host(&self) -> anyhow::Result<std::borrow::Cow<'_, Tensor>> {
        Ok(match &self.storage {
            Storage::Cpu(_) => std::borrow::Cow::Borrowed(self),
            Storage::Cuda(c) => std::borrow::Cow::Owned(c.gpu.download(&c.t)?),
        })
    }
    /// Zeros of `shape` on `backend`.
    pub fn zeros_on(shape: &[usize], backend: &Backend) -> anyhow::Result<Tensor> {
        match backend {
            Backend::Cpu => Ok(Tensor::zeros(shape)),
            Backend::Cuda(g) => Ok(Tensor::from_gpu(g, g.zeros(shape)?)),
        }
    }

    /// (N, C, H, W) of a 4-d tensor.
    pub fn dims4(&self) -> (usize, usize, usize, usize) {
        assert_eq!(self.shape.len(), 4, "expected a 4-d NCHW tensor, got shape {:?}", self.shape);
        (self.shape[0], self.shape[1], self.shape[2], self.shape[3])
    }

    /// (rows, cols) of a 2-d tensor.
    pub fn dims2(&self) -> (usize, usize) {
        assert_eq!(self.shape.len(), 2, "expected a 2-d tensor, got shape {:?}", self.shape);
        (self.shape[0], self.shape[1])
    }

    /// Same data, new shape with the same number of elements (a device copy for a GPU tensor).
    pub fn reshape(&self, shape: &[usize]) -> anyhow::Result<Tensor> {
        match &self.storage {
            Storage::Cpu(d) => Ok(Tensor::new(shape, d.clone())?),
            Storage::Cuda(c) => {
                let expected = shape.iter().product::<usize>();
                if expected != self.numel() {
                    return Err(ShapeError { shape: shape.to_vec(), expected, got: self.numel() }.into());
                }
                Ok(Tensor::from_gpu(&c.gpu, c.gpu.copy_reshaped(&c.t, shape)?))
            }
        }
    }

    /// Elementwise map into a new tensor of the same shape.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Tensor {
        Tensor { shape: self.shape.clone(), storage: Storage::Cpu(self.data().iter().map(|&x| f(x)).collect()) }
    }

    /// Elementwise combination of two same-shaped tensors.
    pub fn zip(&self, other: &Tensor, f: impl Fn(f32, f32) -> f32) -> Tensor {
        assert_eq!(self.shape, other.shape, "shape mismatch");
        let data = self.data().iter().zip(other.data()).map(|(&a, &b)| f(a, b)).collect();
        Tensor { shape: self.shape.clone(), storage: Storage::Cpu(data) }
    }

    /// `self += other`, elementwise.
    pub fn add_assign(&mut self, other: &Tensor) {
        assert_eq!(self.shape, other.shape, "shape mismatch");
        let other = other.data();
        self.data_mut().iter_mut().zip(other).for_each(|(a, &b)| *a += b);
    }

    pub fn sum(&self) -> f64 {
        self.data().iter().map(|&x| x as f64).sum()
    }

    /// max |a − b| / max(max |b|, tiny): the norm-wise relative error used by parity and gradchecks.
    pub fn rel_err(&self, reference: &Tensor) -> f64 {
        assert_eq!(self.shape, reference.shape, "shape mismatch");
        let diff = self.data().iter().zip(reference.data()).map(|(&a, &b)| (a as f64 - b as f64).abs());
        let scale = reference.data().iter().map(|&b| (b as f64).abs()).fold(0.0, f64::max);
        diff.fold(0.0, f64::max) / scale.max(1e-12)
    }

    pub fn all_finite(&self) -> bool {
        self.data().iter().all(|x| x.is_finite())
    }
}
