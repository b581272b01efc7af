//! The autograd tape, micrograd-style: every op appends a node holding its output value and what its
//! backward needs; `backward` walks the nodes in reverse, hands each node's output gradient to its op's
//! backward rule (`ops.rs`), and sums the gradients flowing into each input. Parameters enter the tape as
//! `Param` leaves; `Grads::accumulate_into` adds their gradients to the `ParamStore`.
//!
//! No-grad mode (`set_grad_enabled(false)`, or `frozen_param`) records values only: in MT-CooL the other
//! task's extractor runs forward with noisy weights and never receives a gradient.
//!
//! Values live where their inputs live (host or GPU, `backend::dispatch` runs each op there); every op
//! returns a `Result`, so a GPU failure (out of memory, a failed launch) reaches the caller as an error.
//! Scalar gradients (of losses and their sums) are kept as host values: the loss kernels take dloss
//! as a parameter, so a backward pass never waits for the GPU to read one back.

mod ops;

use anyhow::{ensure, Result};

use crate::backend::dispatch;
use crate::noise::WeightNoise;
use crate::params::{ParamId, ParamStore};
use crate::Tensor;
pub use ops::Op;

/// A value on the tape (an index into its nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Var(usize);

struct Node {
    value: Tensor,
    op: Op,
    needs_grad: bool,
}

pub struct Tape {
    nodes: Vec<Node>,
    grad_enabled: bool,
}

impl Default for Tape {
    fn default() -> Self {
        Tape { nodes: Vec::new(), grad_enabled: true }
    }
}

