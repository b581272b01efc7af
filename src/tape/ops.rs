//! Every differentiable op of the tape: its constructor (`Tape::<op>`, which runs the forward and
//! records what backward needs) and its backward rule (one arm of `backward`). The arithmetic runs in
//! `backend::dispatch` (the CPU reference or the CUDA kernels, wherever the values live), under the
//! same names.

use anyhow::Result;

use super::{Tape, Var};
use crate::backend::dispatch::{self as d, BnStats, Labels, LayerNoise, PoolArgmax};
use crate::noise::NoiseKey;
use crate::params::ParamId;
use crate::settings::{Conv2dCfg, DiceMode};
use crate::Tensor;

/// What produced a node, with the state its backward needs.
pub enum Op {
    Leaf,
    Param(ParamId),
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Scale(Var, f32),
    Relu(Var),
    Sigmoid(Var),
    AddChannelBias(Var, Var),
    SumAll(Var),
    MeanAll(Var),
    Reshape(Var),
    Conv2d {
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
    },
    /// A frozen convolution whose weights get MT-CooL's noise inside the kernel (w and b never need a
    /// gradient).
    Conv2dNoisy {
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
        noise: LayerNoise,
    },
    /// A convolution (noisy when `noise` is set, as `Conv2dNoisy`) whose output is max-pooled 2×2 in
    /// the same pass (`conv_shape`: the unpooled output's shape). Its backward is the two ops'
    /// backward rules in turn: unpool dy through `argmax`, then the convolution's.
    Conv2dMaxPool {
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
        noise: Option<LayerNoise>,
        conv_shape: Vec<usize>,
        argmax: PoolArgmax,
    },
    /// relu(conv2d(x, w, b)) (noisy weights when `noise` is set) as one op: the ReLU is applied in the
    /// convolution's output pass. Backward: dy masked where the output is 0, then the conv's rules.
    Conv2dRelu {
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
        noise: Option<LayerNoise>,
    },
    ConvTranspose2d {
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
    },
    Matmul(Var, Var),
    Bmm {
        a: Var,
        b: Var,
        trans_a: bool,
        trans_b: bool,
    },
    SoftmaxLastdim(Var),
    SigmoidGate(Var, Var),
    Linear {
        x: Var,
        w: Var,
        b: Option<Var>,
    },
    /// The frozen, noisy linear layer (as `Conv2dNoisy`).
    LinearNoisy {
        x: Var,
        w: Var,
        b: Option<Var>,
        noise: LayerNoise,
    },
    MaxPool2d {
        x: Var,
        argmax: PoolArgmax,
    },
    AvgPool2d {
        x: Var,
        k: usize,
        stride: usize,
    },
    GlobalAvgPool(Var),
    UpsampleNearest {
        x: Var,
        scale: usize,
    },
    UpsampleBilinear(Var),
    BatchNormTrain {
        x: Var,
        gamma: Var,
        beta: Var,
        stats: BnStats,
    },
    BatchNormEval {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Tensor,
        var: Tensor,
        eps: f32,
    },
    Concat {
        xs: Vec<Var>,
        sizes: Vec<usize>,
    },
    Dropout {
        x: Var,
        mask: Tensor,
    },
    SoftmaxCrossEntropy {
        logits: Var,
        targets: Labels,
        weights: Option<Tensor>,
        probs: Tensor,
    },
    SoftDice {
        logits: Var,
        target: Tensor,
        mode: DiceMode,
        eps: f32,
        probs: Tensor,
    },
}

impl Op {
    /// The tape values this op read.
    pub fn inputs(&self) -> Vec<Var> {
        use Op::*;
        match self {
            Leaf | Param(_) => vec![],
            Add(a, b) | Sub(a, b) | Mul(a, b) | AddChannelBias(a, b) | Matmul(a, b) | SigmoidGate(a, b) => {
                vec![*a, *b]
            }
            Bmm { a, b, .. } => vec![*a, *b],
            Scale(x, _)
            | Relu(x)
            | Sigmoid(x)
            | SoftmaxLastdim(x)
            | SumAll(x)
            | MeanAll(x)
            | Reshape(x)
            | GlobalAvgPool(x)
            | UpsampleBilinear(x) => vec![*x],
            Conv2d { x, w, b, .. }
            | Conv2dNoisy { x, w, b, .. }
            | Conv2dMaxPool { x, w, b, .. }
            | Conv2dRelu { x, w, b, .. }
            | ConvTranspose2d { x, w, b, .. }
            | Linear { x, w, b }
            | LinearNoisy { x, w, b, .. } => [Some(*x), Some(*w), *b].into_iter().flatten().collect(),
            MaxPool2d { x, .. } | AvgPool2d { x, .. } | UpsampleNearest { x, .. } | Dropout { x, .. } => vec![*x],
            BatchNormTrain { x, gamma, beta, .. } | BatchNormEval { x, gamma, beta, .. } => vec![*x, *gamma, *beta],
            Concat { xs, .. } => xs.clone(),
            SoftmaxCrossEntropy { logits, .. } | SoftDice { logits, .. } => vec![*logits],
        }
    }
}

