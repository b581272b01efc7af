//! Multi-task training methods: one optimisation step on one mini-batch.
//! - `summed_step`: Independent and Joint — minimise L1 + L2 with one backward pass.
//! - `mtcool::mtcool_step`: the alternating, noise-regularised, b-box-projected MT-CooL step.

pub mod mtcool;

use crate::model::{MultiTaskModel, Read, TaskId};
use crate::optim::Optimizer;
use crate::tape::Tape;
use crate::Tensor;

/// A mini-batch shared by both tasks: images and one label vector per task.
pub struct Batch {
    pub x: Tensor,
    pub labels: [Vec<u32>; 2],
}

/// What one step saw: each task's loss and how many of the batch's items its logits got right.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: [f32; 2],
    pub correct: [usize; 2],
}

/// Number of rows of `logits` [B, C] whose arg-max equals the label.
pub fn count_correct(logits: &Tensor, labels: &[u32]) -> usize {
    let (b, c) = logits.dims2();
    (0..b)
        .filter(|&i| {
            let row = &logits.data()[i * c..(i + 1) * c];
            let best = (0..c).fold(0, |best, j| if row[j] > row[best] { j } else { best });
            best as u32 == labels[i]
        })
        .count()
}

/// One step on L1 + L2 over every parameter (Joint shares the extractor; Independent shares nothing, so
/// this equals two separate steps).
pub fn summed_step(model: &mut MultiTaskModel, opt: &mut Optimizer, batch: &Batch) -> StepStats {
    let params = model.all_params();
    model.store.zero_grad(&params);
    let mut tape = Tape::new();
    let x = tape.constant(batch.x.clone());
    let logits = model.forward_all(&mut tape, x, [Read::Train, Read::Train]);
    let losses = TaskId::BOTH.map(|t| tape.softmax_cross_entropy(logits[t.0], &batch.labels[t.0], None));
    let total = tape.add(losses[0], losses[1]);
    tape.backward(total).accumulate_into(&mut model.store);
    opt.step(&mut model.store, &params, None);
    StepStats {
        loss: losses.map(|l| tape.value(l).item()),
        correct: TaskId::BOTH.map(|t| count_correct(tape.value(logits[t.0]), &batch.labels[t.0])),
    }
}
