// Optimiser steps over flat buffers, each with the optional b-box projection in the same pass.
// CPU references: src/optim.rs (sgd_update, adam_update, project_scalar). Every float operation is an
// IEEE round-to-nearest intrinsic in the CPU code's order, so the results are bit-identical.
// When project == 0, snapshot is not read (may be null) and b is ignored. When hyper is not null, the
// step-dependent scalars are read from it instead of the arguments ([lr, bc1, bc2]): a CUDA graph
// replays one captured launch for every step, and the host writes them there before each replay.
#include "common.cuh"

// project_scalar: theta.max(snap - b).min(snap + b) (fmaxf/fminf treat NaN like Rust's max/min).
__device__ __forceinline__ float mtc_project(float t, float snap, float b) {
    return fminf(fmaxf(t, __fsub_rn(snap, b)), __fadd_rn(snap, b));
}

// g = grad + wd * theta; v = momentum * v + g; theta = theta - lr * v; then the optional clamp.
extern "C" __global__ void sgd_step(float* __restrict__ theta, float* __restrict__ velocity,
                                    const float* __restrict__ grad,
                                    const float* __restrict__ snapshot, mtc_u64 n, float lr,
                                    float momentum, float weight_decay, float b, int project,
                                    const float* __restrict__ hyper) {
    if (hyper) lr = hyper[0];
    MTC_GRID_STRIDE(i, n) {
        const float th = theta[i];
        const float g = __fadd_rn(grad[i], __fmul_rn(weight_decay, th));
        const float v = __fadd_rn(__fmul_rn(momentum, velocity[i]), g);
        velocity[i] = v;
        const float t = __fsub_rn(th, __fmul_rn(lr, v));
        theta[i] = project ? mtc_project(t, snapshot[i], b) : t;
    }
}

// PyTorch Adam with L2 weight decay; bc1 = 1 - beta1^t, bc2 = 1 - beta2^t come from the host.
// g = grad + wd * theta; m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g;
// theta = theta - lr * (m / bc1) / (sqrt(v / bc2) + eps); then the optional clamp.
extern "C" __global__ void adam_step(float* __restrict__ theta, float* __restrict__ m,
                                     float* __restrict__ v, const float* __restrict__ grad,
                                     const float* __restrict__ snapshot, mtc_u64 n, float lr,
                                     float beta1, float beta2, float eps, float weight_decay,
                                     float bc1, float bc2, float b, int project,
                                     const float* __restrict__ hyper) {
    if (hyper) {
        lr = hyper[0];
        bc1 = hyper[1];
        bc2 = hyper[2];
    }
    const float one_minus_b1 = __fsub_rn(1.0f, beta1);
    const float one_minus_b2 = __fsub_rn(1.0f, beta2);
    MTC_GRID_STRIDE(i, n) {
        const float th = theta[i];
        const float g = __fadd_rn(grad[i], __fmul_rn(weight_decay, th));
        const float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(one_minus_b1, g));
        const float vi =
            __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(one_minus_b2, g), g));
        m[i] = mi;
        v[i] = vi;
        const float step = __fdiv_rn(__fmul_rn(lr, __fdiv_rn(mi, bc1)),
                                     __fadd_rn(__fsqrt_rn(__fdiv_rn(vi, bc2)), eps));
        const float t = __fsub_rn(th, step);
        theta[i] = project ? mtc_project(t, snapshot[i], b) : t;
    }
}
