//! Optimisers: SGD (momentum, weight decay) and Adam, each with an optional projection onto the box
//! [θ_prev − b, θ_prev + b] applied in the same pass (MT-CooL's b-box, θ_prev being the snapshot taken at
//! the start of the outer iteration). The per-element update functions are the CPU references of
//! `kernels/optim.cu` (`sgd_step`, `adam_step`); their order of operations is the kernels' too.
//! Parameters on a GPU are stepped by those kernels, their state (velocity, m, v) kept beside them.

use std::collections::HashMap;

use anyhow::Result;

use crate::backend::cuda::GpuBox;
use crate::backend::Backend;
use crate::params::{ParamId, ParamStore};
use crate::Tensor;

/// The b-box around a snapshot of some parameters.
#[derive(Clone, Debug)]
pub struct BoxProjection {
    pub b: f32,
    snapshot: HashMap<ParamId, Tensor>,
}

impl BoxProjection {
    /// Snapshots the current values of `ids` (copies): later steps keep them within ±b of these values.
    /// A copy, not a shared buffer, so θ stays the only owner of its buffer and is updated in place
    /// (a captured CUDA graph relies on θ never moving).
    pub fn snapshot(store: &ParamStore, ids: &[ParamId], b: f32) -> Result<Self> {
        let snapshot = ids.iter().map(|&id| Ok((id, store.value(id).deep_copy()?))).collect::<Result<_>>()?;
        Ok(BoxProjection { b, snapshot })
    }

    /// The snapshot of one parameter, if it is covered by this box.
    pub fn center(&self, id: ParamId) -> Option<&Tensor> {
        self.snapshot.get(&id)
    }
}

