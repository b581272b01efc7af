//! Every differentiable op of the tape: its constructor (`Tape::<op>`, which runs the CPU forward and
//! records what backward needs) and its backward rule (one arm of `backward`). The arithmetic itself lives
//! in `backend::cpu::<family>`, under the same names.

use super::{Tape, Var};
use crate::backend::cpu::conv::Conv2dCfg;
use crate::backend::cpu::loss::DiceMode;
use crate::backend::cpu::norm::BatchNormStats;
use crate::backend::cpu::{
    attention as attn, concat, conv, dropout, elementwise as ew, linear, loss, norm, pool, upsample,
};
use crate::noise::NoiseKey;
use crate::params::ParamId;
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
    Conv2d { x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg },
    ConvTranspose2d { x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg },
    Matmul(Var, Var),
    Bmm { a: Var, b: Var, trans_a: bool, trans_b: bool },
    SoftmaxLastdim(Var),
    SigmoidGate(Var, Var),
    Linear { x: Var, w: Var, b: Option<Var> },
    MaxPool2d { x: Var, argmax: Vec<u32> },
    AvgPool2d { x: Var, k: usize, stride: usize },
    GlobalAvgPool(Var),
    UpsampleNearest { x: Var, scale: usize },
    UpsampleBilinear(Var),
    BatchNormTrain { x: Var, gamma: Var, beta: Var, stats: BatchNormStats },
    BatchNormEval { x: Var, gamma: Var, beta: Var, mean: Tensor, var: Tensor, eps: f32 },
    Concat { xs: Vec<Var>, sizes: Vec<usize> },
    Dropout { x: Var, mask: Tensor },
    SoftmaxCrossEntropy { logits: Var, targets: Vec<u32>, weights: Option<Vec<f32>>, probs: Tensor },
    SoftDice { logits: Var, target: Tensor, mode: DiceMode, eps: f32, probs: Tensor },
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
            Conv2d { x, w, b, .. } | ConvTranspose2d { x, w, b, .. } | Linear { x, w, b } => {
                [Some(*x), Some(*w), *b].into_iter().flatten().collect()
            }
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
            ConvTranspose2d { .. } => "conv_transpose2d",
            Matmul(..) => "matmul",
            Bmm { .. } => "bmm",
            SoftmaxLastdim(_) => "softmax_lastdim",
            SigmoidGate(..) => "sigmoid_gate",
            Linear { .. } => "linear",
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
            Conv2d { w, .. } => 2.0 * y.numel() as f64 * (n(w) / t.value(*w).shape()[0] as f64),
            ConvTranspose2d { x, w, .. } => 2.0 * n(x) * (n(w) / t.value(*w).shape()[0] as f64),
            Linear { x, w, .. } => 2.0 * n(x) * t.value(*w).shape()[0] as f64,
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

