//! The MT-CooL step (DESIGN.md §1). For task i = 1, 2, …, T in turn, on the same mini-batch (or, with a
//! data set per task, on task i's own mini-batch x_i):
//!
//! ```text
//! θi_prev ← θi
//! repeat inner_steps times (r = 0, 1, ...):
//!     Li = (1/K) Σ_k ℓi( Gi( M( F1(x; θ1 + ε1_k), …, Fi(x; θi), …, FT(x; θT + εT_k) ); φi ), yi )
//!          εj_k ~ U(−b, b) per element of θj (every j ≠ i), Philox key (seed, step t, stream of
//!          task j, sample r·K + k); the Fj run forward only (no gradient reaches θj)
//!     (θi, φi) ← optimiser step on ∇Li;   θi ← clamp(θi, θi_prev − b, θi_prev + b)   [in the same pass]
//! ```
//! Task i + 1 then runs with the θ1 … θi the earlier sub-steps just produced. Modes: `vanilla` (no noise, no clamp), `noreg`
//! (noise, no clamp), `full` (both). Heads φ are never clamped.

use serde::{Deserialize, Serialize};

use anyhow::Result;

use super::{input_of, Batch, Objective, StepOut, Targets};
use crate::backend::dispatch;
use crate::model::{MultiTaskModel, Read, TaskId};
use crate::noise::{stream, NoiseKey};
use crate::optim::{BoxProjection, Optimizer};
use crate::tape::Tape;
use crate::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain alternating optimisation: no noise, no projection.
    Vanilla,
    /// Noise on the other extractor, no projection.
    Noreg,
    /// Noise and the b-box projection.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MtCoolConfig {
    pub mode: Mode,
    /// Radius of the noise and of the box.
    pub b: f32,
    /// K: noise samples averaged per sub-step.
    pub noise_samples: u32,
    pub inner_steps: u32,
    /// Seed of the noise streams.
    pub seed: u64,
}

/// The noise stream of task t's extractor (perturbed while the other tasks train).
fn noise_stream(t: TaskId) -> u32 {
    stream::task(t.0)
}

/// One MT-CooL outer iteration `step` on `batch`. Each task's loss is the mean over its last inner
/// step's noise samples; its correct count is from the last sample's logits.
pub fn mtcool_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    batch: &Batch,
    obj: &Objective,
    step: u32,
    cfg: &MtCoolConfig,
) -> Result<StepOut> {
    let placed = batch.place(&model.store.backend(), obj)?;
    mtcool_step_on(model, opt, &placed.inputs(), &placed.targets, obj, step, cfg)
}

/// [`mtcool_step`] on a batch already placed on the model's device (`xs`: one shared input or one per
/// task, see [`input_of`]): what a CUDA graph captures. Task i's sub-step reads task i's input.
#[allow(clippy::too_many_arguments)]
pub fn mtcool_step_on(
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    xs: &[&Tensor],
    targets: &[Targets],
    obj: &Objective,
    step: u32,
    cfg: &MtCoolConfig,
) -> Result<StepOut> {
    let (mut loss, mut correct) = (vec![], vec![]);
    for t in TaskId::all(model.n_tasks()) {
        let x: &Tensor = input_of::<&Tensor>(xs, t);
        let (l, c) = task_substep(model, opt, x, targets, obj, step, cfg, t)?;
        loss.push(l);
        correct.push(c);
    }
    Ok(StepOut { loss, correct })
}

/// Task `t`'s part of the step: its extractor and head train; the other extractors are frozen and noisy
/// (its layers add the noise as they read the weights: no perturbed copy of θ is made). Returns the
/// loss (mean over the last inner step's samples) and the last sample's correct count, as scalars on
/// the model's device.
#[allow(clippy::too_many_arguments)]
pub fn task_substep(
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    x: &Tensor,
    targets: &[Targets],
    obj: &Objective,
    step: u32,
    cfg: &MtCoolConfig,
    t: TaskId,
) -> Result<(Tensor, Tensor)> {
    let own = model.extractor_params(t).to_vec();
    let trainable: Vec<_> = own.iter().chain(model.head_params(t)).copied().collect();
    let noisy = cfg.mode != Mode::Vanilla;
    let bbox = (cfg.mode == Mode::Full).then(|| BoxProjection::snapshot(&model.store, &own, cfg.b)).transpose()?;
    let k_samples = cfg.noise_samples.max(1);
    let (mut loss, mut correct): (Option<Tensor>, Option<Tensor>) = (None, None);
    for r in 0..cfg.inner_steps.max(1) {
        model.store.zero_grad(&trainable)?;
        loss = None;
        for k in 0..k_samples {
            let mut reads = vec![Read::Train; model.n_tasks()];
            for o in t.others(model.n_tasks()) {
                let key = NoiseKey { seed: cfg.seed, step, stream: noise_stream(o), sample: r * k_samples + k };
                reads[o.0] = Read::Frozen(noisy.then_some((key, cfg.b)));
            }
            let mut tape = Tape::new();
            let x = tape.constant(x.clone());
            let logits = model.forward_task(&mut tape, x, t, &reads)?;
            if k + 1 == k_samples {
                correct = Some(dispatch::count_correct(tape.value(logits), &targets[t.0].labels)?);
            }
            let l = obj.loss(&mut tape, t, logits, &targets[t.0])?;
            let l = tape.scale(l, 1.0 / k_samples as f32)?;
            // Σ_k in sample order, in f32, starting from the first sample's value (as 0 + l_0 would).
            loss = Some(match loss {
                None => tape.value(l).clone(),
                Some(acc) => dispatch::add(&acc, tape.value(l))?,
            });
            tape.backward(l)?.accumulate_into(&mut model.store)?;
        }
        opt.step(&mut model.store, &trainable, bbox.as_ref())?;
    }
    Ok((loss.expect("at least one sample"), correct.expect("at least one sample")))
}
