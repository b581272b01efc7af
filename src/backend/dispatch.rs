//! The one op interface above the backends: each function runs its op where its tensors live — the
//! CPU reference (`backend::cpu`) for host tensors, the kernel wrappers (`backend::cuda`) for tensors
//! on a GPU — and returns its result on the same device. Tensors on different devices are a typed
//! error ([`DeviceMismatch`]), never a silent copy. Names are the CPU reference's.

use std::sync::Arc;

use anyhow::Result;

use super::cpu::{attention as attn, concat, conv, dropout, elementwise as ew, linear, loss, norm, pool, upsample};
use super::cuda::{Gpu, GpuArgmax, GpuBatchNormStats, GpuBuf, GpuTensor};
use super::Backend;
use crate::noise::{NoiseKey, WeightNoise};
use crate::settings::{Conv2dCfg, DiceMode};
use crate::Tensor;

/// An op was given tensors that live on different devices.
#[derive(Debug, thiserror::Error)]
#[error("{op}: its tensors are on different devices ({devices}); move them with Tensor::to_backend first")]
pub struct DeviceMismatch {
    pub op: &'static str,
    pub devices: String,
}

/// The GPU every tensor of `xs` lives on, or `None` when all are host tensors.
fn placement(op: &'static str, xs: &[&Tensor]) -> Result<Option<Arc<Gpu>>> {
    let first = xs.first().map(|t| t.backend()).unwrap_or(Backend::Cpu);
    if xs.iter().all(|t| t.backend().same(&first)) {
        return Ok(match first {
            Backend::Cpu => None,
            Backend::Cuda(g) => Some(g),
        });
    }
    let devices = xs.iter().map(|t| t.backend().name()).collect::<Vec<_>>().join(", ");
    Err(DeviceMismatch { op, devices }.into())
}

/// The GPU buffer of a tensor `placement` found on the GPU.
fn g(t: &Tensor) -> &GpuTensor {
    t.gpu_tensor().expect("placement() checked that every tensor is on the GPU")
}

fn on(gpu: &Arc<Gpu>, t: GpuTensor) -> Tensor {
    Tensor::from_gpu(gpu, t)
}

/// Class indices, one per item in (n, h, w) order, where the loss kernels read them.
#[derive(Clone)]
pub enum Labels {
    Cpu(Arc<Vec<u32>>),
    Cuda(Arc<GpuBuf<u32>>),
}

