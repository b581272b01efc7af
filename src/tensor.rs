//! Host tensors: f32, contiguous, row-major (NCHW for images). This is the CPU backend's storage and
//! the host side of every device transfer. The element type is fixed to f32 for now; `DType` names it so
//! that f16/bf16 storage (via `half`) can be added without changing call sites.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// Element type of a tensor's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum DType {
    F32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
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
        Ok(Tensor { shape: shape.to_vec(), data })
    }

    /// Builds a tensor whose shape and length are known to agree (internal use by ops).
    pub(crate) fn from_parts(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?}");
        Tensor { shape, data }
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn full(shape: &[usize], v: f32) -> Tensor {
        Tensor { shape: shape.to_vec(), data: vec![v; shape.iter().product()] }
    }

    pub fn scalar(v: f32) -> Tensor {
        Tensor { shape: vec![], data: vec![v] }
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
        Tensor { shape: shape.to_vec(), data }
    }

    /// Uniform entries in [lo, hi).
    pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut impl Rng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        Tensor { shape: shape.to_vec(), data }
    }

    pub fn dtype(&self) -> DType {
        DType::F32
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> f32 {
        debug_assert_eq!(self.data.len(), 1);
        self.data[0]
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

    /// Same data, new shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, ShapeError> {
        Tensor::new(shape, self.data.clone())
    }

    /// Elementwise map into a new tensor of the same shape.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Tensor {
        Tensor { shape: self.shape.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    /// Elementwise combination of two same-shaped tensors.
    pub fn zip(&self, other: &Tensor, f: impl Fn(f32, f32) -> f32) -> Tensor {
        assert_eq!(self.shape, other.shape, "shape mismatch");
        let data = self.data.iter().zip(&other.data).map(|(&a, &b)| f(a, b)).collect();
        Tensor { shape: self.shape.clone(), data }
    }

    /// `self += other`, elementwise.
    pub fn add_assign(&mut self, other: &Tensor) {
        assert_eq!(self.shape, other.shape, "shape mismatch");
        self.data.iter_mut().zip(&other.data).for_each(|(a, &b)| *a += b);
    }

    pub fn sum(&self) -> f64 {
        self.data.iter().map(|&x| x as f64).sum()
    }

    /// max |a − b| / max(max |b|, tiny): the norm-wise relative error used by parity and gradchecks.
    pub fn rel_err(&self, reference: &Tensor) -> f64 {
        assert_eq!(self.shape, reference.shape, "shape mismatch");
        let diff = self.data.iter().zip(&reference.data).map(|(&a, &b)| (a as f64 - b as f64).abs());
        let scale = reference.data.iter().map(|&b| (b as f64).abs()).fold(0.0, f64::max);
        diff.fold(0.0, f64::max) / scale.max(1e-12)
    }

    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }
}