/// Gradients of an op's inputs given its output value `y` and output gradient `dy`.
pub(super) fn backward(t: &Tape, op: &Op, y: &Tensor, dy: &Tensor) -> Vec<(Var, Tensor)> {
    use Op::*;
    let v = |x: &Var| t.value(*x);
    match op {
        Leaf | Param(_) => vec![],
        Add(a, b) => vec![(*a, dy.clone()), (*b, dy.clone())],
        Sub(a, b) => vec![(*a, dy.clone()), (*b, ew::scale(dy, -1.0))],
        Mul(a, b) => vec![(*a, ew::mul(dy, v(b))), (*b, ew::mul(dy, v(a)))],
        Scale(x, s) => vec![(*x, ew::scale(dy, *s))],
        Relu(x) => vec![(*x, ew::relu_backward(dy, v(x)))],
        Sigmoid(x) => vec![(*x, ew::sigmoid_backward(dy, y))],
        AddChannelBias(x, b) => vec![(*x, dy.clone()), (*b, ew::add_channel_bias_backward(dy))],
        SumAll(x) => vec![(*x, Tensor::full(v(x).shape(), dy.item()))],
        MeanAll(x) => vec![(*x, Tensor::full(v(x).shape(), dy.item() / v(x).numel() as f32))],
        Reshape(x) => vec![(*x, Tensor::from_parts(v(x).shape().to_vec(), dy.data().to_vec()))],
        // Convolutions skip the gradients nobody needs (e.g. dx of a network's input image).
        Conv2d { x, w, b, cfg } => {
            let mut g = vec![];
            if t.needs_grad(*x) {
                g.push((*x, conv::conv2d_backward_data(dy, v(w), v(x).shape(), *cfg)));
            }
            if t.needs_grad(*w) {
                g.push((*w, conv::conv2d_backward_weight(dy, v(x), v(w).shape(), *cfg)));
            }
            g.extend(b.filter(|&b| t.needs_grad(b)).map(|b| (b, ew::add_channel_bias_backward(dy))));
            g
        }
        ConvTranspose2d { x, w, b, cfg } => {
            let mut g = vec![];
            if t.needs_grad(*x) {
                g.push((*x, conv::conv_transpose2d_backward_data(dy, v(w), v(x).shape(), *cfg)));
            }
            if t.needs_grad(*w) {
                g.push((*w, conv::conv_transpose2d_backward_weight(dy, v(x), v(w).shape(), *cfg)));
            }
            g.extend(b.filter(|&b| t.needs_grad(b)).map(|b| (b, ew::add_channel_bias_backward(dy))));
            g
        }
        Matmul(a, b) => {
            let (da, db) = linear::matmul_backward(v(a), v(b), dy);
            vec![(*a, da), (*b, db)]
        }
        Bmm { a, b, trans_a, trans_b } => {
            let (da, db) = attn::bmm_backward(v(a), *trans_a, v(b), *trans_b, dy);
            vec![(*a, da), (*b, db)]
        }
        SoftmaxLastdim(x) => vec![(*x, attn::softmax_lastdim_backward(dy, y))],
        SigmoidGate(x, g) => {
            let (dx, dg) = attn::sigmoid_gate_backward(dy, v(x), v(g));
            vec![(*x, dx), (*g, dg)]
        }
        Linear { x, w, b } => {
            let (dx, dw, db) = linear::linear_backward(v(x), v(w), dy);
            let mut g = vec![(*x, dx), (*w, dw)];
            g.extend(b.map(|b| (b, db)));
            g
        }
        MaxPool2d { x, argmax } => vec![(*x, pool::max_pool2d_backward(dy, argmax, v(x).shape()))],
        AvgPool2d { x, k, stride } => vec![(*x, pool::avg_pool2d_backward(dy, v(x).shape(), *k, *stride))],
        GlobalAvgPool(x) => vec![(*x, pool::global_avg_pool_backward(dy, v(x).shape()))],
        UpsampleNearest { x, scale } => vec![(*x, upsample::upsample_nearest_backward(dy, *scale))],
        UpsampleBilinear(x) => vec![(*x, upsample::upsample_bilinear_backward(dy, v(x).shape()))],
        BatchNormTrain { x, gamma, beta, stats } => {
            let (dx, dg, db) = norm::batch_norm_train_backward(dy, v(x), v(gamma), stats);
            vec![(*x, dx), (*gamma, dg), (*beta, db)]
        }
        BatchNormEval { x, gamma, beta, mean, var, eps } => {
            let (dx, dg, db) = norm::batch_norm_eval_backward(dy, v(x), v(gamma), mean, var, *eps);
            vec![(*x, dx), (*gamma, dg), (*beta, db)]
        }
        Concat { xs, sizes } => xs.iter().copied().zip(concat::split_channels(dy, sizes)).collect(),
        Dropout { x, mask } => vec![(*x, dropout::dropout_backward(dy, mask))],
        SoftmaxCrossEntropy { logits, targets, weights, probs } => {
            let g = loss::softmax_cross_entropy_backward(probs, targets, weights.as_deref(), dy.item());
            vec![(*logits, g)]
        }
        SoftDice { logits, target, mode, eps, probs } => {
            let g = loss::soft_dice_backward(v(logits), probs, target, *mode, *eps, dy.item());
            vec![(*logits, g)]
        }
    }
}

