//! Batch normalisation over dim 1 (train forward/backward, eval forward/backward, running-stat update).
//! Kernels: `kernels/norm.cu` (same names).
//!
//! Input is [N, C] or [N, C, H, W] (any [N, C, ...]); the statistics of channel c are taken over N and
//! all spatial positions, M = N·H·W values. Like PyTorch, normalising uses the biased variance
//! (divide by M) and the running variance is updated with the unbiased one (divide by M − 1).
//!
//!   x̂ = (x − mean_c) · invstd_c,  invstd_c = 1 / sqrt(var_c + eps),  y = gamma_c · x̂ + beta_c

use super::elementwise::channel_dims;
use crate::Tensor;

/// Per-channel batch statistics saved by the train-mode forward for the backward.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormStats {
    pub mean: Vec<f32>,
    /// Biased variance (divided by M).
    pub var: Vec<f32>,
    /// 1 / sqrt(var + eps).
    pub invstd: Vec<f32>,
}

fn check_param(name: &str, p: &Tensor, c: usize) {
    assert_eq!(p.shape(), [c], "batch norm {name} shape {:?} for {c} channels", p.shape());
}

/// Train mode: normalise with the batch's own statistics and return them.
pub fn batch_norm_train_forward(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> (Tensor, BatchNormStats) {
    let (n, c, inner) = channel_dims(x);
    check_param("gamma", gamma, c);
    check_param("beta", beta, c);
    let m = n * inner;
    assert!(m > 0, "batch norm over an empty batch, shape {:?}", x.shape());
    let xd = x.data();

    let mut mean = vec![0f32; c];
    let mut var = vec![0f32; c];
    let mut invstd = vec![0f32; c];
    for ch in 0..c {
        let mut sum = 0f64;
        for b in 0..n {
            let start = (b * c + ch) * inner;
            sum += xd[start..start + inner].iter().map(|&v| v as f64).sum::<f64>();
        }
        let mu = sum / m as f64;
        // Two-pass variance: Σ (x − mean)² / M.
        let mut sq = 0f64;
        for b in 0..n {
            let start = (b * c + ch) * inner;
            sq += xd[start..start + inner].iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>();
        }
        let v = sq / m as f64;
        mean[ch] = mu as f32;
        var[ch] = v as f32;
        invstd[ch] = (1.0 / (v + eps as f64).sqrt()) as f32;
    }

    let y = normalise(x, gamma, beta, &mean, &invstd);
    (y, BatchNormStats { mean, var, invstd })
}

/// y = gamma_c · (x − mean_c) · invstd_c + beta_c.
fn normalise(x: &Tensor, gamma: &Tensor, beta: &Tensor, mean: &[f32], invstd: &[f32]) -> Tensor {
    let (n, c, inner) = channel_dims(x);
    let (xd, gd, bd) = (x.data(), gamma.data(), beta.data());
    let mut y = vec![0f32; x.numel()];
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            let (mu, is, g, be) = (mean[ch] as f64, invstd[ch] as f64, gd[ch] as f64, bd[ch] as f64);
            for i in start..start + inner {
                y[i] = (g * (xd[i] as f64 - mu) * is + be) as f32;
            }
        }
    }
    Tensor::from_parts(x.shape().to_vec(), y)
}

/// Per channel: (Σ dy, Σ dy · x̂) over N and spatial positions, with x̂ = (x − mean) · invstd.
fn channel_grad_sums(dy: &Tensor, x: &Tensor, mean: &[f32], invstd: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let (n, c, inner) = channel_dims(x);
    let (dyd, xd) = (dy.data(), x.data());
    let mut sum_dy = vec![0f64; c];
    let mut sum_dy_xhat = vec![0f64; c];
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            let (mu, is) = (mean[ch] as f64, invstd[ch] as f64);
            for i in start..start + inner {
                let g = dyd[i] as f64;
                sum_dy[ch] += g;
                sum_dy_xhat[ch] += g * (xd[i] as f64 - mu) * is;
            }
        }
    }
    (sum_dy, sum_dy_xhat)
}

fn to_f32_tensor(v: Vec<f64>) -> Tensor {
    Tensor::from_parts(vec![v.len()], v.into_iter().map(|x| x as f32).collect())
}

