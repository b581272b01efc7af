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

/// A mini-batch on the host: images and one label vector per task (one label per image for
/// classification, one per pixel in (n, h, w) order for segmentation). Either every task reads the
/// same images `x`, or (tasks with their own data sets, partial labels) task t reads its own images
/// `task_x[t]`, which `labels[t]` describes.
pub struct Batch {
    /// The shared images; with per-task images, task 0's (a copy of `task_x[0]`).
    pub x: Tensor,
    pub labels: Vec<Vec<u32>>,
    pub task_x: Option<Vec<Tensor>>,
}

/// Task `t`'s entry of `xs`: one input shared by every task, or one per task.
pub fn input_of<T>(xs: &[T], t: TaskId) -> &T {
    if xs.len() == 1 {
        &xs[0]
    } else {
        &xs[t.0]
    }
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
    /// The images on the step's device (the host batch itself on the CPU: no copy); with per-task
    /// images, task 0's.
    pub x: std::borrow::Cow<'a, Tensor>,
    /// Per-task images: tasks 1, 2, … (task 0's are `x`); empty for a shared batch.
    pub rest_x: Vec<std::borrow::Cow<'a, Tensor>>,
    pub targets: Vec<Targets>,
}

impl Placed<'_> {
    /// The step's inputs: `[x]` for a shared batch, else one per task (see [`input_of`]).
    pub fn inputs(&self) -> Vec<&Tensor> {
        std::iter::once(&*self.x).chain(self.rest_x.iter().map(|x| &**x)).collect()
    }
}

impl Batch {
    /// A batch every task reads.
    pub fn new(x: Tensor, labels: Vec<Vec<u32>>) -> Self {
        Batch { x, labels, task_x: None }
    }

    /// A batch of per-task images: task t reads `xs[t]`, labelled by `labels[t]`.
    pub fn per_task(xs: Vec<Tensor>, labels: Vec<Vec<u32>>) -> Self {
        Batch { x: xs[0].clone(), labels, task_x: Some(xs) }
    }

    /// Task `t`'s images.
    pub fn images(&self, t: TaskId) -> &Tensor {
        self.task_x.as_ref().map_or(&self.x, |xs| &xs[t.0])
    }

    /// Every image tensor of the batch (the shared one, or each task's), for in-place edits.
    pub fn images_mut(&mut self) -> Vec<&mut Tensor> {
        match &mut self.task_x {
            Some(xs) => xs.iter_mut().collect(),
            None => vec![&mut self.x],
        }
    }

    /// Uploads the images and builds each task's targets on `backend`.
    pub fn place(&self, backend: &Backend, obj: &Objective) -> Result<Placed<'_>> {
        fn up<'b>(x: &'b Tensor, backend: &Backend) -> Result<std::borrow::Cow<'b, Tensor>> {
            Ok(match backend {
                Backend::Cpu => std::borrow::Cow::Borrowed(x),
                _ => std::borrow::Cow::Owned(x.to_backend(backend)?),
            })
        }
        anyhow::ensure!(
            self.labels.len() == obj.specs.len(),
            "{} label sets for {} tasks",
            self.labels.len(),
            obj.specs.len()
        );
        let (x, rest_x) = match &self.task_x {
            None => (up(&self.x, backend)?, vec![]),
            Some(xs) => {
                ensure!(xs.len() == obj.specs.len(), "{} per-task image sets for {} tasks", xs.len(), obj.specs.len());
                (up(&xs[0], backend)?, xs[1..].iter().map(|x| up(x, backend)).collect::<Result<_>>()?)
            }
        };
        let mut targets = Vec::with_capacity(obj.specs.len());
        for t in TaskId::all(obj.specs.len()) {
            let labels = &self.labels[t.0];
            let s = self.images(t).shape().to_vec();
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
        Ok(Placed { x, rest_x, targets })
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
    summed_step_on(model, opt, &placed.inputs(), &placed.targets, obj)
}

/// [`summed_step`] on a batch already placed on the model's device (`xs`: one shared input or one per
/// task, see [`input_of`]; `targets`): what a CUDA graph captures. With per-task inputs each task's
/// loss comes from its own forward pass (Joint's trunk runs once per task's batch).
pub fn summed_step_on(
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    xs: &[&Tensor],
    targets: &[Targets],
    obj: &Objective,
) -> Result<StepOut> {
    let params = model.all_params();
    model.store.zero_grad(&params)?;
    let stats = {
        let mut tape = Tape::new();
        let n = model.n_tasks();
        let train = vec![Read::Train; n];
        let logits = if xs.len() == 1 {
            let x = tape.constant(xs[0].clone());
            model.forward_all(&mut tape, x, &train)?
        } else {
            let mut logits = Vec::with_capacity(n);
            for t in TaskId::all(n) {
                let x = tape.constant((*input_of(xs, t)).clone());
                logits.push(model.forward_task(&mut tape, x, t, &train)?);
            }
            logits
        };
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