impl Op {
    /// The op's name, as in `Tape::<name>` and `backend::cpu` (for the profiler).
    pub fn name(&self) -> &'static str {
        use Op::*;
        match self {
            Leaf => "leaf",
            Param(_) => "param",
            Add(..) => "add",
            Sub(..) => "sub",
            Mul(..) => "mul",
            Scale(..) => "scale",
            Relu(_) => "relu",
            Sigmoid(_) => "sigmoid",
            AddChannelBias(..) => "add_channel_bias",
            SumAll(_) => "sum_all",
            MeanAll(_) => "mean_all",
            Reshape(_) => "reshape",
            Conv2d { .. } => "conv2d",
            Conv2dNoisy { .. } => "conv2d_noisy",
            Conv2dMaxPool { noise: None, .. } => "conv2d_max_pool2d",
            Conv2dMaxPool { noise: Some(_), .. } => "conv2d_noisy_max_pool2d",
            Conv2dRelu { noise: None, .. } => "conv2d_relu",
            Conv2dRelu { noise: Some(_), .. } => "conv2d_noisy_relu",
            ConvTranspose2d { .. } => "conv_transpose2d",
            Matmul(..) => "matmul",
            Bmm { .. } => "bmm",
            SoftmaxLastdim(_) => "softmax_lastdim",
            SigmoidGate(..) => "sigmoid_gate",
            Linear { .. } => "linear",
            LinearNoisy { .. } => "linear_noisy",
            MaxPool2d { .. } => "max_pool2d",
            AvgPool2d { .. } => "avg_pool2d",
            GlobalAvgPool(_) => "global_avg_pool",
            UpsampleNearest { .. } => "upsample_nearest",
            UpsampleBilinear(_) => "upsample_bilinear",
            BatchNormTrain { .. } => "batch_norm_train",
            BatchNormEval { .. } => "batch_norm_eval",
            Concat { .. } => "concat_channels",
            Dropout { .. } => "dropout",
            SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
            SoftDice { .. } => "soft_dice",
        }
    }

    /// Estimated forward work (FLOPs of the matrix ops, else bytes read + written), given the tape and
    /// the output `y`; a backward is counted as twice the FLOPs, or the bytes plus one more output.
    pub fn work(&self, t: &Tape, y: &Tensor) -> (f64, f64) {
        use Op::*;
        let n = |v: &Var| t.value(*v).numel() as f64;
        let flops = match self {
            Conv2d { w, .. } | Conv2dNoisy { w, .. } | Conv2dRelu { w, .. } => {
                2.0 * y.numel() as f64 * (n(w) / t.value(*w).shape()[0] as f64)
            }
            Conv2dMaxPool { w, conv_shape, .. } => {
                2.0 * conv_shape.iter().product::<usize>() as f64 * (n(w) / t.value(*w).shape()[0] as f64)
            }
            ConvTranspose2d { x, w, .. } => 2.0 * n(x) * (n(w) / t.value(*w).shape()[0] as f64),
            Linear { x, w, .. } | LinearNoisy { x, w, .. } => 2.0 * n(x) * t.value(*w).shape()[0] as f64,
            Matmul(a, b) => 2.0 * n(a) * t.value(*b).shape()[1] as f64,
            Bmm { a, .. } => {
                let s = y.shape();
                2.0 * y.numel() as f64 * (n(a) / (s[0] * s[1]).max(1) as f64)
            }
            _ => 0.0,
        };
        let bytes = 4.0 * (self.inputs().iter().map(n).sum::<f64>() + y.numel() as f64);
        (flops, if flops > 0.0 { 0.0 } else { bytes })
    }
}

/// A scalar gradient's host value (downloaded if a caller seeded the backward with a GPU scalar).
fn host_scalar(dy: &Tensor) -> Result<f32> {
    Ok(dy.host()?.item())
}

