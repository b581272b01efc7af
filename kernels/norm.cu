// Batch normalisation over dim 1 of an [n, c, inner] tensor; CPU reference: src/backend/cpu/norm.rs
// (same names). M = n * inner values per channel.
//
// The train-mode kernels and batch_norm_eval_backward run one block per channel (grid-stride over
// channels) and reduce with mtc_block_sum (reduce.cuh): double accumulation over a fixed
// thread/element assignment and a fixed combining tree, so the statistics and parameter gradients are
// identical from run to run. blockDim.x must be a multiple of 32 and at most 1024. Like the CPU code,
// the outputs use the f32-rounded statistics (mean, invstd) promoted back to double.
#include "common.cuh"
#include "reduce.cuh"

// Two-pass statistics (mean, then the biased variance sum((x - mean)^2) / M), then
// y = gamma * (x - mean) * invstd + beta, invstd = 1 / sqrt(var + eps).
extern "C" __global__ void batch_norm_train_forward(float* __restrict__ y, float* __restrict__ mean,
                                                    float* __restrict__ var,
                                                    float* __restrict__ invstd,
                                                    const float* __restrict__ x,
                                                    const float* __restrict__ gamma,
                                                    const float* __restrict__ beta, mtc_u64 n,
                                                    mtc_u64 c, mtc_u64 inner, float eps) {
    __shared__ double scratch[32];
    const double m = (double)(n * inner);
    for (mtc_u64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        double sum = 0.0;
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) sum += (double)x[w.at(c, inner, ch)];
        const double mu = mtc_block_sum1(sum, scratch) / m;
        double sq = 0.0;
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) {
            const double d = (double)x[w.at(c, inner, ch)] - mu;
            sq = __fma_rn(d, d, sq);
        }
        const double v = mtc_block_sum1(sq, scratch) / m;
        const float mu_f = (float)mu, is_f = (float)(1.0 / sqrt(v + (double)eps));
        if (threadIdx.x == 0) {
            mean[ch] = mu_f;
            var[ch] = (float)v;
            invstd[ch] = is_f;
        }
        const double g = (double)gamma[ch], be = (double)beta[ch];
        const double mu_d = (double)mu_f, is_d = (double)is_f;
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) {
            const mtc_u64 i = w.at(c, inner, ch);
            y[i] = (float)(g * ((double)x[i] - mu_d) * is_d + be);
        }
    }
}

// dbeta = sum(dy), dgamma = sum(dy * xhat), xhat = (x - mean) * invstd;
// dx = gamma * invstd / M * (M * dy - dbeta - xhat * dgamma) (the sums in double, before rounding).
extern "C" __global__ void batch_norm_train_backward(float* __restrict__ dx, float* __restrict__ dgamma,
                                                     float* __restrict__ dbeta,
                                                     const float* __restrict__ dy,
                                                     const float* __restrict__ x,
                                                     const float* __restrict__ gamma,
                                                     const float* __restrict__ mean,
                                                     const float* __restrict__ invstd, mtc_u64 n,
                                                     mtc_u64 c, mtc_u64 inner) {
    __shared__ double scratch[64];
    const double m = (double)(n * inner);
    for (mtc_u64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        const double mu = (double)mean[ch], is = (double)invstd[ch];
        double sums[2] = {0.0, 0.0};  // sum dy, sum dy * xhat
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) {
            const mtc_u64 i = w.at(c, inner, ch);
            const double g = (double)dy[i];
            sums[0] += g;
            sums[1] += g * ((double)x[i] - mu) * is;
        }
        mtc_block_sum<2>(sums, scratch);
        if (threadIdx.x == 0) {
            dbeta[ch] = (float)sums[0];
            dgamma[ch] = (float)sums[1];
        }
        const double k = (double)gamma[ch] * is / m;
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) {
            const mtc_u64 i = w.at(c, inner, ch);
            const double xhat = ((double)x[i] - mu) * is;
            dx[i] = (float)(k * (m * (double)dy[i] - sums[0] - xhat * sums[1]));
        }
    }
}

// invstd of a running variance, rounded to f32 like the CPU's running_invstd.
__device__ __forceinline__ float mtc_running_invstd(float running_var, float eps) {
    return (float)(1.0 / sqrt((double)running_var + (double)eps));
}

// Eval mode, elementwise over all n*c*inner elements: y = gamma * (x - running_mean) * invstd + beta.
extern "C" __global__ void batch_norm_eval_forward(float* __restrict__ y, const float* __restrict__ x,
                                                   const float* __restrict__ gamma,
                                                   const float* __restrict__ beta,
                                                   const float* __restrict__ running_mean,
                                                   const float* __restrict__ running_var,
                                                   mtc_u64 total, mtc_u64 c, mtc_u64 inner, float eps) {
    MTC_GRID_STRIDE(i, total) {
        const mtc_u64 ch = (i / inner) % c;
        const double is = (double)mtc_running_invstd(running_var[ch], eps);
        const double mu = (double)running_mean[ch];
        y[i] = (float)((double)gamma[ch] * ((double)x[i] - mu) * is + (double)beta[ch]);
    }
}

// Eval-mode backward (statistics constant): dx = dy * gamma * invstd, dgamma = sum(dy * xhat),
// dbeta = sum(dy), one block per channel, dx written in the same pass as the sums.
extern "C" __global__ void batch_norm_eval_backward(float* __restrict__ dx, float* __restrict__ dgamma,
                                                    float* __restrict__ dbeta,
                                                    const float* __restrict__ dy,
                                                    const float* __restrict__ x,
                                                    const float* __restrict__ gamma,
                                                    const float* __restrict__ running_mean,
                                                    const float* __restrict__ running_var, mtc_u64 n,
                                                    mtc_u64 c, mtc_u64 inner, float eps) {
    __shared__ double scratch[64];
    for (mtc_u64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        const double mu = (double)running_mean[ch];
        const double is = (double)mtc_running_invstd(running_var[ch], eps);
        const double k = (double)gamma[ch] * is;
        double sums[2] = {0.0, 0.0};  // sum dy, sum dy * xhat
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) {
            const mtc_u64 i = w.at(c, inner, ch);
            const double g = (double)dy[i];
            sums[0] += g;
            sums[1] += g * ((double)x[i] - mu) * is;
            dx[i] = (float)(g * k);
        }
        mtc_block_sum<2>(sums, scratch);
        if (threadIdx.x == 0) {
            dbeta[ch] = (float)sums[0];
            dgamma[ch] = (float)sums[1];
        }
    }
}

// PyTorch's running-statistics update, elementwise over c channels:
// running = (1 - momentum) * running + momentum * batch, the batch variance made unbiased with
// count / (count - 1). Written with unfused double operations in the CPU's order (bit-identical).
extern "C" __global__ void update_running_stats(float* __restrict__ running_mean,
                                                float* __restrict__ running_var,
                                                const float* __restrict__ mean,
                                                const float* __restrict__ var, mtc_u64 c,
                                                mtc_u64 count, float momentum) {
    const double m = (double)momentum;
    const double keep = __dsub_rn(1.0, m);
    const double correction = __ddiv_rn((double)count, (double)(count - 1));
    MTC_GRID_STRIDE(i, c) {
        running_mean[i] =
            (float)__dadd_rn(__dmul_rn(keep, (double)running_mean[i]), __dmul_rn(m, (double)mean[i]));
        running_var[i] = (float)__dadd_rn(__dmul_rn(keep, (double)running_var[i]),
                                          __dmul_rn(__dmul_rn(m, (double)var[i]), correction));
    }
}
