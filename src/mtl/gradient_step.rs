//! One training step of a gradient-combination baseline on the Joint (hard parameter sharing) model:
//! shared extractor θ_s, features Z = F(x; θ_s), heads φ_1, …, φ_T.
//!
//! ```text
//! forward once:    Z = F(x; θ_s);  L_t = ℓ_t(G_t(Z; φ_t), y_t)
//! per task t:      backward from L_t through head t only  →  ∇φ_t L_t (into the store), ∇_Z L_t
//! θ_s-level (PCGrad, CAGrad, MGDA):
//!                  g_t = ∇θ_s L_t  (backward from Z seeded with ∇_Z L_t, flattened over extractor_params)
//!                  ∇θ_s ← combine(g_1, …, g_T)
//! Z-level (MGDA-UB, GradDrop):
//!                  ∇_Z ← combine(∇_Z L_1, …, ∇_Z L_T);  ∇θ_s ← backward from Z seeded with ∇_Z  (one pass)
//! then one optimiser step on every parameter.
//! ```
//!
//! With a data set per task (per-task batches x_t) each task's Z_t = F(x_t; θ_s) is its own forward
//! pass and g_t = ∇θ_s L_t comes from it; MGDA then works on ∇θ_s (the upper bound needs one shared Z),
//! and GradDrop masks each ∇_{Z_t} L_t (`combiners::graddrop_per_task`) and sends it back through its Z_t.
//!
//! Each head always gets its own task's gradient ∇φ_t L_t (only the shared part is combined, as in
//! MGDA's Algorithm 2 and the PCGrad / CAGrad / GradDrop papers). The heads read a detached copy of Z,
//! so each task's backward stops at Z; the seeded backward from Z (`Tape::backward_with`) then runs the
//! extractor once per gradient that needs it. Random draws (PCGrad's task order, GradDrop's U) come from
//! (seed, global step), so a resumed run repeats them.

use anyhow::{ensure, Result};

use super::combiners::{self, MgdaNorm};
use super::{host_value, input_of, Batch, Objective, StepOut};
use crate::backend::dispatch;
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

/// The gradients of `ids`, concatenated in order, on the host (downloaded from a GPU: the combiners
/// solve their small problems on the host).
pub fn flat_grads(store: &ParamStore, ids: &[ParamId]) -> Result<Vec<f32>> {
    let mut flat = Vec::with_capacity(store.count(ids));
    for &id in ids {
        flat.extend_from_slice(store.grad(id).host()?.data());
    }
    Ok(flat)
}

