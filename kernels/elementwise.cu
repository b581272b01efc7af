// Elementwise and broadcast ops; CPU references: src/backend/cpu/elementwise.rs (same names).
// Launch any grid/block shape (grid-stride loops); add_channel_bias_backward needs blockDim.x to be a
// multiple of 32 and at most 1024.
#include "common.cuh"

extern "C" __global__ void add(float* __restrict__ y, const float* __restrict__ a,
                               const float* __restrict__ b, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = a[i] + b[i]; }
}

extern "C" __global__ void sub(float* __restrict__ y, const float* __restrict__ a,
                               const float* __restrict__ b, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = a[i] - b[i]; }
}

extern "C" __global__ void mul(float* __restrict__ y, const float* __restrict__ a,
                               const float* __restrict__ b, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = a[i] * b[i]; }
}

extern "C" __global__ void scale(float* __restrict__ y, const float* __restrict__ x, float s,
                                 mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = x[i] * s; }
}

extern "C" __global__ void relu(float* __restrict__ y, const float* __restrict__ x, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = fmaxf(x[i], 0.0f); }
}

// dx = dy where x > 0, else 0.
extern "C" __global__ void relu_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                         const float* __restrict__ x, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { dx[i] = x[i] > 0.0f ? dy[i] : 0.0f; }
}

// The numerically safe logistic function of the CPU reference (expf, not the fast __expf).
__device__ __forceinline__ float mtc_sigmoid(float v) {
    if (v >= 0.0f) {
        return 1.0f / (1.0f + expf(-v));
    }
    const float e = expf(v);
    return e / (1.0f + e);
}

extern "C" __global__ void sigmoid(float* __restrict__ y, const float* __restrict__ x, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = mtc_sigmoid(x[i]); }
}

// dx = dy * y * (1 - y), from the forward output y.
extern "C" __global__ void sigmoid_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                            const float* __restrict__ y, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) {
        const float s = y[i];
        dx[i] = __fmul_rn(__fmul_rn(dy[i], s), __fsub_rn(1.0f, s));
    }
}

// y[n, c, ...] = x[n, c, ...] + bias[c] over an [N, C, inner] tensor of n = N * C * inner elements.
extern "C" __global__ void add_channel_bias(float* __restrict__ y, const float* __restrict__ x,
                                            const float* __restrict__ bias, mtc_u64 n,
                                            mtc_u64 channels, mtc_u64 inner) {
    MTC_GRID_STRIDE(i, n) { y[i] = x[i] + bias[(i / inner) % channels]; }
}

// db[c] = sum over n and inner of dy[n, c, inner]: one block per channel (grid-stride over channels),
// accumulated in double like the CPU reference, warp shuffles then one value per warp in shared memory.
extern "C" __global__ void add_channel_bias_backward(float* __restrict__ db,
                                                     const float* __restrict__ dy, mtc_u64 batch,
                                                     mtc_u64 channels, mtc_u64 inner) {
    __shared__ double warp_sums[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned warps = (blockDim.x + 31u) >> 5;
    const mtc_u64 per_channel = batch * inner;
    for (mtc_u64 c = blockIdx.x; c < channels; c += gridDim.x) {
        double acc = 0.0;
        for (mtc_u64 j = threadIdx.x; j < per_channel; j += blockDim.x) {
            const mtc_u64 nn = j / inner, s = j - nn * inner;
            acc += (double)dy[(nn * channels + c) * inner + s];
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
        if (lane == 0) warp_sums[warp] = acc;
        __syncthreads();
        if (warp == 0) {
            acc = lane < warps ? warp_sums[lane] : 0.0;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
            if (lane == 0) db[c] = (float)acc;
        }
        __syncthreads();  // warp_sums is reused by the next channel
    }
}