/// The gradients of a fused conv op's inputs from the gradient `dconv` of its convolution's output:
/// Conv2d's rule, or with `noise` Conv2dNoisy's (only x, through the perturbed weights).
fn conv_grads(
    t: &Tape,
    [x, w]: [&Var; 2],
    b: Option<Var>,
    cfg: Conv2dCfg,
    noise: Option<LayerNoise>,
    dconv: &Tensor,
) -> Result<Vec<(Var, Tensor)>> {
    let (v, want) = (|x: &Var| t.value(*x), |x: &Var| t.needs_grad(*x));
    let mut g = vec![];
    match noise {
        None => {
            if want(x) {
                g.push((*x, d::conv2d_backward_data(dconv, v(w), v(x).shape(), cfg)?));
            }
            if want(w) {
                g.push((*w, d::conv2d_backward_weight(dconv, v(x), v(w).shape(), cfg)?));
            }
            if let Some(b) = b.filter(|b| want(b)) {
                g.push((b, d::add_channel_bias_backward(dconv)?));
            }
        }
        Some(noise) if want(x) => {
            let wn = d::perturbed(v(w), noise.key, noise.b, noise.w_offset)?;
            g.push((*x, d::conv2d_backward_data(dconv, &wn, v(x).shape(), cfg)?));
        }
        Some(_) => {}
    }
    Ok(g)
}