/// Clamps θ into [snap − b, snap + b].
#[inline]
pub fn project_scalar(theta: f32, snap: f32, b: f32) -> f32 {
    theta.max(snap - b).min(snap + b)
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// One SGD step over a slice (PyTorch convention: v ← μv + g, θ ← θ − lr·v), then the optional clamp.
pub fn sgd_update(theta: &mut [f32], grad: &[f32], velocity: &mut [f32], cfg: SgdConfig, bbox: Option<(&[f32], f32)>) {
    for i in 0..theta.len() {
        let g = grad[i] + cfg.weight_decay * theta[i];
        velocity[i] = cfg.momentum * velocity[i] + g;
        let t = theta[i] - cfg.lr * velocity[i];
        theta[i] = match bbox {
            Some((snap, b)) => project_scalar(t, snap[i], b),
            None => t,
        };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl AdamConfig {
    pub fn with_lr(lr: f32) -> Self {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// One Adam step over a slice (PyTorch Adam, L2 weight decay added to the gradient); `bc1 = 1 − β1^t`,
/// `bc2 = 1 − β2^t` are the bias corrections for step t ≥ 1. Then the optional clamp.
#[allow(clippy::too_many_arguments)]
pub fn adam_update(
    theta: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    cfg: AdamConfig,
    bc1: f32,
    bc2: f32,
    bbox: Option<(&[f32], f32)>,
) {
    for i in 0..theta.len() {
        let g = grad[i] + cfg.weight_decay * theta[i];
        m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g;
        v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g * g;
        let t = theta[i] - cfg.lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + cfg.eps);
        theta[i] = match bbox {
            Some((snap, b)) => project_scalar(t, snap[i], b),
            None => t,
        };
    }
}

/// Either optimiser behind one type, with per-parameter state on the parameters' device.
#[derive(Clone, Debug)]
pub enum Optimizer {
    Sgd { cfg: SgdConfig, velocity: HashMap<ParamId, Tensor> },
    Adam { cfg: AdamConfig, state: HashMap<ParamId, AdamSlot> },
}

/// Adam's running moments of one parameter.
#[derive(Clone, Debug)]
pub struct AdamSlot {
    pub m: Tensor,
    pub v: Tensor,
    pub step: u32,
}

/// Adam's state of one parameter on the host (checkpoints).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub step: u32,
}

impl Optimizer {
    pub fn sgd(cfg: SgdConfig) -> Self {
        Optimizer::Sgd { cfg, velocity: HashMap::new() }
    }
    pub fn adam(cfg: AdamConfig) -> Self {
        Optimizer::Adam { cfg, state: HashMap::new() }
    }

    pub fn lr(&self) -> f32 {
        match self {
            Optimizer::Sgd { cfg, .. } => cfg.lr,
            Optimizer::Adam { cfg, .. } => cfg.lr,
        }
    }

    /// Sets the learning rate of the following steps (learning-rate schedules).
    pub fn set_lr(&mut self, lr: f32) {
        match self {
            Optimizer::Sgd { cfg, .. } => cfg.lr = lr,
            Optimizer::Adam { cfg, .. } => cfg.lr = lr,
        }
    }

    /// Updates `ids` from their accumulated gradients. Parameters covered by `bbox` are clamped into it
    /// in the same pass; others (e.g. heads, which MT-CooL does not clamp) are updated freely.
    pub fn step(&mut self, store: &mut ParamStore, ids: &[ParamId], bbox: Option<&BoxProjection>) -> Result<()> {
        let (name, words) = match self {
            Optimizer::Sgd { .. } => ("sgd_step", 5.0), // read θ, g, velocity; write θ, velocity
            Optimizer::Adam { .. } => ("adam_step", 7.0), // read θ, g, m, v; write θ, m, v
        };
        let bytes = if crate::profile::enabled() { 4.0 * words * store.count(ids) as f64 } else { 0.0 };
        crate::profile::timed("optimizer", name, 0.0, bytes, || self.step_inner(store, ids, bbox))
    }

    fn step_inner(&mut self, store: &mut ParamStore, ids: &[ParamId], bbox: Option<&BoxProjection>) -> Result<()> {
        for &id in ids {
            let p = store.get_mut(id);
            let backend = p.value.backend();
            let zeros = || Tensor::zeros_on(p.value.shape(), &backend);
            let center = bbox.and_then(|bx| bx.center(id).map(|c| (c, bx.b)));
            match (&mut *self, &backend) {
                (Optimizer::Sgd { cfg, velocity }, Backend::Cpu) => {
                    let vel = slot(velocity, id, zeros)?;
                    let clamp = center.map(|(c, b)| (c.data(), b));
                    sgd_update(p.value.data_mut(), p.grad.data(), vel.data_mut(), *cfg, clamp);
                }
                (Optimizer::Adam { cfg, state }, Backend::Cpu) => {
                    let s = slot(state, id, || Ok(AdamSlot { m: zeros()?, v: zeros()?, step: 0 }))?;
                    s.step += 1;
                    let (bc1, bc2) = bias_corrections(cfg, s.step);
                    let clamp = center.map(|(c, b)| (c.data(), b));
                    adam_update(
                        p.value.data_mut(),
                        p.grad.data(),
                        s.m.data_mut(),
                        s.v.data_mut(),
                        *cfg,
                        bc1,
                        bc2,
                        clamp,
                    );
                }
                (Optimizer::Sgd { cfg, velocity }, Backend::Cuda(gpu)) => {
                    let vel = slot(velocity, id, zeros)?;
                    let grad = p.grad.gpu_tensor().expect("gradient beside its parameter");
                    let bx = gpu_box(center)?;
                    gpu.sgd_step(p.value.gpu_mut()?, vel.gpu_mut()?, grad, *cfg, bx, Some(id.0))?;
                }
                (Optimizer::Adam { cfg, state }, Backend::Cuda(gpu)) => {
                    let s = slot(state, id, || Ok(AdamSlot { m: zeros()?, v: zeros()?, step: 0 }))?;
                    s.step += 1;
                    let (bc1, bc2) = bias_corrections(cfg, s.step);
                    let grad = p.grad.gpu_tensor().expect("gradient beside its parameter");
                    let bx = gpu_box(center)?;
                    let (m, v) = (s.m.gpu_mut()?, s.v.gpu_mut()?);
                    gpu.adam_step(p.value.gpu_mut()?, m, v, grad, *cfg, bc1, bc2, bx, Some(id.0))?;
                }
            }
        }
        Ok(())
    }

    /// Moves the per-parameter state to `backend` (with the parameters it belongs to).
    pub fn to_backend(&mut self, backend: &Backend) -> Result<()> {
        match self {
            Optimizer::Sgd { velocity, .. } => {
                for v in velocity.values_mut() {
                    *v = v.to_backend(backend)?;
                }
            }
            Optimizer::Adam { state, .. } => {
                for s in state.values_mut() {
                    s.m = s.m.to_backend(backend)?;
                    s.v = s.v.to_backend(backend)?;
                }
            }
        }
        Ok(())
    }
}

impl Optimizer {
    /// For the replay of a captured step: for each optimiser launch of the step in order (`owners`:
    /// the parameter index each launch updates), advances that parameter's step count as `step` does
    /// and returns the [lr, bc1, bc2] triples the launches read (SGD: [lr, 1, 1]).
    pub fn replay_hyper(&mut self, owners: &[usize]) -> Result<Vec<f32>> {
        let mut table = Vec::with_capacity(3 * owners.len());
        for &o in owners {
            match self {
                Optimizer::Sgd { cfg, .. } => table.extend([cfg.lr, 1.0, 1.0]),
                Optimizer::Adam { cfg, state } => {
                    let s =
                        state.get_mut(&ParamId(o)).ok_or_else(|| anyhow::anyhow!("no Adam state for parameter {o}"))?;
                    s.step += 1;
                    let (bc1, bc2) = bias_corrections(cfg, s.step);
                    table.extend([cfg.lr, bc1, bc2]);
                }
            }
        }
        Ok(table)
    }

    /// Takes back the step-count advances of one step whose launches were `owners` (recording a step
    /// into a graph advanced them; its first replay advances them again).
    pub fn rewind(&mut self, owners: &[usize]) {
        if let Optimizer::Adam { state, .. } = self {
            for &o in owners {
                if let Some(s) = state.get_mut(&ParamId(o)) {
                    s.step -= 1;
                }
            }
        }
    }
}

/// The state of `id`, created by `new` on the parameter's first step.
fn slot<T>(map: &mut HashMap<ParamId, T>, id: ParamId, new: impl FnOnce() -> Result<T>) -> Result<&mut T> {
    Ok(match map.entry(id) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => v.insert(new()?),
    })
}

/// (1 − β1^t, 1 − β2^t), computed in f32 as the CPU reference always has.
fn bias_corrections(cfg: &AdamConfig, step: u32) -> (f32, f32) {
    (1.0 - cfg.beta1.powi(step as i32), 1.0 - cfg.beta2.powi(step as i32))
}

fn gpu_box(center: Option<(&Tensor, f32)>) -> Result<Option<GpuBox<'_>>> {
    center
        .map(|(c, b)| {
            let snapshot = c.gpu_tensor().ok_or_else(|| anyhow::anyhow!("b-box snapshot is not on the GPU"))?;
            Ok(GpuBox { snapshot, b })
        })
        .transpose()
}

/// One parameter's optimiser state, as exported to and imported from training checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamState {
    Sgd { velocity: Vec<f32> },
    Adam(AdamState),
}