/// Op constructors: each runs the CPU forward and records the op.
impl Tape {
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let y = ew::add(self.value(a), self.value(b));
        self.push(y, Op::Add(a, b))
    }
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        let y = ew::sub(self.value(a), self.value(b));
        self.push(y, Op::Sub(a, b))
    }
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        let y = ew::mul(self.value(a), self.value(b));
        self.push(y, Op::Mul(a, b))
    }
    pub fn scale(&mut self, x: Var, s: f32) -> Var {
        let y = ew::scale(self.value(x), s);
        self.push(y, Op::Scale(x, s))
    }
    pub fn relu(&mut self, x: Var) -> Var {
        let y = ew::relu(self.value(x));
        self.push(y, Op::Relu(x))
    }
    pub fn sigmoid(&mut self, x: Var) -> Var {
        let y = ew::sigmoid(self.value(x));
        self.push(y, Op::Sigmoid(x))
    }
    pub fn add_channel_bias(&mut self, x: Var, b: Var) -> Var {
        let y = ew::add_channel_bias(self.value(x), self.value(b));
        self.push(y, Op::AddChannelBias(x, b))
    }
    pub fn sum_all(&mut self, x: Var) -> Var {
        let y = ew::sum_all(self.value(x));
        self.push(y, Op::SumAll(x))
    }
    pub fn mean_all(&mut self, x: Var) -> Var {
        let y = ew::mean_all(self.value(x));
        self.push(y, Op::MeanAll(x))
    }
    /// Same elements, new shape (e.g. flatten [N, C, H, W] → [N, C·H·W]).
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let y = self.value(x).reshape(shape).unwrap_or_else(|e| panic!("reshape: {e}"));
        self.push(y, Op::Reshape(x))
    }
    pub fn conv2d(&mut self, x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg) -> Var {
        let y = conv::conv2d_forward(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg);
        self.push(y, Op::Conv2d { x, w, b, cfg })
    }
    pub fn conv_transpose2d(&mut self, x: Var, w: Var, b: Option<Var>, cfg: Conv2dCfg) -> Var {
        let y = conv::conv_transpose2d_forward(self.value(x), self.value(w), b.map(|b| self.value(b)), cfg);
        self.push(y, Op::ConvTranspose2d { x, w, b, cfg })
    }
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let y = linear::matmul(self.value(a), self.value(b));
        self.push(y, Op::Matmul(a, b))
    }
    /// Batched matrix product y[i] = op(a[i]) · op(b[i]) of 3-d tensors (op = transpose when asked).
    pub fn bmm(&mut self, a: Var, trans_a: bool, b: Var, trans_b: bool) -> Var {
        let y = attn::bmm(self.value(a), trans_a, self.value(b), trans_b);
        self.push(y, Op::Bmm { a, b, trans_a, trans_b })
    }
    /// Softmax over the last axis.
    pub fn softmax_lastdim(&mut self, x: Var) -> Var {
        let y = attn::softmax_lastdim_forward(self.value(x));
        self.push(y, Op::SoftmaxLastdim(x))
    }
    /// x ⊙ σ(g), x and g of one shape.
    pub fn sigmoid_gate(&mut self, x: Var, g: Var) -> Var {
        let y = attn::sigmoid_gate_forward(self.value(x), self.value(g));
        self.push(y, Op::SigmoidGate(x, g))
    }
    pub fn linear(&mut self, x: Var, w: Var, b: Option<Var>) -> Var {
        let y = linear::linear_forward(self.value(x), self.value(w), b.map(|b| self.value(b)));
        self.push(y, Op::Linear { x, w, b })
    }
    pub fn max_pool2d(&mut self, x: Var, k: usize, stride: usize) -> Var {
        let (y, argmax) = pool::max_pool2d_forward(self.value(x), k, stride);
        self.push(y, Op::MaxPool2d { x, argmax })
    }
    pub fn avg_pool2d(&mut self, x: Var, k: usize, stride: usize) -> Var {
        let y = pool::avg_pool2d_forward(self.value(x), k, stride);
        self.push(y, Op::AvgPool2d { x, k, stride })
    }
    pub fn global_avg_pool(&mut self, x: Var) -> Var {
        let y = pool::global_avg_pool_forward(self.value(x));
        self.push(y, Op::GlobalAvgPool(x))
    }
    pub fn upsample_nearest(&mut self, x: Var, scale: usize) -> Var {
        let y = upsample::upsample_nearest_forward(self.value(x), scale);
        self.push(y, Op::UpsampleNearest { x, scale })
    }
    pub fn upsample_bilinear(&mut self, x: Var, out_h: usize, out_w: usize) -> Var {
        let y = upsample::upsample_bilinear_forward(self.value(x), out_h, out_w);
        self.push(y, Op::UpsampleBilinear(x))
    }
    /// Batch norm with batch statistics; returns them too so the caller can update running statistics.
    pub fn batch_norm_train(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> (Var, BatchNormStats) {
        let (y, stats) = norm::batch_norm_train_forward(self.value(x), self.value(gamma), self.value(beta), eps);
        let out = self.push(y, Op::BatchNormTrain { x, gamma, beta, stats: stats.clone() });
        (out, stats)
    }
    /// Batch norm with fixed (running) statistics.
    pub fn batch_norm_eval(&mut self, x: Var, gamma: Var, beta: Var, mean: &Tensor, var: &Tensor, eps: f32) -> Var {
        let y = norm::batch_norm_eval_forward(self.value(x), self.value(gamma), self.value(beta), mean, var, eps);
        let (mean, var) = (mean.clone(), var.clone());
        self.push(y, Op::BatchNormEval { x, gamma, beta, mean, var, eps })
    }
    pub fn concat_channels(&mut self, xs: &[Var]) -> Var {
        let vals: Vec<&Tensor> = xs.iter().map(|&x| self.value(x)).collect();
        let sizes = vals.iter().map(|t| t.shape()[1]).collect();
        let y = concat::concat_channels(&vals);
        self.push(y, Op::Concat { xs: xs.to_vec(), sizes })
    }
    /// Inverted dropout with a mask drawn from the counter-based stream `key`.
    pub fn dropout(&mut self, x: Var, p: f32, key: NoiseKey) -> Var {
        let mask = dropout::dropout_mask(self.value(x).shape(), p, key);
        let y = dropout::dropout_forward(self.value(x), &mask);
        self.push(y, Op::Dropout { x, mask })
    }
    /// Mean (optionally class-weighted) softmax cross-entropy over items; classes on dim 1.
    pub fn softmax_cross_entropy(&mut self, logits: Var, targets: &[u32], weights: Option<&[f32]>) -> Var {
        let (l, probs) = loss::softmax_cross_entropy_forward(self.value(logits), targets, weights);
        let (targets, weights) = (targets.to_vec(), weights.map(|w| w.to_vec()));
        self.push(Tensor::scalar(l), Op::SoftmaxCrossEntropy { logits, targets, weights, probs })
    }
    /// 1 − mean soft Dice over channels.
    pub fn soft_dice(&mut self, logits: Var, target: &Tensor, mode: DiceMode, eps: f32) -> Var {
        let (l, probs) = loss::soft_dice_forward(self.value(logits), target, mode, eps);
        let target = target.clone();
        self.push(Tensor::scalar(l), Op::SoftDice { logits, target, mode, eps, probs })
    }
}