/// Gradients of an op's inputs given its output value `y` and output gradient `dy`.
pub(super) fn backward(t: &Tape, op: &Op, y: &Tensor, dy: &Tensor) -> Result<Vec<(Var, Tensor)>> {
    use Op::*;
    let v = |x: &Var| t.value(*x);
    let want = |x: &Var| t.needs_grad(*x);
    Ok(match op {
        Leaf | Param(_) => vec![],
        Add(a, b) => vec![(*a, dy.clone()), (*b, dy.clone())],
        Sub(a, b) => vec![(*a, dy.clone()), (*b, d::scale(dy, -1.0)?)],
        Mul(a, b) => vec![(*a, d::mul(dy, v(b))?), (*b, d::mul(dy, v(a))?)],
        Scale(x, s) => vec![(*x, d::scale(dy, *s)?)],
        Relu(x) => vec![(*x, d::relu_backward(dy, v(x))?)],
        Sigmoid(x) => vec![(*x, d::sigmoid_backward(dy, y)?)],
        AddChannelBias(x, b) => vec![(*x, dy.clone()), (*b, d::add_channel_bias_backward(dy)?)],
        SumAll(x) => vec![(*x, d::full_like(v(x), v(x).shape(), host_scalar(dy)?)?)],
        MeanAll(x) => {
            let g = host_scalar(dy)? / v(x).numel() as f32;
            vec![(*x, d::full_like(v(x), v(x).shape(), g)?)]
        }
        Reshape(x) => vec![(*x, dy.reshape(v(x).shape())?)],
        // Convolutions skip the gradients nobody needs (e.g. dx of a network's input image).
        Conv2d { x, w, b, cfg } => {
            let mut g = vec![];
            if want(x) {
                g.push((*x, d::conv2d_backward_data(dy, v(w), v(x).shape(), *cfg)?));
            }
            if want(w) {
                g.push((*w, d::conv2d_backward_weight(dy, v(x), v(w).shape(), *cfg)?));
            }
            if let Some(b) = b.filter(|b| want(b)) {
                g.push((b, d::add_channel_bias_backward(dy)?));
            }
            g
        }
        // Only the input can need a gradient; it needs the perturbed weights, materialised here.
        Conv2dNoisy { x, w, cfg, noise, .. } => {
            let mut g = vec![];
            if want(x) {
                let wn = d::perturbed(v(w), noise.key, noise.b, noise.w_offset)?;
                g.push((*x, d::conv2d_backward_data(dy, &wn, v(x).shape(), *cfg)?));
            }
            g
        }
        Conv2dMaxPool { x, w, b, cfg, noise, conv_shape, argmax } => {
            let dconv = d::max_pool2d_backward(dy, argmax, conv_shape)?;
            conv_grads(t, [x, w], *b, *cfg, *noise, &dconv)?
        }
        Conv2dRelu { x, w, b, cfg, noise } => {
            // y > 0 exactly where the conv output was > 0, so the output masks as the input would.
            let dconv = d::relu_backward(dy, y)?;
            conv_grads(t, [x, w], *b, *cfg, *noise, &dconv)?
        }
        ConvTranspose2d { x, w, b, cfg } => {
            let mut g = vec![];
            if want(x) {
                g.push((*x, d::conv_transpose2d_backward_data(dy, v(w), v(x).shape(), *cfg)?));
            }
            if want(w) {
                g.push((*w, d::conv_transpose2d_backward_weight(dy, v(x), v(w).shape(), *cfg)?));
            }
            if let Some(b) = b.filter(|b| want(b)) {
                g.push((b, d::add_channel_bias_backward(dy)?));
            }
            g
        }
        Matmul(a, b) => {
            let (da, db) = d::matmul_backward(v(a), v(b), dy)?;
            vec![(*a, da), (*b, db)]
        }
        Bmm { a, b, trans_a, trans_b } => {
            let (da, db) = d::bmm_backward(v(a), *trans_a, v(b), *trans_b, dy)?;
            vec![(*a, da), (*b, db)]
        }
        SoftmaxLastdim(x) => vec![(*x, d::softmax_lastdim_backward(dy, y)?)],
        SigmoidGate(x, g) => {
            let (dx, dg) = d::sigmoid_gate_backward(dy, v(x), v(g))?;
            vec![(*x, dx), (*g, dg)]
        }
        Linear { x, w, b } => {
            let (dx, dw, db) = d::linear_backward(v(x), v(w), dy)?;
            let mut g = vec![(*x, dx), (*w, dw)];
            g.extend(b.map(|b| (b, db)));
            g
        }
        LinearNoisy { x, w, noise, .. } => {
            let mut g = vec![];
            if want(x) {
                let wn = d::perturbed(v(w), noise.key, noise.b, noise.w_offset)?;
                g.push((*x, d::matmul(dy, &wn)?));
            }
            g
        }
        MaxPool2d { x, argmax } => vec![(*x, d::max_pool2d_backward(dy, argmax, v(x).shape())?)],
        AvgPool2d { x, k, stride } => vec![(*x, d::avg_pool2d_backward(dy, v(x).shape(), *k, *stride)?)],
        GlobalAvgPool(x) => vec![(*x, d::global_avg_pool_backward(dy, v(x).shape())?)],
        UpsampleNearest { x, scale } => vec![(*x, d::upsample_nearest_backward(dy, *scale)?)],
        UpsampleBilinear(x) => vec![(*x, d::upsample_bilinear_backward(dy, v(x).shape())?)],
        BatchNormTrain { x, gamma, beta, stats } => {
            let (dx, dg, db) = d::batch_norm_train_backward(dy, v(x), v(gamma), stats)?;
            vec![(*x, dx), (*gamma, dg), (*beta, db)]
        }
        BatchNormEval { x, gamma, beta, mean, var, eps } => {
            let (dx, dg, db) = d::batch_norm_eval_backward(dy, v(x), v(gamma), mean, var, *eps)?;
            vec![(*x, dx), (*gamma, dg), (*beta, db)]
        }
        Concat { xs, sizes } => xs.iter().copied().zip(d::split_channels(dy, sizes)?).collect(),
        Dropout { x, mask } => vec![(*x, d::dropout_backward(dy, mask)?)],
        SoftmaxCrossEntropy { logits, targets, weights, probs } => {
            let g = d::softmax_cross_entropy_backward(probs, targets, weights.as_ref(), host_scalar(dy)?)?;
            vec![(*logits, g)]
        }
        SoftDice { logits, target, mode, eps, probs } => {
            let g = d::soft_dice_backward(v(logits), probs, target, *mode, *eps, host_scalar(dy)?)?;
            vec![(*logits, g)]
        }
    })
}

