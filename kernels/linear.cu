// Matrix multiply and the linear layer; CPU references: src/backend/cpu/gemm.rs (sgemm) and
// src/backend/cpu/linear.rs (matmul, matmul_backward, linear_forward, linear_backward).
//
// sgemm_XY: C = op(A) . op(B) (+ bias[col]), all row-major; X, Y = n (as stored) or t (transposed):
// op(A) is m x k (A stored k x m when transposed), op(B) is k x n (stored n x k when transposed),
// lda/ldb/ldc are the stored row strides. C is overwritten (never read). Launch: blockDim 256,
// grid (ceil(n / 64), ceil(m / 64)). mtc_sgemm is kernels/sgemm.cuh on igemm.cuh (64 x 64 tiles, 4 x 4 per
// thread); sgemm_tf32_XY run the same tiles on tensor cores (TF32 inputs, f32 accumulate).
//   matmul           y = a . b                 sgemm_nn
//   matmul_backward  da = dy . b^T, db = a^T . dy     sgemm_nt, sgemm_tn
//   linear_forward   y = x . w^T + bias        sgemm_nt with the bias epilogue
//   linear_backward  dx = dy . w, dw = dy^T . x, db = column sums of dy   sgemm_nn, sgemm_tn,
//                    linear_backward_bias
#include "common.cuh"
#include "sgemm.cuh"

#define MTC_SGEMM(name, TA, TB, TF32)                                                              \
    extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)                                 \
        name(float* __restrict__ c, const float* __restrict__ a, const float* __restrict__ b,     \
             const float* __restrict__ bias, int has_bias, int m, int n, int k, int lda, int ldb, \
             int ldc) {                                                                            \
        const MtcNoise nz = {0, 0, 0, 0, 0.0f, 0, 0};                                              \
        mtc_sgemm<TA, TB, TF32, false>(c, a, b, bias, has_bias, m, n, k, lda, ldb, ldc, nz);       \
    }

MTC_SGEMM(sgemm_nn, false, false, false)
MTC_SGEMM(sgemm_nt, false, true, false)
MTC_SGEMM(sgemm_tn, true, false, false)
MTC_SGEMM(sgemm_tt, true, true, false)
MTC_SGEMM(sgemm_tf32_nn, false, false, true)
MTC_SGEMM(sgemm_tf32_nt, false, true, true)
MTC_SGEMM(sgemm_tf32_tn, true, false, true)
MTC_SGEMM(sgemm_tf32_tt, true, true, true)

// y = x . (w + eps_w)^T (+ bias + eps_b), x: [rows, fin], w: [fout, fin], y: [rows, fout], with
// eps_w[o, i] = epsilon(nz.w_offset + o * fin + i) and eps_b[o] = epsilon(nz.b_offset + o), added as
// the weights are read (no perturbed copy). Equals linear_forward(x, perturb(w), perturb(bias)) up
// to f32 summation order. Launch as sgemm_nt with m = rows, n = fout.
extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)
    linear_forward_noisy(float* __restrict__ y, const float* __restrict__ x,
                         const float* __restrict__ w, const float* __restrict__ bias, int has_bias,
                         int rows, int fin, int fout, MtcNoise nz) {
    mtc_sgemm<false, true, false, true>(y, x, w, bias, has_bias, rows, fout, fin, fin, fin, fout, nz);
}

// db[col] = sum over rows of dy[row, col], dy: [rows, cols], without atomics: blockDim must be 256
// (32 columns x 8 row phases), grid ceil(cols / 32). Thread (phase, lane) sums rows phase, phase + 8,
// ... of its column in double (coalesced: a warp reads 32 consecutive columns of one row); the 8
// partial sums of a column are then added in phase order. Deterministic.
extern "C" __global__ void __launch_bounds__(256)
    linear_backward_bias(float* __restrict__ db, const float* __restrict__ dy, int rows, int cols) {
    __shared__ double part[8][32];
    const int lane = threadIdx.x & 31, phase = threadIdx.x >> 5;
    const int col = blockIdx.x * 32 + lane;
    double acc = 0.0;
    if (col < cols) {
        for (int r = phase; r < rows; r += 8) acc += (double)dy[r * cols + col];
    }
    part[phase][lane] = acc;
    __syncthreads();
    if (phase == 0 && col < cols) {
        double s = 0.0;
#pragma unroll
        for (int q = 0; q < 8; ++q) s += part[q][lane];
        db[col] = (float)s;
    }
}