impl Labels {
    /// `labels` on `backend` (an upload for a GPU).
    pub fn on(labels: &[u32], backend: &Backend) -> Result<Labels> {
        Ok(match backend {
            Backend::Cpu => Labels::Cpu(Arc::new(labels.to_vec())),
            Backend::Cuda(gpu) => Labels::Cuda(Arc::new(gpu.upload_labels(labels)?)),
        })
    }
    pub fn len(&self) -> usize {
        match self {
            Labels::Cpu(v) => v.len(),
            Labels::Cuda(b) => b.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&[u32]> for Labels {
    fn from(v: &[u32]) -> Labels {
        Labels::Cpu(Arc::new(v.to_vec()))
    }
}

/// What max pooling's backward needs: the index of the value each output took.
pub enum PoolArgmax {
    Cpu(Vec<u32>),
    Cuda(GpuArgmax),
}

/// Batch statistics of a train-mode batch norm.
#[derive(Clone)]
pub enum BnStats {
    Cpu(norm::BatchNormStats),
    Cuda(Arc<GpuBatchNormStats>),
}

/// MT-CooL's weight noise on a frozen layer (ε ~ U(−b, b) at the weight's and the bias's offsets in θ),
/// added by the layer's kernel as it reads the weights: no perturbed copy of θ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNoise {
    pub key: NoiseKey,
    pub b: f32,
    pub w_offset: u32,
    pub b_offset: u32,
}

/// w + ε as a tensor (for the rare backward through a noisy layer's input).
pub fn perturbed(w: &Tensor, key: NoiseKey, b: f32, offset: u32) -> Result<Tensor> {
    Ok(match placement("add_noise", &[w])? {
        None => Tensor::from_parts(w.shape().to_vec(), key.perturb(w.data(), b, offset)),
        Some(gpu) => on(&gpu, gpu.add_noise(g(w), WeightNoise { key, b, offset })?),
    })
}

/// A frozen layer's weight and bias with MT-CooL's noise added (host copies, for the CPU arms).
fn perturbed_layer(w: &Tensor, b: Option<&Tensor>, n: LayerNoise) -> Result<(Tensor, Option<Tensor>)> {
    Ok((perturbed(w, n.key, n.b, n.w_offset)?, b.map(|b| perturbed(b, n.key, n.b, n.b_offset)).transpose()?))
}

macro_rules! binary {
    ($($name:ident),*) => {$(
        pub fn $name(a: &Tensor, b: &Tensor) -> Result<Tensor> {
            Ok(match placement(stringify!($name), &[a, b])? {
                None => ew::$name(a, b),
                Some(gpu) => on(&gpu, gpu.$name(g(a), g(b))?),
            })
        }
    )*};
}
binary!(add, sub, mul, relu_backward, sigmoid_backward, add_channel_bias);

macro_rules! unary {
    ($($name:ident),*) => {$(
        pub fn $name(x: &Tensor) -> Result<Tensor> {
            Ok(match placement(stringify!($name), &[x])? {
                None => ew::$name(x),
                Some(gpu) => on(&gpu, gpu.$name(g(x))?),
            })
        }
    )*};
}
unary!(relu, sigmoid, add_channel_bias_backward, sum_all, mean_all);

pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    Ok(match placement("scale", &[x])? {
        None => ew::scale(x, s),
        Some(gpu) => on(&gpu, gpu.scale(g(x), s)?),
    })
}

/// `v` everywhere, shape `shape`, on `like`'s device.
pub fn full_like(like: &Tensor, shape: &[usize], v: f32) -> Result<Tensor> {
    Ok(match placement("full", &[like])? {
        None => Tensor::full(shape, v),
        Some(gpu) if v == 0.0 => on(&gpu, gpu.zeros(shape)?),
        Some(gpu) => on(&gpu, gpu.upload(&Tensor::full(shape, v))?),
    })
}

/// In-place zeroing (gradients between steps).
pub fn fill_zero(t: &mut Tensor) -> Result<()> {
    match t.backend() {
        Backend::Cuda(gpu) => gpu.fill_zero(t.gpu_mut()?),
        Backend::Cpu => {
            t.data_mut().fill(0.0);
            Ok(())
        }
    }
}

pub fn conv2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("conv2d_forward", &all)? {
        None => conv::conv2d_forward(x, w, b, cfg),
        Some(gpu) => on(&gpu, gpu.conv2d_forward(g(x), g(w), b.map(g), cfg)?),
    })
}

/// conv2d_forward(x, w + ε_w, b + ε_b): the kernel adds the noise as it reads the weights.
pub fn conv2d_forward_noisy(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: Conv2dCfg,
    n: LayerNoise,
) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("conv2d_forward_noisy", &all)? {
        None => {
            let (w, b) = perturbed_layer(w, b, n)?;
            conv::conv2d_forward(x, &w, b.as_ref(), cfg)
        }
        Some(gpu) => {
            let y = gpu.conv2d_forward_noisy(g(x), g(w), b.map(g), cfg, n.key, n.b, n.w_offset, n.b_offset)?;
            on(&gpu, y)
        }
    })
}