/// Op constructors: each runs the forward where its inputs live and records the op.
impl Tape {
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = d::add(self.value(a), self.value(b))?;
        Ok(self.push(y, Op::Add(a, b)))
    }
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = d::sub(self.value(a), self.value(b))?;
        Ok(self.push(y, Op::Sub(a, b)))
    }
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = d::mul(self.value(a), self.value(b))?;
        Ok(self.push(y, Op::Mul(a, b)))
    }
    pub fn scale(&mut self, x: Var, s: f32) -> Result<Var> {
        let y = d::scale(self.value(x), s)?;
        Ok(self.push(y, Op::Scale(x, s)))
    }
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let y = d::relu(self.value(x))?;
        Ok(self.push(y, Op::Relu(x)))
    }
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        let y = d::sigmoid(self.value(x))?;
        Ok(self.push(y, Op::Sigmoid(x)))
    }
    pub fn add_channel_bias(&mut self, x: Var, b: Var) -> Result<Var> {
        let y = d::add_channel_bias(self.value(x), self.value(b))?;
        Ok(self.push(y, Op::AddChannelBias(x, b)))
    }
    pub fn sum_all(&mut self, x: Var) -> Result<Var> {
        let y = d::sum_all(self.value(x))?;
        Ok(self.push(y, Op::SumAll(x)))
    }
    pub fn mean_all(&mut self, x: Var) -> Result<Var> {
        let y = d::mean_all(self.value(x))?;
        Ok(self.push(y, Op::MeanAll(x)))
    }
    /// Same elements, new shape (e.g. flatten [N, C, H, W] → [N, C·H·W]).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let y = self.value(x).reshape(shape)?;
        Ok(self.push(y, Op::Reshape(x)))
    }
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg) -> Result<Var> {
        let y = d::conv2d_forward(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg)?;
        Ok(self.push(y, Op::Conv2d { x, w, b, cfg }))
    }
    /// conv2d with frozen weights `w`, `b` perturbed by `noise` as the kernel reads them.
    pub fn conv2d_noisy(&mut self, x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg, noise: LayerNoise) -> Result<Var> {
        let y = d::conv2d_forward_noisy(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg, noise)?;
        Ok(self.push(y, Op::Conv2dNoisy { x, w, b, cfg, noise }))
    }
    /// max_pool2d(conv2d(x, w, b), 2, 2) as one op (weights perturbed by `noise` if given, as
    /// `conv2d_noisy`): the same values and gradients, without the unpooled output ever stored.
    pub fn conv2d_max_pool(
        &mut self,
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
        noise: Option<LayerNoise>,
    ) -> Result<Var> {
        let (y, argmax, conv_shape) =
            d::conv2d_max_pool_forward(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg, noise)?;
        Ok(self.push(y, Op::Conv2dMaxPool { x, w, b, cfg, noise, conv_shape, argmax }))
    }
    /// relu(conv2d(x, w, b)) as one op (weights perturbed by `noise` if given): the same values and
    /// gradients as the two ops, the ReLU applied in the convolution's output pass.
    pub fn conv2d_relu(
        &mut self,
        x: Var,
        w: Var,
        b: Option<Var>,
        cfg: Conv2dCfg,
        noise: Option<LayerNoise>,
    ) -> Result<Var> {
        let y = d::conv2d_relu_forward(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg, noise)?;
        Ok(self.push(y, Op::Conv2dRelu { x, w, b, cfg, noise }))
    }
    pub fn conv_transpose2d(&mut self, x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg) -> Result<Var> {
        let y = d::conv_transpose2d_forward(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg)?;
        Ok(self.push(y, Op::ConvTranspose2d { x, w, b, cfg }))
    }
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let y = d::matmul(self.value(a), self.value(b))?;
        Ok(self.push(y, Op::Matmul(a, b)))
    }
    /// Batched matrix product y[i] = op(a[i]) · op(b[i]) of 3-d tensors (op = transpose when asked).
    pub fn bmm(&mut self, a: Var, trans_a: bool, b: Var, trans_b: bool) -> Result<Var> {
        let y = d::bmm(self.value(a), trans_a, self.value(b), trans_b)?;
        Ok(self.push(y, Op::Bmm { a, b, trans_a, trans_b }))
    }
    /// Softmax over the last axis.
    pub fn softmax_lastdim(&mut self, x: Var) -> Result<Var> {
        let y = d::softmax_lastdim_forward(self.value(x))?;
        Ok(self.push(y, Op::SoftmaxLastdim(x)))
    }
    /// x ⊙ σ(g), x and g of one shape.
    pub fn sigmoid_gate(&mut self, x: Var, g: Var) -> Result<Var> {
        let y = d::sigmoid_gate_forward(self.value(x), self.value(g))?;
        Ok(self.push(y, Op::SigmoidGate(x, g)))
    }
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Result<Var> {
        let y = d::linear_forward(self.value(x), self.value(w), b.map(|b| self.value(b)))?;
        Ok(self.push(y, Op::Linear { x, w, b }))
    }
    /// linear with frozen weights `w`, `b` perturbed by `noise` as the kernel reads them.
    pub fn linear_noisy(&mut self, x: Var, w: Var, b: Option<Var>, noise: LayerNoise) -> Result<Var> {
        let y = d::linear_forward_noisy(self.value(x), self.value(w), b.map(|b| self.value(b)), noise)?;
        Ok(self.push(y, Op::LinearNoisy { x, w, b, noise }))
    }
    pub fn max_pool2d(&mut self, x: Var, k: usize, stride: usize) -> Result<Var> {
        let (y, argmax) = d::max_pool2d_forward(self.value(x), k, stride)?;
        Ok(self.push(y, Op::MaxPool2d { x, argmax }))
    }
    pub fn avg_pool2d(&mut self, x: Var, k: usize, stride: usize) -> Result<Var> {
        let y = d::avg_pool2d_forward(self.value(x), k, stride)?;
        Ok(self.push(y, Op::AvgPool2d { x, k, stride }))
    }
    pub fn global_avg_pool(&mut self, x: Var) -> Result<Var> {
        let y = d::global_avg_pool_forward(self.value(x))?;
        Ok(self.push(y, Op::GlobalAvgPool(x)))
    }
    pub fn upsample_nearest(&mut self, x: Var, scale: usize) -> Result<Var> {
        let y = d::upsample_nearest_forward(self.value(x), scale)?;
        Ok(self.push(y, Op::UpsampleNearest { x, scale }))
    }
    pub fn upsample_bilinear(&mut self, x: Var, out_h: usize, out_w: usize) -> Result<Var> {
        let y = d::upsample_bilinear_forward(self.value(x), out_h, out_w)?;
        Ok(self.push(y, Op::UpsampleBilinear(x)))
    }
    /// Batch norm with batch statistics; returns them too so the caller can update running statistics.
    pub fn batch_norm_train(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Result<(Var, BnStats)> {
        let (y, stats) = d::batch_norm_train_forward(self.value(x), self.value(gamma), self.value(beta), eps)?;
        let out = self.push(y, Op::BatchNormTrain { x, gamma, beta, stats: stats.clone() });
        Ok((out, stats))
    }
    /// Batch norm with fixed (running) statistics.
    pub fn batch_norm_eval(
        &mut self,
        x: Var,
        gamma: Var,
        beta: Var,
        mean: &Tensor,
        var: &Tensor,
        eps: f32,
    ) -> Result<Var> {
        let y = d::batch_norm_eval_forward(self.value(x), self.value(gamma), self.value(beta), mean, var, eps)?;
        let (mean, var) = (mean.clone(), var.clone());
        Ok(self.push(y, Op::BatchNormEval { x, gamma, beta, mean, var, eps }))
    }
    pub fn concat_channels(&mut self, xs: &[Var]) -> Result<Var> {
        let vals: Vec<&Tensor> = xs.iter().map(|&x| self.value(x)).collect();
        let sizes = vals.iter().map(|t| t.shape()[1]).collect();
        let y = d::concat_channels(&vals)?;
        Ok(self.push(y, Op::Concat { xs: xs.to_vec(), sizes }))
    }
    /// Inverted dropout with a mask drawn from the counter-based stream `key`.
    pub fn dropout(&mut self, x: Var, p: f32, key: NoiseKey) -> Result<Var> {
        let mask = d::dropout_mask(self.value(x), p, key)?;
        let y = d::dropout_forward(self.value(x), &mask)?;
        Ok(self.push(y, Op::Dropout { x, mask }))
    }
    /// Mean (optionally class-weighted) softmax cross-entropy over items; classes on dim 1. The labels
    /// and weights must be on the logits' device.
    pub fn softmax_cross_entropy(&mut self, logits: Var, targets: &Labels, weights: Option<&Tensor>) -> Result<Var> {
        let (l, probs) = d::softmax_cross_entropy_forward(self.value(logits), targets, weights)?;
        let (targets, weights) = (targets.clone(), weights.cloned());
        Ok(self.push(l, Op::SoftmaxCrossEntropy { logits, targets, weights, probs }))
    }
    /// 1 − mean soft Dice over channels.
    pub fn soft_dice(&mut self, logits: Var, target: &Tensor, mode: DiceMode, eps: f32) -> Result<Var> {
        let (l, probs) = d::soft_dice_forward(self.value(logits), target, mode, eps)?;
        let target = target.clone();
        Ok(self.push(l, Op::SoftDice { logits, target, mode, eps, probs }))
    }
}
