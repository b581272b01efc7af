//! Named parameters with their gradients. The tape reads parameter values from here and its backward pass
//! accumulates gradients back into here; the optimisers update values in place. Parameters are created
//! on the host (initialisation, checkpoints) and moved to a GPU as a whole (`to_backend`).

use anyhow::Result;

use crate::backend::{dispatch, Backend};
use crate::Tensor;

/// Handle of one parameter in a `ParamStore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub value: Tensor,
    pub grad: Tensor,
}

#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; names must be unique (they become checkpoint keys).
    pub fn add(&mut self, name: &str, value: Tensor) -> ParamId {
        assert!(self.find(name).is_none(), "duplicate parameter name {name}");
        let grad = Tensor::zeros(value.shape());
        self.params.push(Param { name: name.to_string(), value, grad });
        ParamId(self.params.len() - 1)
    }

    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name).map(ParamId)
    }

    pub fn get(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }
    pub fn get_mut(&mut self, id: ParamId) -> &mut Param {
        &mut self.params[id.0]
    }
    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }
    pub fn grad(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].grad
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
    pub fn ids(&self) -> impl Iterator<Item = ParamId> {
        (0..self.params.len()).map(ParamId)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    /// Total number of scalar parameters among `ids`.
    pub fn count(&self, ids: &[ParamId]) -> usize {
        ids.iter().map(|&id| self.value(id).numel()).sum()
    }

    pub fn zero_grad(&mut self, ids: &[ParamId]) -> Result<()> {
        for &id in ids {
            dispatch::fill_zero(&mut self.params[id.0].grad)?;
        }
        Ok(())
    }

    /// Where the parameters live (the host for an empty store).
    pub fn backend(&self) -> Backend {
        self.params.first().map_or(Backend::Cpu, |p| p.value.backend())
    }

    /// Moves every value and gradient to `backend` (an upload or a download; nothing when already there).
    pub fn to_backend(&mut self, backend: &Backend) -> Result<()> {
        for p in &mut self.params {
            p.value = p.value.to_backend(backend)?;
            p.grad = p.grad.to_backend(backend)?;
        }
        Ok(())
    }

    /// Sets parameter `id` to `value` (shapes must agree), in place: a GPU parameter keeps its buffer
    /// (a captured graph reads it there).
    pub fn set_value(&mut self, id: ParamId, value: &Tensor) -> Result<()> {
        let p = &mut self.params[id.0];
        anyhow::ensure!(
            p.value.shape() == value.shape(),
            "{}: shape {:?} for {:?}",
            p.name,
            value.shape(),
            p.value.shape()
        );
        match p.value.backend() {
            Backend::Cuda(gpu) => gpu.write_slice(value.host()?.data(), &mut p.value.gpu_mut()?.buf),
            Backend::Cpu => {
                p.value.data_mut().copy_from_slice(value.host()?.data());
                Ok(())
            }
        }
    }
}
