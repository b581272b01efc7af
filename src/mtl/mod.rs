//! Multi-task training methods: one optimisation step on one mini-batch.
//! - `summed_step`: Independent and Joint — minimise L1 + L2 with one backward pass.
//! - `mtcool::mtcool_step`: the alternating, noise-regularised, b-box-projected MT-CooL step.
//! - `gradient_step::combined_step`: Joint with the tasks' shared gradients combined by PCGrad, CAGrad,
//!   MGDA(-UB) or GradDrop (`combiners`).

pub mod combiners;
pub mod gradient_step;
pub mod mtcool;

use crate::backend::cpu::loss::{one_hot, DiceMode};
use crate::metrics::count_correct;
use crate::model::{MultiTaskModel, Read, TaskId, TaskSpec};
use crate::optim::Optimizer;
use crate::tape::{Tape, Var};
use crate::Tensor;

/// A mini-batch shared by both tasks: images and one label vector per task (one label per image for
/// classification, one per pixel in (n, h, w) order for segmentation).
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

/// Soft Dice's smoothing term (per channel, see `backend::cpu::loss::soft_dice_forward`).
pub const DICE_EPS: f32 = 1.0;

/// What each task minimises: its kind (`TaskSpec`) and optional class weights for cross-entropy.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub specs: [TaskSpec; 2],
    pub class_weights: [Option<Vec<f32>>; 2],
}

impl Objective {
    pub fn unweighted(specs: [TaskSpec; 2]) -> Self {
        Objective { specs, class_weights: [None, None] }
    }

    /// Task `t`'s loss on `logits`.
    pub fn loss(&self, tape: &mut Tape, t: TaskId, logits: Var, labels: &[u32]) -> Var {
        task_loss(tape, logits, labels, self.specs[t.0], self.class_weights[t.0].as_deref())
    }
}

/// Inverse-frequency class weights w_c = n / (C · n_c), for imbalanced classification (classes never
/// seen get weight 1).
pub fn balanced_class_weights(labels: &[u32], classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    counts.iter().map(|&c| if c == 0 { 1.0 } else { labels.len() as f32 / (classes * c) as f32 }).collect()
}

/// Task `spec`'s training loss on `logits`: cross-entropy for classification; cross-entropy plus
/// multi-class soft Dice for segmentation (labels one per pixel, in (n, h, w) order).
pub fn task_loss(tape: &mut Tape, logits: Var, labels: &[u32], spec: TaskSpec, class_weights: Option<&[f32]>) -> Var {
    let ce = tape.softmax_cross_entropy(logits, labels, class_weights);
    match spec {
        TaskSpec::Classify { .. } => ce,
        TaskSpec::Segment { classes } => {
            let s = tape.value(logits).shape();
            let nhw = [s[0], s[2], s[3]];
            let target = one_hot(labels, classes, &nhw);
            let dice = tape.soft_dice(logits, &target, DiceMode::MultiClass, DICE_EPS);
            tape.add(ce, dice)
        }
    }
}

/// One step on L1 + L2 over every parameter (Joint shares the extractor; Independent shares nothing, so
/// this equals two separate steps).
pub fn summed_step(model: &mut MultiTaskModel, opt: &mut Optimizer, batch: &Batch, obj: &Objective) -> StepStats {
    let params = model.all_params();
    model.store.zero_grad(&params);
    let mut tape = Tape::new();
    let x = tape.constant(batch.x.clone());
    let logits = model.forward_all(&mut tape, x, [Read::Train, Read::Train]);
    let losses = TaskId::BOTH.map(|t| obj.loss(&mut tape, t, logits[t.0], &batch.labels[t.0]));
    let total = tape.add(losses[0], losses[1]);
    tape.backward(total).accumulate_into(&mut model.store);
    opt.step(&mut model.store, &params, None);
    StepStats {
        loss: losses.map(|l| tape.value(l).item()),
        correct: TaskId::BOTH.map(|t| count_correct(tape.value(logits[t.0]), &batch.labels[t.0])),
    }
}