/// max_pool2d(conv2d(x, w, b), 2, 2) (noisy weights with `noise`): (pooled output, argmax into the
/// unpooled output, the unpooled output's shape). On the CPU one pass (`conv::conv2d_max_pool_forward`);
/// on a GPU the convolution kernel, then the pooling kernel.
pub fn conv2d_max_pool_forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: Conv2dCfg,
    noise: Option<LayerNoise>,
) -> Result<(Tensor, PoolArgmax, Vec<usize>)> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("conv2d_max_pool_forward", &all)? {
        None => {
            let noisy = noise.map(|n| perturbed_layer(w, b, n)).transpose()?;
            let (w, b) = noisy.as_ref().map_or((w, b), |(w, b)| (w, b.as_ref()));
            let (y, argmax, conv_shape) = conv::conv2d_max_pool_forward(x, w, b, cfg);
            (y, PoolArgmax::Cpu(argmax), conv_shape)
        }
        Some(_) => {
            let conv = match noise {
                Some(n) => conv2d_forward_noisy(x, w, b, cfg, n)?,
                None => conv2d_forward(x, w, b, cfg)?,
            };
            let (y, argmax) = max_pool2d_forward(&conv, 2, 2)?;
            (y, argmax, conv.shape().to_vec())
        }
    })
}

/// relu(conv2d(x, w, b)) (noisy weights with `noise`). On the CPU the ReLU is applied in the conv's
/// output pass (`conv::conv2d_relu_forward`); on a GPU the convolution kernel, then the ReLU kernel.
pub fn conv2d_relu_forward(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    cfg: Conv2dCfg,
    noise: Option<LayerNoise>,
) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("conv2d_relu_forward", &all)? {
        None => {
            let noisy = noise.map(|n| perturbed_layer(w, b, n)).transpose()?;
            let (w, b) = noisy.as_ref().map_or((w, b), |(w, b)| (w, b.as_ref()));
            conv::conv2d_relu_forward(x, w, b, cfg)
        }
        Some(_) => {
            let conv = match noise {
                Some(n) => conv2d_forward_noisy(x, w, b, cfg, n)?,
                None => conv2d_forward(x, w, b, cfg)?,
            };
            relu(&conv)?
        }
    })
}

pub fn conv2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Result<Tensor> {
    Ok(match placement("conv2d_backward_data", &[dy, w])? {
        None => conv::conv2d_backward_data(dy, w, x_shape, cfg),
        Some(gpu) => on(&gpu, gpu.conv2d_backward_data(g(dy), g(w), x_shape, cfg)?),
    })
}

pub fn conv2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Result<Tensor> {
    Ok(match placement("conv2d_backward_weight", &[dy, x])? {
        None => conv::conv2d_backward_weight(dy, x, w_shape, cfg),
        Some(gpu) => on(&gpu, gpu.conv2d_backward_weight(g(dy), g(x), w_shape, cfg)?),
    })
}

pub fn conv_transpose2d_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>, cfg: Conv2dCfg) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("conv_transpose2d_forward", &all)? {
        None => conv::conv_transpose2d_forward(x, w, b, cfg),
        Some(gpu) => on(&gpu, gpu.conv_transpose2d_forward(g(x), g(w), b.map(g), cfg)?),
    })
}

pub fn conv_transpose2d_backward_data(dy: &Tensor, w: &Tensor, x_shape: &[usize], cfg: Conv2dCfg) -> Result<Tensor> {
    Ok(match placement("conv_transpose2d_backward_data", &[dy, w])? {
        None => conv::conv_transpose2d_backward_data(dy, w, x_shape, cfg),
        Some(gpu) => on(&gpu, gpu.conv_transpose2d_backward_data(g(dy), g(w), x_shape, cfg)?),
    })
}

pub fn conv_transpose2d_backward_weight(dy: &Tensor, x: &Tensor, w_shape: &[usize], cfg: Conv2dCfg) -> Result<Tensor> {
    Ok(match placement("conv_transpose2d_backward_weight", &[dy, x])? {
        None => conv::conv_transpose2d_backward_weight(dy, x, w_shape, cfg),
        Some(gpu) => on(&gpu, gpu.conv_transpose2d_backward_weight(g(dy), g(x), w_shape, cfg)?),
    })
}

pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(match placement("matmul", &[a, b])? {
        None => linear::matmul(a, b),
        Some(gpu) => on(&gpu, gpu.matmul(g(a), g(b))?),
    })
}

pub fn matmul_backward(a: &Tensor, b: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match placement("matmul_backward", &[a, b, dy])? {
        None => linear::matmul_backward(a, b, dy),
        Some(gpu) => {
            let (da, db) = gpu.matmul_backward(g(a), g(b), g(dy))?;
            (on(&gpu, da), on(&gpu, db))
        }
    })
}

