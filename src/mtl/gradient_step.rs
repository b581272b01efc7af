//! One training step of a gradient-combination baseline on the Joint (hard parameter sharing) model:
//! shared extractor θ_s, features Z = F(x; θ_s), heads φ_1, φ_2.
//!
//! ```text
//! forward once:    Z = F(x; θ_s);  L_t = ℓ_t(G_t(Z; φ_t), y_t)
//! per task t:      backward from L_t through head t only  →  ∇φ_t L_t (into the store), ∇_Z L_t
//! θ_s-level (PCGrad, CAGrad, MGDA):
//!                  g_t = ∇θ_s L_t  (backward from Z seeded with ∇_Z L_t, flattened over extractor_params)
//!                  ∇θ_s ← combine(g_1, g_2)
//! Z-level (MGDA-UB, GradDrop):
//!                  ∇_Z ← combine(∇_Z L_1, ∇_Z L_2);  ∇θ_s ← backward from Z seeded with ∇_Z  (one pass)
//! then one optimiser step on every parameter.
//! ```
//!
//! Each head always gets its own task's gradient ∇φ_t L_t (only the shared part is combined, as in
//! MGDA's Algorithm 2 and the PCGrad / CAGrad / GradDrop papers). The heads read a detached copy of Z,
//! so each task's backward stops at Z; the seeded backward from Z (`Tape::backward_with`) then runs the
//! extractor once per gradient that needs it. Random draws (PCGrad's task order, GradDrop's U) come from
//! (seed, global step), so a resumed run repeats them.

use super::combiners::{self, MgdaNorm};
use super::{Batch, Objective, StepStats};
use crate::metrics::count_correct;
use crate::model::{MultiTaskModel, Read, TaskId};
use crate::optim::Optimizer;
use crate::params::{ParamId, ParamStore};
use crate::tape::Tape;
use crate::Tensor;

/// A gradient-combination rule and its options.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Combiner {
    /// PCGrad on ∇θ_s (`combiners::pcgrad`); `seed` with the step picks the projection order.
    Pcgrad { seed: u64 },
    /// CAGrad on ∇θ_s with c ∈ [0, 1) (`combiners::cagrad`).
    Cagrad { c: f32 },
    /// MGDA: min-norm weights of the normalised task gradients; `upper_bound`: computed from ∇_Z
    /// (MGDA-UB, the `mgda` method) rather than ∇θ_s.
    Mgda { norm: MgdaNorm, upper_bound: bool },
    /// GradDrop on ∇_Z (`combiners::graddrop_batched`), leak ℓ ∈ [0, 1].
    Graddrop { leak: f32, seed: u64 },
}

impl Combiner {
    /// Whether the rule combines the gradients with respect to the shared features Z (one extractor
    /// backward) rather than those of θ_s (one extractor backward per task).
    pub fn on_features(&self) -> bool {
        matches!(self, Combiner::Mgda { upper_bound: true, .. } | Combiner::Graddrop { .. })
    }
}

/// The seed of step `step`'s random draws (a SplitMix64 mix of the run seed and the step).
pub fn step_seed(seed: u64, step: u32) -> u64 {
    let mut z = seed ^ 0x6a09_e667_f3bc_c909 ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The gradients of `ids`, concatenated in order.
pub fn flat_grads(store: &ParamStore, ids: &[ParamId]) -> Vec<f32> {
    ids.iter().flat_map(|&id| store.grad(id).data().iter().copied()).collect()
}

/// Overwrites the gradients of `ids` with consecutive slices of `flat`.
pub fn write_grads(store: &mut ParamStore, ids: &[ParamId], flat: &[f32]) {
    let mut at = 0;
    for &id in ids {
        let g = store.get_mut(id).grad.data_mut();
        g.copy_from_slice(&flat[at..at + g.len()]);
        at += g.len();
    }
    assert_eq!(at, flat.len(), "flat gradient length");
}

/// One step of `combiner` on `batch` for a model with one shared extractor (Joint and the
/// gradient-combination methods). `step` is the global step (for the random draws).
pub fn combined_step(
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    batch: &Batch,
    obj: &Objective,
    combiner: &Combiner,
    step: u32,
) -> StepStats {
    assert!(
        model.cfg.method.shares_extractor(),
        "{:?} has no shared extractor to combine gradients on",
        model.cfg.method
    );
    let params = model.all_params();
    let shared = model.extractor_params(TaskId(0)).to_vec();
    model.store.zero_grad(&params);

    let mut tape = Tape::new();
    let x = tape.constant(batch.x.clone());
    let z = model.forward_features(&mut tape, x, Read::Train);
    let z_shape = tape.value(z).shape().to_vec();
    // The heads read a detached copy of Z: a task's backward stops there.
    let z_heads = tape.input(tape.value(z).clone());
    let logits = model.forward_heads(&mut tape, z_heads);
    let losses = TaskId::BOTH.map(|t| obj.loss(&mut tape, t, logits[t.0], &batch.labels[t.0]));
    let stats = StepStats {
        loss: losses.map(|l| tape.value(l).item()),
        correct: TaskId::BOTH.map(|t| count_correct(tape.value(logits[t.0]), &batch.labels[t.0])),
    };

    // Head t gets ∇φ_t L_t; keep ∇_Z L_t.
    let numel = tape.value(z).numel();
    let store = &mut model.store;
    let gz: [Vec<f32>; 2] = losses.map(|l| {
        let g = tape.backward(l);
        g.accumulate_into(store);
        g.get(z_heads).map(|t| t.data().to_vec()).unwrap_or_else(|| vec![0.0; numel])
    });
    let gz_refs = [gz[0].as_slice(), gz[1].as_slice()];
    let task_losses = stats.loss.map(|l| l as f64);
    let seed_of = |seed: u64| step_seed(seed, step);

    if combiner.on_features() {
        let d = match *combiner {
            Combiner::Mgda { norm, .. } => combiners::mgda(&gz_refs, &task_losses, norm),
            Combiner::Graddrop { leak, seed } => {
                combiners::graddrop_batched(&gz_refs, tape.value(z).data(), z_shape[0], leak, seed_of(seed))
            }
            _ => unreachable!("θ_s-level combiner"),
        };
        tape.backward_with(z, Tensor::from_parts(z_shape, d)).accumulate_into(store);
    } else {
        let g: Vec<Vec<f32>> = gz
            .iter()
            .map(|gt| {
                store.zero_grad(&shared);
                tape.backward_with(z, Tensor::from_parts(z_shape.clone(), gt.clone())).accumulate_into(store);
                flat_grads(store, &shared)
            })
            .collect();
        let refs: Vec<&[f32]> = g.iter().map(|v| v.as_slice()).collect();
        let d = match *combiner {
            Combiner::Pcgrad { seed } => combiners::pcgrad(&refs, seed_of(seed)),
            Combiner::Cagrad { c } => combiners::cagrad(&refs, c),
            Combiner::Mgda { norm, .. } => combiners::mgda(&refs, &task_losses, norm),
            Combiner::Graddrop { .. } => unreachable!("Z-level combiner"),
        };
        write_grads(store, &shared, &d);
    }
    opt.step(&mut model.store, &params, None);
    stats
}
