//! The embedding API: load a checkpoint and predict, in a few lines.
//!
//! ```no_run
//! let p = mtcool::predict::Predictor::load("runs/mtcool-full-s0/model.safetensors")?;
//! let images = mtcool::Tensor::zeros(&[1, 1, 28, 28]); // normalised 28×28 MultiMNIST images
//! let classes = &p.predict(&images)?[0]; // [left digit, right digit] of image 0
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{ensure, Result};

use crate::checkpoint;
use crate::model::{Arch, MultiTaskModel, Read, TaskSpec};
use crate::tape::Tape;
use crate::Tensor;

pub struct Predictor {
    model: MultiTaskModel,
}

impl Predictor {
    /// Loads a `model.safetensors` written by `mtcool train` (the file carries the model's structure).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Predictor { model: checkpoint::load(path.as_ref())? })
    }

    pub fn from_model(model: MultiTaskModel) -> Self {
        Predictor { model }
    }

    pub fn model(&self) -> &MultiTaskModel {
        &self.model
    }

    /// Moves the model to `backend` (e.g. a GPU opened with `backend::cuda::Gpu::new`); `logits` then
    /// runs there and returns host tensors.
    pub fn to_backend(&mut self, backend: &crate::backend::Backend) -> Result<()> {
        self.model.store.to_backend(backend)
    }

    /// Every task's logits (in task order) for normalised images [B, C, H, W]: [B, classes] for a classification task,
    /// [B, classes, H, W] for a segmentation task. MultiLeNet models take [B, 1, 28, 28]; U-Net models
    /// take the channels they were trained with and any H, W divisible by 4. The logits are host
    /// tensors wherever the model runs.
    pub fn logits(&self, images: &Tensor) -> Result<Vec<Tensor>> {
        let s = images.shape();
        let cfg = &self.model.cfg;
        let ok = s.len() == 4
            && s[0] > 0
            && s[1] == cfg.in_channels
            && match cfg.arch {
                Arch::Lenet => s[2..] == [28, 28],
                Arch::Unet { .. } => s[2] > 0 && s[3] > 0 && s[2].is_multiple_of(4) && s[3].is_multiple_of(4),
            };
        ensure!(
            ok,
            "images of shape {s:?} do not fit this {:?} model with {} input channel(s)",
            cfg.arch,
            cfg.in_channels
        );
        let mut tape = Tape::new();
        tape.set_grad_enabled(false);
        let x = tape.constant(images.to_backend(&self.model.store.backend())?);
        let logits = self.model.forward_all(&mut tape, x, &vec![Read::Train; self.model.n_tasks()])?;
        logits.iter().map(|&l| tape.value(l).to_host()).collect()
    }

    /// The predicted class of each task for each image, `[image][task]` (models whose tasks are all
    /// image-level classifications; for segmentation take `logits` and its per-pixel arg-max).
    pub fn predict(&self, images: &Tensor) -> Result<Vec<Vec<u32>>> {
        ensure!(
            self.model.cfg.tasks.iter().all(|t| matches!(t, TaskSpec::Classify { .. })),
            "predict() is for classification tasks only; this model segments: use logits()"
        );
        let logits = self.logits(images)?;
        let argmax = |t: &Tensor, i: usize| {
            let c = t.shape()[1];
            let row = &t.data()[i * c..(i + 1) * c];
            (0..c).fold(0, |best, j| if row[j] > row[best] { j } else { best }) as u32
        };
        Ok((0..logits[0].shape()[0]).map(|i| logits.iter().map(|t| argmax(t, i)).collect()).collect())
    }
}