impl Optimizer {
    /// The per-parameter state (only parameters stepped at least once), sorted by parameter, on the
    /// host (a download for GPU state).
    pub fn export_state(&self) -> Result<Vec<(ParamId, ParamState)>> {
        let host = |t: &Tensor| Ok::<_, anyhow::Error>(t.to_host()?.into_data());
        let mut out: Vec<(ParamId, ParamState)> = match self {
            Optimizer::Sgd { velocity, .. } => velocity
                .iter()
                .map(|(&id, v)| Ok((id, ParamState::Sgd { velocity: host(v)? })))
                .collect::<Result<_>>()?,
            Optimizer::Adam { state, .. } => state
                .iter()
                .map(|(&id, s)| Ok((id, ParamState::Adam(AdamState { m: host(&s.m)?, v: host(&s.v)?, step: s.step }))))
                .collect::<Result<_>>()?,
        };
        out.sort_by_key(|(id, _)| *id);
        Ok(out)
    }

    /// Replaces the per-parameter state with `entries` (as `export_state` gave them, on the host; move
    /// them with `to_backend`); every entry must be of this optimiser's kind. Parameters absent from
    /// `entries` start from zero state, as new ones do.
    pub fn import_state(&mut self, entries: Vec<(ParamId, ParamState)>) -> anyhow::Result<()> {
        let t = |v: Vec<f32>| Tensor::from_parts(vec![v.len()], v);
        match self {
            Optimizer::Sgd { velocity, .. } => {
                velocity.clear();
                for (id, s) in entries {
                    let ParamState::Sgd { velocity: v } = s else {
                        anyhow::bail!("Adam state given to an SGD optimiser")
                    };
                    velocity.insert(id, t(v));
                }
            }
            Optimizer::Adam { state, .. } => {
                state.clear();
                for (id, s) in entries {
                    let ParamState::Adam(a) = s else { anyhow::bail!("SGD state given to an Adam optimiser") };
                    state.insert(id, AdamSlot { m: t(a.m), v: t(a.v), step: a.step });
                }
            }
        }
        Ok(())
    }
}