impl Tape {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }
    pub fn needs_grad(&self, v: Var) -> bool {
        self.nodes[v.0].needs_grad
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }
    /// Turns recording for backward on or off for the ops that follow.
    pub fn set_grad_enabled(&mut self, on: bool) {
        self.grad_enabled = on;
    }
    /// Runs `f` with recording off, then restores the previous mode.
    pub fn no_grad<R>(&mut self, f: impl FnOnce(&mut Tape) -> R) -> R {
        let prev = self.grad_enabled;
        self.grad_enabled = false;
        let r = f(self);
        self.grad_enabled = prev;
        r
    }

    /// A leaf that may receive a gradient (readable from `Grads::get` after backward).
    pub fn input(&mut self, value: Tensor) -> Var {
        let needs_grad = self.grad_enabled;
        self.push_node(value, Op::Leaf, needs_grad)
    }
    /// A leaf that never receives a gradient (data, targets).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.push_node(value, Op::Leaf, false)
    }
    /// A trainable parameter: its gradient is accumulated into the store by `Grads::accumulate_into`.
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Var {
        let needs_grad = self.grad_enabled;
        crate::profile::mark();
        let value = store.value(id).clone();
        if crate::profile::enabled() {
            crate::profile::forward("param", 0.0, 8.0 * value.numel() as f64);
        }
        self.push_node(value, Op::Param(id), needs_grad)
    }
    /// A parameter read without gradient, optionally perturbed by ε ~ U(−b, b) from the counter-based
    /// noise stream (see `WeightNoise`). The perturbed value is a new tensor: layers instead pass the
    /// clean weights with the noise to the fused ops (`conv2d_noisy`, `linear_noisy`).
    pub fn frozen_param(&mut self, store: &ParamStore, id: ParamId, noise: Option<WeightNoise>) -> Result<Var> {
        crate::profile::mark();
        let w = store.value(id);
        let value = match noise {
            Some(n) => dispatch::perturbed(w, n.key, n.b, n.offset)?,
            None => w.clone(),
        };
        if crate::profile::enabled() {
            let name = if noise.is_some() { "frozen_param_noisy" } else { "frozen_param" };
            crate::profile::forward(name, 0.0, 8.0 * value.numel() as f64);
        }
        Ok(self.push_node(value, Op::Leaf, false))
    }

    /// Appends an op's output. The node needs a gradient when recording is on and any input needs one;
    /// otherwise the op's saved state is dropped straight away.
    fn push(&mut self, value: Tensor, op: Op) -> Var {
        if crate::profile::enabled() {
            let (flops, bytes) = op.work(self, &value);
            crate::profile::forward(op.name(), flops, bytes);
        }
        let needs_grad = self.grad_enabled && op.inputs().iter().any(|&v| self.needs_grad(v));
        let op = if needs_grad { op } else { Op::Leaf };
        self.push_node(value, op, needs_grad)
    }

    fn push_node(&mut self, value: Tensor, op: Op, needs_grad: bool) -> Var {
        self.nodes.push(Node { value, op, needs_grad });
        Var(self.nodes.len() - 1)
    }

    /// Backward from a scalar output (seed gradient 1, a host value).
    pub fn backward(&self, out: Var) -> Result<Grads> {
        let v = self.value(out);
        ensure!(v.numel() == 1, "backward() needs a scalar output, got shape {:?}", v.shape());
        self.backward_with(out, Tensor::full(v.shape(), 1.0))
    }

    /// Backward from any output with an explicit output gradient `seed` (on the output's device, or a
    /// host scalar).
    pub fn backward_with(&self, out: Var, seed: Tensor) -> Result<Grads> {
        crate::profile::mark();
        ensure!(seed.shape() == self.value(out).shape(), "seed gradient shape {:?}", seed.shape());
        let mut grads: Vec<Option<Tensor>> = vec![None; out.0 + 1];
        grads[out.0] = Some(seed);
        for i in (0..=out.0).rev() {
            let node = &self.nodes[i];
            if !node.needs_grad || node.op.inputs().is_empty() {
                continue;
            }
            let Some(dy) = grads[i].take() else { continue };
            let (flops, bytes) = if crate::profile::enabled() { node.op.work(self, &node.value) } else { (0.0, 0.0) };
            let name = node.op.name();
            let bytes = if flops > 0.0 { 0.0 } else { bytes + 4.0 * dy.numel() as f64 };
            let input_grads = crate::profile::timed("backward", name, 2.0 * flops, bytes, || {
                ops::backward(self, &node.op, &node.value, &dy)
            })?;
            crate::profile::timed("backward", "grad_accumulate", 0.0, 0.0, || -> Result<()> {
                for (input, g) in input_grads {
                    if !self.needs_grad(input) {
                        continue;
                    }
                    match &mut grads[input.0] {
                        Some(acc) => accumulate(acc, &g)?,
                        slot => *slot = Some(g),
                    }
                }
                Ok(())
            })?;
            grads[i] = Some(dy);
        }
        Ok(Grads { grads, params: self.param_leaves(out) })
    }

    fn param_leaves(&self, out: Var) -> Vec<(Var, ParamId)> {
        (0..=out.0)
            .filter_map(|i| match self.nodes[i].op {
                Op::Param(id) if self.nodes[i].needs_grad => Some((Var(i), id)),
                _ => None,
            })
            .collect()
    }
}

/// acc += g: in place on the host, a new sum on the GPU (its buffer comes from the cache).
pub(crate) fn accumulate(acc: &mut Tensor, g: &Tensor) -> Result<()> {
    if acc.is_cuda() || g.is_cuda() {
        *acc = dispatch::add(acc, g)?;
    } else {
        acc.add_assign(g);
    }
    Ok(())
}

/// Gradients of one backward pass, by tape value.
pub struct Grads {
    grads: Vec<Option<Tensor>>,
    params: Vec<(Var, ParamId)>,
}

impl Grads {
    /// d(out)/d(v), or None when no gradient reached `v`.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.grads.get(v.0).and_then(|g| g.as_ref())
    }

    /// Adds the gradients of every parameter leaf into the store (a parameter read twice gets both).
    pub fn accumulate_into(&self, store: &mut ParamStore) -> Result<()> {
        for &(var, id) in &self.params {
            if let Some(g) = self.get(var) {
                accumulate(&mut store.get_mut(id).grad, g)?;
            }
        }
        Ok(())
    }
}