pub fn linear_forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("linear_forward", &all)? {
        None => linear::linear_forward(x, w, b),
        Some(gpu) => on(&gpu, gpu.linear_forward(g(x), g(w), b.map(g))?),
    })
}

/// linear_forward(x, w + ε_w, b + ε_b): the kernel adds the noise as it reads the weights.
pub fn linear_forward_noisy(x: &Tensor, w: &Tensor, b: Option<&Tensor>, n: LayerNoise) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(x), Some(w), b].into_iter().flatten().collect();
    Ok(match placement("linear_forward_noisy", &all)? {
        None => {
            let (w, b) = perturbed_layer(w, b, n)?;
            linear::linear_forward(x, &w, b.as_ref())
        }
        Some(gpu) => on(&gpu, gpu.linear_forward_noisy(g(x), g(w), b.map(g), n.key, n.b, n.w_offset, n.b_offset)?),
    })
}

/// (dx, dw, db) of linear_forward.
pub fn linear_backward(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    Ok(match placement("linear_backward", &[x, w, dy])? {
        None => linear::linear_backward(x, w, dy),
        Some(gpu) => {
            let (dx, dw, db) = gpu.linear_backward(g(x), g(w), g(dy))?;
            (on(&gpu, dx), on(&gpu, dw), on(&gpu, db))
        }
    })
}

pub fn bmm(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool) -> Result<Tensor> {
    Ok(match placement("bmm", &[a, b])? {
        None => attn::bmm(a, trans_a, b, trans_b),
        Some(gpu) => on(&gpu, gpu.bmm(g(a), trans_a, g(b), trans_b)?),
    })
}

pub fn bmm_backward(a: &Tensor, trans_a: bool, b: &Tensor, trans_b: bool, dy: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match placement("bmm_backward", &[a, b, dy])? {
        None => attn::bmm_backward(a, trans_a, b, trans_b, dy),
        Some(gpu) => {
            let (da, db) = gpu.bmm_backward(g(a), trans_a, g(b), trans_b, g(dy))?;
            (on(&gpu, da), on(&gpu, db))
        }
    })
}

pub fn softmax_lastdim_forward(x: &Tensor) -> Result<Tensor> {
    Ok(match placement("softmax_lastdim_forward", &[x])? {
        None => attn::softmax_lastdim_forward(x),
        Some(gpu) => on(&gpu, gpu.softmax_lastdim_forward(g(x))?),
    })
}

pub fn softmax_lastdim_backward(dy: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(match placement("softmax_lastdim_backward", &[dy, y])? {
        None => attn::softmax_lastdim_backward(dy, y),
        Some(gpu) => on(&gpu, gpu.softmax_lastdim_backward(g(dy), g(y))?),
    })
}

pub fn sigmoid_gate_forward(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    Ok(match placement("sigmoid_gate_forward", &[x, gate])? {
        None => attn::sigmoid_gate_forward(x, gate),
        Some(gpu) => on(&gpu, gpu.sigmoid_gate_forward(g(x), g(gate))?),
    })
}

pub fn sigmoid_gate_backward(dy: &Tensor, x: &Tensor, gate: &Tensor) -> Result<(Tensor, Tensor)> {
    Ok(match placement("sigmoid_gate_backward", &[dy, x, gate])? {
        None => attn::sigmoid_gate_backward(dy, x, gate),
        Some(gpu) => {
            let (dx, dg) = gpu.sigmoid_gate_backward(g(dy), g(x), g(gate))?;
            (on(&gpu, dx), on(&gpu, dg))
        }
    })
}

pub fn max_pool2d_forward(x: &Tensor, k: usize, stride: usize) -> Result<(Tensor, PoolArgmax)> {
    Ok(match placement("max_pool2d_forward", &[x])? {
        None => {
            let (y, a) = pool::max_pool2d_forward(x, k, stride);
            (y, PoolArgmax::Cpu(a))
        }
        Some(gpu) => {
            let (y, a) = gpu.max_pool2d_forward(g(x), k, stride)?;
            (on(&gpu, y), PoolArgmax::Cuda(a))
        }
    })
}

