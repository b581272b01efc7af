// The attention ops; CPU references: src/backend/cpu/attention.rs (same names).
//
// bmm_XY: per batch item z = blockIdx.z, C[z] = op(A[z]) . op(B[z]), row-major, X, Y = n (as stored)
// or t (transposed): op(A) m x k, op(B) k x n, C[z] m x n at c + z * m * n; A[z] starts at
// a + z * stride_a (stride_a = m * k for a dense batch), likewise B. lda/ldb are stored row strides.
// Launch: blockDim 256, grid (ceil(n / 64), ceil(m / 64), batch). Same tiles and summation order as
// sgemm_XY (kernels/sgemm.cuh), so deterministic.
//
// softmax_lastdim_*: one warp per row of the last axis (rows = numel / cols), blockDim a multiple of
// 32, any grid (warp-stride over rows). The warp reduces max and sums with xor shuffles in a fixed
// pattern: deterministic.
//
// sigmoid_gate_*: elementwise, grid-stride.
#include "common.cuh"
#include "sgemm.cuh"

#define MTC_BMM(name, TA, TB)                                                                     \
    extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)                                \
        name(float* __restrict__ c, const float* __restrict__ a, const float* __restrict__ b,    \
             int m, int n, int k, int lda, int ldb, mtc_u64 stride_a, mtc_u64 stride_b) {         \
        const MtcNoise nz = {0, 0, 0, 0, 0.0f, 0, 0};                                             \
        const mtc_u64 z = blockIdx.z;                                                             \
        mtc_sgemm<TA, TB, false, false>(c + z * (mtc_u64)m * n, a + z * stride_a, b + z * stride_b, \
                                        nullptr, 0, m, n, k, lda, ldb, n, nz);                    \
    }

MTC_BMM(bmm_nn, false, false)
MTC_BMM(bmm_nt, false, true)
MTC_BMM(bmm_tn, true, false)
MTC_BMM(bmm_tt, true, true)

__device__ __forceinline__ float mtc_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float mtc_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Iterates `row` over this warp's rows of [0, rows); every lane of a warp runs the same rows.
#define MTC_WARP_ROWS(row, rows)                                                               \
    for (mtc_u64 row = ((mtc_u64)blockIdx.x * blockDim.x + threadIdx.x) / 32; row < (rows); \
         row += ((mtc_u64)blockDim.x * gridDim.x) / 32)

// y = softmax(x) over the last axis of length cols.
extern "C" __global__ void softmax_lastdim_forward(float* __restrict__ y, const float* __restrict__ x,
                                                   mtc_u64 rows, mtc_u64 cols) {
    const unsigned lane = threadIdx.x & 31;
    MTC_WARP_ROWS(row, rows) {
        const float* xr = x + row * cols;
        float* yr = y + row * cols;
        float m = -INFINITY;
        for (mtc_u64 j = lane; j < cols; j += 32) m = fmaxf(m, xr[j]);
        m = mtc_warp_max(m);
        float s = 0.0f;
        for (mtc_u64 j = lane; j < cols; j += 32) s += expf(xr[j] - m);
        const float inv = 1.0f / mtc_warp_sum(s);
        for (mtc_u64 j = lane; j < cols; j += 32) yr[j] = expf(xr[j] - m) * inv;
    }
}

// dx = y * (dy - sum_j dy_j y_j) per row, from the forward output y.
extern "C" __global__ void softmax_lastdim_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                                    const float* __restrict__ y, mtc_u64 rows,
                                                    mtc_u64 cols) {
    const unsigned lane = threadIdx.x & 31;
    MTC_WARP_ROWS(row, rows) {
        const mtc_u64 base = row * cols;
        float d = 0.0f;
        for (mtc_u64 j = lane; j < cols; j += 32) d += dy[base + j] * y[base + j];
        d = mtc_warp_sum(d);
        for (mtc_u64 j = lane; j < cols; j += 32) dx[base + j] = y[base + j] * (dy[base + j] - d);
    }
}

// The numerically safe logistic function of the CPU reference.
__device__ __forceinline__ float mtc_gate_sigmoid(float v) {
    if (v >= 0.0f) return 1.0f / (1.0f + expf(-v));
    const float e = expf(v);
    return e / (1.0f + e);
}

// y = x * sigmoid(g).
extern "C" __global__ void sigmoid_gate_forward(float* __restrict__ y, const float* __restrict__ x,
                                                const float* __restrict__ g, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = x[i] * mtc_gate_sigmoid(g[i]); }
}

// dx = dy * s, dg = dy * x * s * (1 - s) with s = sigmoid(g).
extern "C" __global__ void sigmoid_gate_backward(float* __restrict__ dx, float* __restrict__ dg,
                                                 const float* __restrict__ dy,
                                                 const float* __restrict__ x,
                                                 const float* __restrict__ g, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) {
        const float s = mtc_gate_sigmoid(g[i]);
        dx[i] = dy[i] * s;
        dg[i] = dy[i] * x[i] * s * (1.0f - s);
    }
}
