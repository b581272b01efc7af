// The dense GEMM of kernels/linear.cu and kernels/attention.cu: C = op(A) . op(B) (+ bias[col]) on
// the tile loop of igemm.cuh, f32 FMAs or tensor cores (TF32 inputs, f32 accumulate). One block
// computes the 64 x 64 tile (blockIdx.y, blockIdx.x); blockIdx.z is left to the caller.
#pragma once

#include <mma.h>

#include "common.cuh"
#include "igemm.cuh"

// Row stride of the TF32 path's shared tiles: wmma wants a multiple of 4 floats (16 bytes), and
// fragment pointers 32-byte aligned (rows 0 and 8 of a slab, columns multiples of 16: all are).
#define MTC_LDT 68

// The mainloop of igemm.cuh on tensor cores: warp w computes the 16 x 32 sub-tile at rows 16 (w % 4),
// columns 32 (w / 4) with two m16n16k8 TF32 fragments; the result goes through shared memory into the
// same per-thread acc layout as the f32 path, so both share the epilogue.
template <class LA, class LB>
__device__ __forceinline__ void mtc_gemm_mainloop_tf32(const LA& la, const LB& lb, int kbeg, int kend,
                                                       float (&acc)[4][4]) {
    using namespace nvcuda;
    __shared__ __align__(32) float As[MTC_BK][MTC_LDT];
    __shared__ __align__(32) float Bs[MTC_BK][MTC_LDT];
    __shared__ __align__(32) float Cs[MTC_BM][MTC_LDT];
    const int warp = threadIdx.x >> 5;
    const int wm = warp & 3, wn = warp >> 2;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> fc[2];
    wmma::fill_fragment(fc[0], 0.0f);
    wmma::fill_fragment(fc[1], 0.0f);
    float ra[4], rb[4];
    if (kbeg < kend) {
        la.load(ra, kbeg, kend);
        lb.load(rb, kbeg, kend);
    }
    for (int k0 = kbeg; k0 < kend; k0 += MTC_BK) {
        la.template store<MTC_LDT>(As, ra);
        lb.template store<MTC_LDT>(Bs, rb);
        __syncthreads();
        if (k0 + MTC_BK < kend) {
            la.load(ra, k0 + MTC_BK, kend);
            lb.load(rb, k0 + MTC_BK, kend);
        }
#pragma unroll
        for (int kk = 0; kk < MTC_BK; kk += 8) {
            // As is k-major, i.e. the 16 x 8 piece of A is column-major with ld = MTC_LDT.
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fa;
            wmma::load_matrix_sync(fa, &As[kk][16 * wm], MTC_LDT);
#pragma unroll
            for (int e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
#pragma unroll
            for (int t = 0; t < 2; ++t) {
                wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
                wmma::load_matrix_sync(fb, &Bs[kk][32 * wn + 16 * t], MTC_LDT);
#pragma unroll
                for (int e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
                wmma::mma_sync(fc[t], fa, fb, fc[t]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&Cs[16 * wm][32 * wn], fc[0], MTC_LDT, wmma::mem_row_major);
    wmma::store_matrix_sync(&Cs[16 * wm][32 * wn + 16], fc[1], MTC_LDT, wmma::mem_row_major);
    __syncthreads();
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = Cs[ty + 16 * i][tx + 16 * j];
    }
}

// C[row, col] = acc (+ bias[col], itself perturbed by epsilon(b_offset + col) when NOISY).
template <bool NOISY>
__device__ __forceinline__ void mtc_gemm_epilogue(float* __restrict__ c, const float (&acc)[4][4],
                                                  const float* __restrict__ bias, int has_bias, int m,
                                                  int n, int ldc, const MtcNoise& nz) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int m0 = blockIdx.y * MTC_BM, n0 = blockIdx.x * MTC_BN;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int col = n0 + tx + 16 * j;
        if (col >= n) continue;
        float bv = 0.0f;
        if (has_bias) {
            bv = bias[col];
            if (NOISY) bv = mtc_noisy(bv, nz, nz.b_offset + (unsigned)col);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int row = m0 + ty + 16 * i;
            if (row < m) c[row * ldc + col] = acc[i][j] + bv;
        }
    }
}

template <bool TA, bool TB, bool TF32, bool NOISY>
__device__ __forceinline__ void mtc_sgemm(float* __restrict__ c, const float* __restrict__ a,
                                          const float* __restrict__ b, const float* __restrict__ bias,
                                          int has_bias, int m, int n, int k, int lda, int ldb, int ldc,
                                          const MtcNoise& nz) {
    const int m0 = blockIdx.y * MTC_BM, n0 = blockIdx.x * MTC_BN;
    const MtcDense<!TA, false> la{a, m, lda, m0, nz};
    const MtcDense<TB, NOISY> lb{b, n, ldb, n0, nz};
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    }
    if constexpr (TF32) {
        mtc_gemm_mainloop_tf32(la, lb, 0, k, acc);
    } else {
        mtc_gemm_mainloop(la, lb, 0, k, acc);
    }
    mtc_gemm_epilogue<NOISY>(c, acc, bias, has_bias, m, n, ldc, nz);
}