pub fn max_pool2d_backward(dy: &Tensor, argmax: &PoolArgmax, x_shape: &[usize]) -> Result<Tensor> {
    Ok(match (placement("max_pool2d_backward", &[dy])?, argmax) {
        (None, PoolArgmax::Cpu(a)) => pool::max_pool2d_backward(dy, a, x_shape),
        (Some(gpu), PoolArgmax::Cuda(a)) => on(&gpu, gpu.max_pool2d_backward(g(dy), a, x_shape)?),
        _ => Err(DeviceMismatch { op: "max_pool2d_backward", devices: "dy and argmax".into() })?,
    })
}

pub fn avg_pool2d_forward(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    Ok(match placement("avg_pool2d_forward", &[x])? {
        None => pool::avg_pool2d_forward(x, k, stride),
        Some(gpu) => on(&gpu, gpu.avg_pool2d_forward(g(x), k, stride)?),
    })
}

pub fn avg_pool2d_backward(dy: &Tensor, x_shape: &[usize], k: usize, stride: usize) -> Result<Tensor> {
    Ok(match placement("avg_pool2d_backward", &[dy])? {
        None => pool::avg_pool2d_backward(dy, x_shape, k, stride),
        Some(gpu) => on(&gpu, gpu.avg_pool2d_backward(g(dy), x_shape, k, stride)?),
    })
}

pub fn global_avg_pool_forward(x: &Tensor) -> Result<Tensor> {
    Ok(match placement("global_avg_pool_forward", &[x])? {
        None => pool::global_avg_pool_forward(x),
        Some(gpu) => on(&gpu, gpu.global_avg_pool_forward(g(x))?),
    })
}

pub fn global_avg_pool_backward(dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    Ok(match placement("global_avg_pool_backward", &[dy])? {
        None => pool::global_avg_pool_backward(dy, x_shape),
        Some(gpu) => on(&gpu, gpu.global_avg_pool_backward(g(dy), x_shape)?),
    })
}

pub fn upsample_nearest_forward(x: &Tensor, scale: usize) -> Result<Tensor> {
    Ok(match placement("upsample_nearest_forward", &[x])? {
        None => upsample::upsample_nearest_forward(x, scale),
        Some(gpu) => on(&gpu, gpu.upsample_nearest_forward(g(x), scale)?),
    })
}

pub fn upsample_nearest_backward(dy: &Tensor, scale: usize) -> Result<Tensor> {
    Ok(match placement("upsample_nearest_backward", &[dy])? {
        None => upsample::upsample_nearest_backward(dy, scale),
        Some(gpu) => on(&gpu, gpu.upsample_nearest_backward(g(dy), scale)?),
    })
}

pub fn upsample_bilinear_forward(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    Ok(match placement("upsample_bilinear_forward", &[x])? {
        None => upsample::upsample_bilinear_forward(x, out_h, out_w),
        Some(gpu) => on(&gpu, gpu.upsample_bilinear_forward(g(x), out_h, out_w)?),
    })
}

pub fn upsample_bilinear_backward(dy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
    Ok(match placement("upsample_bilinear_backward", &[dy])? {
        None => upsample::upsample_bilinear_backward(dy, x_shape),
        Some(gpu) => on(&gpu, gpu.upsample_bilinear_backward(g(dy), x_shape)?),
    })
}

pub fn batch_norm_train_forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> Result<(Tensor, BnStats)> {
    Ok(match placement("batch_norm_train_forward", &[x, gamma, beta])? {
        None => {
            let (y, s) = norm::batch_norm_train_forward(x, gamma, beta, eps);
            (y, BnStats::Cpu(s))
        }
        Some(gpu) => {
            let (y, s) = gpu.batch_norm_train_forward(g(x), g(gamma), g(beta), eps)?;
            (on(&gpu, y), BnStats::Cuda(Arc::new(s)))
        }
    })
}

