//! Multi-task training methods: one optimisation step on one mini-batch.
//! - `summed_step`: Independent and Joint — minimise L1 + L2 with one backward pass.
//! - `mtcool::mtcool_step`: the alternating, noise-regularised, b-box-projected MT-CooL step.
//! - `gradient_step::combined_step`: Joint with the tasks' shared gradients combined by PCGrad, CAGrad,
//!   MGDA(-UB) or GradDrop (`combiners`).

pub mod combiners;
pub mod gradient_step;
pub mod mtcool;

use anyhow::{ensure, Result};

use crate::backend::dispatch::{self, Labels};
use crate::backend::Backend;
use crate::model::{MultiTaskModel, Read, TaskId, TaskSpec};
use crate::optim::Optimizer;
use crate::settings::DiceMode;
use crate::tape::{Tape, Var};
use crate::Tensor;

/// A mini-batch shared by the tasks, on the host: images and one label vector per task (one label per
/// image for classification, one per pixel in (n, h, w) order for segmentation).
pub struct Batch {
    pub x: Tensor,
    pub labels: Vec<Vec<u32>>,
}

/// What a task's loss reads, on the step's device: class labels, class weights, and for segmentation
/// the one-hot target of soft Dice.
pub struct Targets {
    pub labels: Labels,
    pub weights: Option<Tensor>,
    pub onehot: Option<Tensor>,
}

/// A batch placed where the step runs (one upload per step): the images and each task's targets.
pub struct Placed<'a> {
    /// The images on the step's device (the host batch itself on the CPU: no copy).
    pub x: std::borrow::Cow<'a, Tensor>,
    pub targets: Vec<Targets>,
}

impl Batch {
    /// Uploads the images and builds each task's targets on `backend`.
    pub fn place(&self, backend: &Backend, obj: &Objective) -> Result<Placed<'_>> {
        let x = match backend {
            Backend::Cpu => std::borrow::Cow::Borrowed(&self.x),
            _ => std::borrow::Cow::Owned(self.x.to_backend(backend)?),
        };
        let s = x.shape().to_vec();
        anyhow::ensure!(
            self.labels.len() == obj.specs.len(),
            "{} label sets for {} tasks",
            self.labels.len(),
            obj.specs.len()
        );
        let mut targets = Vec::with_capacity(obj.specs.len());
        for t in TaskId::all(obj.specs.len()) {
            let labels = &self.labels[t.0];
            let onehot = match obj.specs[t.0] {
                TaskSpec::Segment { classes } => {
                    ensure!(s.len() == 4, "segmentation needs [N, C, H, W] images, got {s:?}");
                    let nhw = [s[0], s[2], s[3]];
                    ensure!(
                        labels.len() == nhw.iter().product::<usize>(),
                        "{} pixel labels for images {s:?}",
                        labels.len()
                    );
                    Some(dispatch::one_hot(labels, classes, &nhw, backend)?)
                }
                TaskSpec::Classify { .. } => None,
            };
            let weights = obj.class_weights[t.0].as_ref().map(|w| Tensor::from_parts(vec![w.len()], w.clone()));
            let weights = weights.map(|w| w.to_backend(backend)).transpose()?;
            targets.push(Targets { labels: Labels::on(labels, backend)?, weights, onehot });
        }
        Ok(Placed { x, targets })
    }
}

/// What one step saw, on the host: each task's loss and how many of the batch's items its logits got
/// right.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: Vec<f32>,
    pub correct: Vec<usize>,
}

/// What one step saw, where it ran: each task's loss and correct count as scalars on the step's device.
/// Nothing is read back during the step; `host` downloads them (the trainer does, once per logging
/// interval).
#[derive(Clone, Debug)]
pub struct StepOut {
    pub loss: Vec<Tensor>,
    pub correct: Vec<Tensor>,
}

impl StepOut {
    pub fn host(&self) -> Result<StepStats> {
        Ok(StepStats {
            loss: self.loss.iter().map(host_value).collect::<Result<_>>()?,
            correct: self.correct.iter().map(|c| Ok(host_value(c)? as usize)).collect::<Result<_>>()?,
        })
    }
}

/// A scalar's value on the host (an explicit download for a GPU scalar).
pub fn host_value(t: &Tensor) -> Result<f32> {
    Ok(t.host()?.item())
}

/// Soft Dice's smoothing term (per channel, see `backend::cpu::loss::soft_dice_forward`).
pub const DICE_EPS: f32 = 1.0;

/// What each task minimises: its kind (`TaskSpec`) and optional class weights for cross-entropy.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub specs: Vec<TaskSpec>,
    pub class_weights: Vec<Option<Vec<f32>>>,
}

impl Objective {
    pub fn unweighted(specs: &[TaskSpec]) -> Self {
        Objective { specs: specs.to_vec(), class_weights: vec![None; specs.len()] }
    }

    /// Task `t`'s loss on `logits`.
    pub fn loss(&self, tape: &mut Tape, t: TaskId, logits: Var, targets: &Targets) -> Result<Var> {
        task_loss(tape, logits, targets, self.specs[t.0])
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
pub fn task_loss(tape: &mut Tape, logits: Var, targets: &Targets, spec: TaskSpec) -> Result<Var> {
    let ce = tape.softmax_cross_entropy(logits, &targets.labels, targets.weights.as_ref())?;
    match (spec, &targets.onehot) {
        (TaskSpec::Classify { .. }, _) => Ok(ce),
        (TaskSpec::Segment { .. }, Some(onehot)) => {
            let dice = tape.soft_dice(logits, onehot, DiceMode::MultiClass, DICE_EPS)?;
            tape.add(ce, dice)
        }
        (TaskSpec::Segment { .. }, None) => anyhow::bail!("a segmentation task needs its one-hot target"),
    }
}

/// One step on L1 + … + LT over every parameter (Joint shares the extractor; Independent shares nothing, so
/// this equals two separate steps).
pub fn summed_step(model: &mut MultiTaskModel, opt: &mut Optimizer, batch: &Batch, obj: &Objective) -> Result<StepOut> {
    let placed = batch.place(&model.store.backend(), obj)?;
    summed_step_on(model, opt, &placed.x, &placed.targets, obj)
}

/// [`summed_step`] on a batch already placed on the model's device (`x`, `targets`): what a CUDA
/// graph captures.
pub fn summed_step_on(
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    x: &Tensor,
    targets: &[Targets],
    obj: &Objective,
) -> Result<StepOut> {
    let params = model.all_params();
    model.store.zero_grad(&params)?;
    let stats = {
        let mut tape = Tape::new();
        let x = tape.constant(x.clone());
        let n = model.n_tasks();
        let logits = model.forward_all(&mut tape, x, &vec![Read::Train; n])?;
        let losses: Vec<Var> =
            TaskId::all(n).map(|t| obj.loss(&mut tape, t, logits[t.0], &targets[t.0])).collect::<Result<_>>()?;
        // ((L1 + L2) + L3) + …: the two-task sum first, as before.
        let mut total = losses[0];
        for &l in &losses[1..] {
            total = tape.add(total, l)?;
        }
        tape.backward(total)?.accumulate_into(&mut model.store)?;
        let correct = |t: usize| dispatch::count_correct(tape.value(logits[t]), &targets[t].labels);
        StepOut {
            loss: losses.iter().map(|&l| tape.value(l).clone()).collect(),
            correct: (0..n).map(correct).collect::<Result<_>>()?,
        }
    };
    opt.step(&mut model.store, &params, None)?;
    Ok(stats)
}