/// Train-mode backward, the statistics depending on x:
///   dbeta_c = Σ dy,  dgamma_c = Σ dy · x̂,
///   dx = gamma_c · invstd_c / M · (M · dy − dbeta_c − x̂ · dgamma_c).
pub fn batch_norm_train_backward(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    stats: &BatchNormStats,
) -> (Tensor, Tensor, Tensor) {
    assert_eq!(dy.shape(), x.shape(), "batch norm backward: dy shape {:?} vs x shape {:?}", dy.shape(), x.shape());
    let (n, c, inner) = channel_dims(x);
    check_param("gamma", gamma, c);
    assert!(
        stats.mean.len() == c && stats.var.len() == c && stats.invstd.len() == c,
        "batch norm stats are for a different channel count than {c}"
    );
    let m = (n * inner) as f64;
    let (sum_dy, sum_dy_xhat) = channel_grad_sums(dy, x, &stats.mean, &stats.invstd);

    let (dyd, xd, gd) = (dy.data(), x.data(), gamma.data());
    let mut dx = vec![0f32; x.numel()];
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            let (mu, is) = (stats.mean[ch] as f64, stats.invstd[ch] as f64);
            let k = gd[ch] as f64 * is / m;
            for i in start..start + inner {
                let xhat = (xd[i] as f64 - mu) * is;
                dx[i] = (k * (m * dyd[i] as f64 - sum_dy[ch] - xhat * sum_dy_xhat[ch])) as f32;
            }
        }
    }
    (Tensor::from_parts(x.shape().to_vec(), dx), to_f32_tensor(sum_dy_xhat), to_f32_tensor(sum_dy))
}

/// invstd_c = 1 / sqrt(running_var_c + eps), checked against the channel count.
fn running_invstd(running_mean: &Tensor, running_var: &Tensor, c: usize, eps: f32) -> Vec<f32> {
    check_param("running_mean", running_mean, c);
    check_param("running_var", running_var, c);
    running_var.data().iter().map(|&v| (1.0 / (v as f64 + eps as f64).sqrt()) as f32).collect()
}

/// Eval mode: normalise with the running statistics (constants).
pub fn batch_norm_eval_forward(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> Tensor {
    let (_, c, _) = channel_dims(x);
    check_param("gamma", gamma, c);
    check_param("beta", beta, c);
    let invstd = running_invstd(running_mean, running_var, c, eps);
    normalise(x, gamma, beta, running_mean.data(), &invstd)
}

/// Eval-mode backward (statistics constant): dx = dy · gamma_c · invstd_c, dgamma_c = Σ dy · x̂,
/// dbeta_c = Σ dy.
pub fn batch_norm_eval_backward(
    dy: &Tensor,
    x: &Tensor,
    gamma: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f32,
) -> (Tensor, Tensor, Tensor) {
    assert_eq!(dy.shape(), x.shape(), "batch norm backward: dy shape {:?} vs x shape {:?}", dy.shape(), x.shape());
    let (n, c, inner) = channel_dims(x);
    check_param("gamma", gamma, c);
    let invstd = running_invstd(running_mean, running_var, c, eps);
    let (sum_dy, sum_dy_xhat) = channel_grad_sums(dy, x, running_mean.data(), &invstd);

    let (dyd, gd) = (dy.data(), gamma.data());
    let mut dx = vec![0f32; x.numel()];
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            let k = gd[ch] as f64 * invstd[ch] as f64;
            for i in start..start + inner {
                dx[i] = (dyd[i] as f64 * k) as f32;
            }
        }
    }
    (Tensor::from_parts(x.shape().to_vec(), dx), to_f32_tensor(sum_dy_xhat), to_f32_tensor(sum_dy))
}

/// PyTorch's update: running = (1 − momentum) · running + momentum · batch, where the batch variance
/// is the unbiased one, var · count / (count − 1). `count` is M = N·H·W and must be at least 2.
pub fn update_running_stats(
    running_mean: &mut Tensor,
    running_var: &mut Tensor,
    stats: &BatchNormStats,
    count: usize,
    momentum: f32,
) {
    let c = stats.mean.len();
    check_param("running_mean", running_mean, c);
    check_param("running_var", running_var, c);
    assert_eq!(stats.var.len(), c, "batch norm stats: mean and var lengths differ");
    assert!(count > 1, "batch norm needs more than one value per channel to update running stats, got {count}");
    let m = momentum as f64;
    let correction = count as f64 / (count - 1) as f64;
    for (r, &b) in running_mean.data_mut().iter_mut().zip(&stats.mean) {
        *r = ((1.0 - m) * *r as f64 + m * b as f64) as f32;
    }
    for (r, &v) in running_var.data_mut().iter_mut().zip(&stats.var) {
        *r = ((1.0 - m) * *r as f64 + m * v as f64 * correction) as f32;
    }
}