/// (dx, dgamma, dbeta) of the train-mode batch norm.
pub fn batch_norm_train_backward(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    stats: &BnStats,
) -> Result<(Tensor, Tensor, Tensor)> {
    Ok(match (placement("batch_norm_train_backward", &[dy, x, gamma])?, stats) {
        (None, BnStats::Cpu(s)) => norm::batch_norm_train_backward(dy, x, gamma, s),
        (Some(gpu), BnStats::Cuda(s)) => {
            let r = gpu.batch_norm_train_backward(g(dy), g(x), g(gamma), s)?;
            (on(&gpu, r.dx), on(&gpu, r.dgamma), on(&gpu, r.dbeta))
        }
        _ => Err(DeviceMismatch { op: "batch_norm_train_backward", devices: "tensors and statistics".into() })?,
    })
}

pub fn batch_norm_eval_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    Ok(match placement("batch_norm_eval_forward", &[x, gamma, beta, mean, var])? {
        None => norm::batch_norm_eval_forward(x, gamma, beta, mean, var, eps),
        Some(gpu) => on(&gpu, gpu.batch_norm_eval_forward(g(x), g(gamma), g(beta), g(mean), g(var), eps)?),
    })
}

pub fn batch_norm_eval_backward(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    Ok(match placement("batch_norm_eval_backward", &[dy, x, gamma, mean, var])? {
        None => norm::batch_norm_eval_backward(dy, x, gamma, mean, var, eps),
        Some(gpu) => {
            let r = gpu.batch_norm_eval_backward(g(dy), g(x), g(gamma), g(mean), g(var), eps)?;
            (on(&gpu, r.dx), on(&gpu, r.dgamma), on(&gpu, r.dbeta))
        }
    })
}

pub fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    Ok(match placement("concat_channels", xs)? {
        None => concat::concat_channels(xs),
        Some(gpu) => {
            let parts: Vec<&GpuTensor> = xs.iter().map(|t| g(t)).collect();
            on(&gpu, gpu.concat_channels(&parts)?)
        }
    })
}

pub fn split_channels(dy: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
    Ok(match placement("split_channels", &[dy])? {
        None => concat::split_channels(dy, sizes),
        Some(gpu) => gpu.split_channels(g(dy), sizes)?.into_iter().map(|t| on(&gpu, t)).collect(),
    })
}

/// The scaled keep mask of inverted dropout on `like`'s device.
pub fn dropout_mask(like: &Tensor, p: f32, key: NoiseKey) -> Result<Tensor> {
    Ok(match placement("dropout_mask", &[like])? {
        None => dropout::dropout_mask(like.shape(), p, key),
        Some(gpu) => on(&gpu, gpu.dropout_mask(like.shape(), p, key)?),
    })
}

pub fn dropout_forward(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(match placement("dropout_forward", &[x, mask])? {
        None => dropout::dropout_forward(x, mask),
        Some(gpu) => on(&gpu, gpu.dropout_forward(g(x), g(mask))?),
    })
}

pub fn dropout_backward(dy: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(match placement("dropout_backward", &[dy, mask])? {
        None => dropout::dropout_backward(dy, mask),
        Some(gpu) => on(&gpu, gpu.dropout_backward(g(dy), g(mask))?),
    })
}

/// (loss as a scalar tensor on the logits' device, softmax probabilities).
pub fn softmax_cross_entropy_forward(
    logits: &Tensor,
    targets: &Labels,
    weights: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let all: Vec<&Tensor> = [Some(logits), weights].into_iter().flatten().collect();
    Ok(match (placement("softmax_cross_entropy_forward", &all)?, targets) {
        (None, Labels::Cpu(t)) => {
            let (l, probs) = loss::softmax_cross_entropy_forward(logits, t, weights.map(|w| w.data()));
            (Tensor::scalar(l), probs)
        }
        (Some(gpu), Labels::Cuda(t)) => {
            let (l, probs) = gpu.softmax_cross_entropy_forward(g(logits), t, weights.map(g))?;
            (on(&gpu, l), on(&gpu, probs))
        }
        _ => Err(DeviceMismatch { op: "softmax_cross_entropy_forward", devices: "logits and labels".into() })?,
    })
}

