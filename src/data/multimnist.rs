//! MultiMNIST, built the standard way (Sener & Koltun, "Multi-Task Learning as Multi-Objective
//! Optimization", NeurIPS 2018): two MNIST digits share one image, and the two tasks are to classify the
//! upper-left digit and the lower-right digit.
//!
//! Construction of example `i` of a split of `n` MNIST images (all 28×28):
//! 1. the partner `j` is drawn uniformly from the whole split, `j ∈ 0..n` (it may equal `i`), with one
//!    `StdRng::seed_from_u64(seed)` consumed in order i = 0, 1, …;
//! 2. on a 36×36 zero canvas image `i` is pasted with its top-left corner at (0, 0) and image `j` at
//!    (6, 6); where they overlap the canvas takes the per-pixel maximum;
//! 3. the canvas is resized back to 28×28 by nearest neighbour with the pixel-centre rule
//!    `src = floor((dst + 0.5) · 36 / 28)` in each axis (canvas rows/columns 2, 6, 11, 15, 20, 24, 29
//!    and 33 are dropped);
//! 4. pixels are scaled to [0, 1] and normalised with the MNIST statistics: `(v/255 − MEAN) / STD`;
//! 5. the labels are `left = label_i`, `right = label_j`.
//!
//! The build is deterministic in `seed` and needs no canvas: each output pixel reads its two source
//! pixels directly through a precomputed index table.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::mnist::MnistSplit;
use crate::Tensor;

/// MNIST pixel mean after scaling to [0, 1].
pub const MEAN: f32 = 0.1307;
/// MNIST pixel standard deviation after scaling to [0, 1].
pub const STD: f32 = 0.3081;

/// Side of the MNIST digits and of the output images.
pub const SIDE: usize = 28;
/// Side of the canvas the two digits are placed on.
pub const CANVAS: usize = 36;
/// Offset of the second (right) digit on the canvas, in both axes.
pub const SHIFT: usize = 6;

/// A MultiMNIST set: `len()` normalised 28×28 images with a left and a right label each.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiMnist {
    pub images: Vec<f32>,
    pub left: Vec<u8>,
    pub right: Vec<u8>,
}

impl MultiMnist {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.left.len()
    }

    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// The examples at `idx` as a `[B, 1, 28, 28]` tensor with their left and right labels.
    /// Panics if an index is out of range (a caller bug, not a data error).
    pub fn batch(&self, idx: &[usize]) -> (Tensor, Vec<u32>, Vec<u32>) {
        const PX: usize = SIDE * SIDE;
        let mut data = Vec::with_capacity(idx.len() * PX);
        for &i in idx {
            data.extend_from_slice(&self.images[i * PX..(i + 1) * PX]);
        }
        let x = Tensor::new(&[idx.len(), 1, SIDE, SIDE], data).expect("batch shape agrees by construction");
        let left = idx.iter().map(|&i| self.left[i] as u32).collect();
        let right = idx.iter().map(|&i| self.right[i] as u32).collect();
        (x, left, right)
    }
}

/// Canvas coordinate that output coordinate `dst` samples: `floor((dst + 0.5) · 36 / 28)`, in exact
/// integer arithmetic.
pub fn resize_src(dst: usize) -> usize {
    (2 * dst + 1) * CANVAS / (2 * SIDE)
}

/// Builds MultiMNIST from the first `min(limit, n)` images of `split` (see the module doc).
/// Panics if the split's images are not 28×28 (`load_mnist` guarantees they are).
pub fn build(split: &MnistSplit, seed: u64, limit: Option<usize>) -> MultiMnist {
    assert_eq!((split.rows, split.cols), (SIDE, SIDE), "MultiMNIST needs 28x28 MNIST images");
    const PX: usize = SIDE * SIDE;
    let n = split.len();
    let count = limit.map_or(n, |l| l.min(n));

    // Per-axis source tables: where output coordinate d reads the left digit and the right digit
    // (None where the canvas position lies outside that digit).
    let mut from_left = [None; SIDE];
    let mut from_right = [None; SIDE];
    for d in 0..SIDE {
        let s = resize_src(d);
        from_left[d] = (s < SIDE).then_some(s);
        from_right[d] = (s >= SHIFT && s - SHIFT < SIDE).then(|| s - SHIFT);
    }
    // Normalised value of every byte.
    let lut: Vec<f32> = (0..=255u8).map(|v| (v as f32 / 255.0 - MEAN) / STD).collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut images = vec![0f32; count * PX];
    let mut left = Vec::with_capacity(count);
    let mut right = Vec::with_capacity(count);
    for (i, out) in images.chunks_exact_mut(PX).enumerate() {
        let j = rng.random_range(0..n);
        let a = &split.images[i * PX..(i + 1) * PX];
        let b = &split.images[j * PX..(j + 1) * PX];
        for y in 0..SIDE {
            let row = &mut out[y * SIDE..(y + 1) * SIDE];
            for x in 0..SIDE {
                let va = match (from_left[y], from_left[x]) {
                    (Some(sy), Some(sx)) => a[sy * SIDE + sx],
                    _ => 0,
                };
                let vb = match (from_right[y], from_right[x]) {
                    (Some(sy), Some(sx)) => b[sy * SIDE + sx],
                    _ => 0,
                };
                row[x] = lut[va.max(vb) as usize];
            }
        }
        left.push(split.labels[i]);
        right.push(split.labels[j]);
    }
    MultiMnist { images, left, right }
}
