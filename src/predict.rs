//! The embedding API: load a checkpoint and predict, in a few lines.
//!
//! ```no_run
//! let p = mtcool::predict::Predictor::load("runs/mtcool-full-s0/model.safetensors")?;
//! let images = mtcool::Tensor::zeros(&[1, 1, 28, 28]); // normalised 28×28 MultiMNIST images
//! let [left, right] = p.predict(&images)?[0];
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::path::Path;

use anyhow::{ensure, Result};

use crate::checkpoint;
use crate::model::{MultiTaskModel, Read};
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

    /// Both tasks' logits, each [B, classes], for normalised images [B, 1, 28, 28].
    pub fn logits(&self, images: &Tensor) -> Result<[Tensor; 2]> {
        let s = images.shape();
        ensure!(
            s.len() == 4 && s[1..] == [1, 28, 28] && s[0] > 0,
            "expected images of shape [B, 1, 28, 28], got {s:?}"
        );
        let mut tape = Tape::new();
        tape.set_grad_enabled(false);
        let x = tape.constant(images.clone());
        let out = self.model.forward_all(&mut tape, x, [Read::Train, Read::Train]);
        Ok(out.map(|v| tape.value(v).clone()))
    }

    /// The predicted class of each task for each image.
    pub fn predict(&self, images: &Tensor) -> Result<Vec<[u32; 2]>> {
        let [a, b] = self.logits(images)?;
        let argmax = |t: &Tensor, i: usize| {
            let c = t.shape()[1];
            let row = &t.data()[i * c..(i + 1) * c];
            (0..c).fold(0, |best, j| if row[j] > row[best] { j } else { best }) as u32
        };
        Ok((0..a.shape()[0]).map(|i| [argmax(&a, i), argmax(&b, i)]).collect())
    }
}