/// dlogits of the cross-entropy; `dloss` is the loss's gradient (a host value).
pub fn softmax_cross_entropy_backward(
    probs: &Tensor,
    targets: &Labels,
    weights: Option<&Tensor>,
    dloss: f32,
) -> Result<Tensor> {
    let all: Vec<&Tensor> = [Some(probs), weights].into_iter().flatten().collect();
    Ok(match (placement("softmax_cross_entropy_backward", &all)?, targets) {
        (None, Labels::Cpu(t)) => loss::softmax_cross_entropy_backward(probs, t, weights.map(|w| w.data()), dloss),
        (Some(gpu), Labels::Cuda(t)) => {
            on(&gpu, gpu.softmax_cross_entropy_backward(g(probs), t, weights.map(g), dloss)?)
        }
        _ => Err(DeviceMismatch { op: "softmax_cross_entropy_backward", devices: "probs and labels".into() })?,
    })
}

/// (1 − mean soft Dice as a scalar tensor on the logits' device, probabilities).
pub fn soft_dice_forward(logits: &Tensor, target: &Tensor, mode: DiceMode, eps: f32) -> Result<(Tensor, Tensor)> {
    Ok(match placement("soft_dice_forward", &[logits, target])? {
        None => {
            let (l, probs) = loss::soft_dice_forward(logits, target, mode, eps);
            (Tensor::scalar(l), probs)
        }
        Some(gpu) => {
            let (l, probs) = gpu.soft_dice_forward(g(logits), g(target), mode, eps)?;
            (on(&gpu, l), on(&gpu, probs))
        }
    })
}

pub fn soft_dice_backward(
    logits: &Tensor,
    probs: &Tensor,
    target: &Tensor,
    mode: DiceMode,
    eps: f32,
    dloss: f32,
) -> Result<Tensor> {
    Ok(match placement("soft_dice_backward", &[logits, probs, target])? {
        None => loss::soft_dice_backward(logits, probs, target, mode, eps, dloss),
        Some(gpu) => on(&gpu, gpu.soft_dice_backward(g(logits), g(probs), g(target), mode, eps, dloss)?),
    })
}

/// Items of `logits` whose arg-max over dim 1 is their label, as a scalar on the logits' device.
pub fn count_correct(logits: &Tensor, labels: &Labels) -> Result<Tensor> {
    Ok(match (placement("count_correct", &[logits])?, labels) {
        (None, Labels::Cpu(l)) => Tensor::scalar(loss::count_correct(logits, l) as f32),
        (Some(gpu), Labels::Cuda(l)) => on(&gpu, gpu.count_correct(g(logits), l)?),
        _ => Err(DeviceMismatch { op: "count_correct", devices: "logits and labels".into() })?,
    })
}

/// One-hot targets [N, C, H, W] of per-pixel labels, built on the host and placed on `backend`.
pub fn one_hot(labels: &[u32], classes: usize, shape_nhw: &[usize], backend: &Backend) -> Result<Tensor> {
    loss::one_hot(labels, classes, shape_nhw).to_backend(backend)
}

/// Whether every value is finite: one reduction on the GPU (NaN and ±Inf survive a sum), then one
/// scalar download; a host scan on the CPU.
pub fn all_finite(ts: &[&Tensor]) -> Result<bool> {
    let Some(gpu) = placement("all_finite", ts)? else {
        return Ok(ts.iter().all(|t| t.all_finite()));
    };
    let mut acc: Option<GpuTensor> = None;
    for t in ts.iter().filter(|t| t.numel() > 0) {
        // |x| would be safer against cancellation of +Inf and −Inf, but inf − inf is NaN: still caught.
        let s = gpu.sum_all(g(t))?;
        acc = Some(match acc {
            None => s,
            Some(a) => gpu.add(&a, &s)?,
        });
    }
    match acc {
        None => Ok(true),
        Some(a) => Ok(gpu.download(&a)?.data()[0].is_finite()),
    }
}