/// Overwrites the gradients of `ids` with consecutive slices of `flat` (uploaded to the store's device).
pub fn write_grads(store: &mut ParamStore, ids: &[ParamId], flat: &[f32]) -> Result<()> {
    let backend = store.backend();
    let mut at = 0;
    for &id in ids {
        let g = &mut store.get_mut(id).grad;
        let n = g.numel();
        *g = Tensor::from_parts(g.shape().to_vec(), flat[at..at + n].to_vec()).to_backend(&backend)?;
        at += n;
    }
    ensure!(at == flat.len(), "flat gradient length {} for {at} parameters", flat.len());
    Ok(())
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
) -> Result<StepOut> {
    ensure!(
        model.cfg.method.shares_extractor(),
        "{:?} has no shared extractor to combine gradients on",
        model.cfg.method
    );
    let params = model.all_params();
    let shared = model.extractor_params(TaskId(0)).to_vec();
    model.store.zero_grad(&params)?;
    let backend = model.store.backend();
    let placed = batch.place(&backend, obj)?;

    let n = model.n_tasks();
    let xs = placed.inputs();
    let per_task = xs.len() > 1;
    // MGDA-UB combines ∇_Z of one Z; per-task batches give each task its own Z.
    let combiner = match *combiner {
        // MGDA-UB's upper bound needs one shared Z: with per-task batches, MGDA on ∇θ_s itself.
        Combiner::Mgda { norm, upper_bound: true } if per_task => Combiner::Mgda { norm, upper_bound: false },
        c => c,
    };
    let combiner = &combiner;

    let mut tape = Tape::new();
    // One Z (shared batch) or one per task; the heads read a detached copy of it, so a task's backward
    // stops there.
    let mut zs = Vec::with_capacity(xs.len());
    for x in &xs {
        let x = tape.constant((*x).clone());
        let z = model.forward_features(&mut tape, x, Read::Train)?;
        let z_heads = tape.input(tape.value(z).clone());
        zs.push((z, z_heads));
    }
    drop(xs);
    let (z, z_heads) = zs[0];
    let z_shape = tape.value(z).shape().to_vec();
    let logits = if per_task {
        TaskId::all(n).map(|t| model.forward_head(&mut tape, zs[t.0].1, t)).collect::<Result<Vec<_>>>()?
    } else {
        model.forward_heads(&mut tape, z_heads)?
    };
    let losses: Vec<_> =
        TaskId::all(n).map(|t| obj.loss(&mut tape, t, logits[t.0], &placed.targets[t.0])).collect::<Result<_>>()?;
    let correct = |t: usize| dispatch::count_correct(tape.value(logits[t]), &placed.targets[t].labels);
    let stats = StepOut {
        loss: losses.iter().map(|&l| tape.value(l).clone()).collect(),
        correct: (0..n).map(correct).collect::<Result<_>>()?,
    };

    // Head t gets ∇φ_t L_t; keep ∇_Z L_t (on the host, for the combiner).
    let store = &mut model.store;
    let mut gz: Vec<Vec<f32>> = Vec::with_capacity(n);
    for (t, &l) in losses.iter().enumerate() {
        let (_, z_heads) = *input_of(&zs, TaskId(t));
        let g = tape.backward(l)?;
        g.accumulate_into(store)?;
        gz.push(match g.get(z_heads) {
            Some(g) => g.to_host()?.into_data(),
            None => vec![0.0; tape.value(z_heads).numel()],
        });
    }
    let gz_refs: Vec<&[f32]> = gz.iter().map(|v| v.as_slice()).collect();
    // MGDA weighs by the losses: read back here, the combiners run on the host anyway.
    let task_losses: Vec<f64> = stats.loss.iter().map(|l| Ok(host_value(l)? as f64)).collect::<Result<_>>()?;
    let seed_of = |seed: u64| step_seed(seed, step);
    let on_device = |shape: &[usize], v: Vec<f32>| Tensor::from_parts(shape.to_vec(), v).to_backend(&backend);

    if let (true, Combiner::Graddrop { leak, seed }) = (per_task, *combiner) {
        // Each task's masked ∇_{Z_t} goes back through its own Z_t (the masks from all tasks' purity).
        let acts: Vec<Vec<f32>> =
            zs.iter().map(|&(z, _)| Ok(tape.value(z).host()?.data().to_vec())).collect::<Result<_>>()?;
        let act_refs: Vec<&[f32]> = acts.iter().map(|v| v.as_slice()).collect();
        let masked = combiners::graddrop_per_task(&gz_refs, &act_refs, z_shape[0], leak, seed_of(seed));
        for (&(z, _), d) in zs.iter().zip(masked) {
            tape.backward_with(z, on_device(&z_shape, d)?)?.accumulate_into(store)?;
        }
    } else if combiner.on_features() {
        let d = match *combiner {
            Combiner::Mgda { norm, .. } => combiners::mgda(&gz_refs, &task_losses, norm),
            Combiner::Graddrop { leak, seed } => {
                let z_host = tape.value(z).host()?;
                combiners::graddrop_batched(&gz_refs, z_host.data(), z_shape[0], leak, seed_of(seed))
            }
            _ => unreachable!("θ_s-level combiner"),
        };
        tape.backward_with(z, on_device(&z_shape, d)?)?.accumulate_into(store)?;
    } else {
        let mut g: Vec<Vec<f32>> = Vec::with_capacity(n);
        for (t, gt) in gz.iter().enumerate() {
            let (z, _) = *input_of(&zs, TaskId(t));
            store.zero_grad(&shared)?;
            let shape = tape.value(z).shape().to_vec();
            tape.backward_with(z, on_device(&shape, gt.clone())?)?.accumulate_into(store)?;
            g.push(flat_grads(store, &shared)?);
        }
        let refs: Vec<&[f32]> = g.iter().map(|v| v.as_slice()).collect();
        let d = match *combiner {
            Combiner::Pcgrad { seed } => combiners::pcgrad(&refs, seed_of(seed)),
            Combiner::Cagrad { c } => combiners::cagrad(&refs, c),
            Combiner::Mgda { norm, .. } => combiners::mgda(&refs, &task_losses, norm),
            Combiner::Graddrop { .. } => unreachable!("Z-level combiner"),
        };
        write_grads(store, &shared, &d)?;
    }
    drop(tape);
    opt.step(&mut model.store, &params, None)?;
    Ok(stats)
}
