// The tiled (implicit) GEMM core shared by kernels/linear.cu and kernels/conv.cu.
//
// One block of MTC_GEMM_THREADS = 256 threads computes a 64 x 64 tile of C = A . B (A: M x K,
// B: K x N), f32 accumulate. K is walked in slabs of MTC_BK = 16: each slab of A (64 x 16) and of B
// (16 x 64) is staged in shared memory, both stored k-major (S[k][m] and S[k][n]), and every thread
// keeps a 4 x 4 register tile of C: rows m0 + ty + 16 i, columns n0 + tx + 16 j (tx = tid % 16,
// ty = tid / 16, i, j in 0..4), so a warp's shared-memory reads are broadcasts (A) or 16 consecutive
// words (B), and its global stores are 16 consecutive columns.
//
// The operands are "loaders": a loader knows where element (outer, k) of its operand lives (a dense
// matrix, or an input image read through a convolution window, which makes the GEMM implicit: no
// im2col buffer) and returns 0 outside the operand or at k >= kend. Interface:
//   void load(float (&r)[4], int k0, int kend) const;   // this thread's 4 elements of slab k0
//   template <int LD> void store(float (*S)[LD], const float (&r)[4]) const;   // into the slab
// Each thread loads 4 of the 1024 elements of a slab, in one of two patterns (each loader picks the
// one under which consecutive threads read consecutive addresses):
//   k-fast: k = k0 + tid % 16, outer = o0 + tid / 16 + 16 l       (mtc_store_kfast)
//   o-fast: outer = o0 + tid % 64, k = k0 + tid / 64 + 4 l         (mtc_store_ofast)
// With row stride LD = 66 both patterns store without bank conflicts.
//
// The next slab's global loads are issued before the current slab's FMAs (register prefetch).
// Summation order over k is fixed (one FMA chain per output element, k ascending), so results are
// deterministic; indices are 32-bit (the wrappers check that every tensor has < 2^31 elements).
#pragma once

#include "common.cuh"
#include "philox.cuh"

#define MTC_BM 64
#define MTC_BN 64
#define MTC_BK 16
#define MTC_GEMM_THREADS 256
// Shared-memory row stride of the f32 path (conflict-free stores, see above).
#define MTC_LD 66

// Weight noise of a fused noisy forward (src/noise.rs NoiseKey + radius + offsets in theta); the
// layout matches the #[repr(C)] Rust struct NoiseArgs in src/backend/cuda/linear.rs (32 bytes).
// step_ptr: when not 0, the address of the step number to use instead of `step` (a CUDA graph replays
// one captured launch for every step, and the host writes the step there before each replay).
struct MtcNoise {
    mtc_u64 seed;
    unsigned step, stream, sample;
    float b;
    unsigned w_offset, b_offset;
    mtc_u64 step_ptr;
};

__device__ __forceinline__ unsigned mtc_noise_step(const MtcNoise& nz) {
    return nz.step_ptr ? *reinterpret_cast<const unsigned*>(nz.step_ptr) : nz.step;
}

// v + epsilon(index), exactly src/noise.rs `x + key.uniform(index, b)`.
__device__ __forceinline__ float mtc_noisy(float v, const MtcNoise& nz, unsigned index) {
    return mtc_add_rn(v, mtc_noise_uniform(nz.seed, mtc_noise_step(nz), nz.stream, nz.sample, index, nz.b));
}

template <int LD>
__device__ __forceinline__ void mtc_store_kfast(float (*S)[LD], const float (&r)[4]) {
    const int t = threadIdx.x;
#pragma unroll
    for (int l = 0; l < 4; ++l) S[t & 15][(t >> 4) + 16 * l] = r[l];
}

template <int LD>
__device__ __forceinline__ void mtc_store_ofast(float (*S)[LD], const float (&r)[4]) {
    const int t = threadIdx.x;
#pragma unroll
    for (int l = 0; l < 4; ++l) S[(t >> 6) + 4 * l][t & 63] = r[l];
}

// A dense row-major matrix operand: element (o, k) at p[o * ld + k] when KFAST, at p[k * ld + o]
// otherwise; o < outer_n. With NOISY, epsilon(nz.w_offset + that flat index) is added as the value
// is read (the matrix must then be the whole, contiguous parameter tensor).
//   op(A) not transposed: KFAST, outer = row;  op(A) = A^T: !KFAST.
//   op(B) not transposed: !KFAST, outer = column;  op(B) = B^T: KFAST.
template <bool KFAST, bool NOISY>
struct MtcDense {
    const float* p;
    int outer_n, ld, o0;
    MtcNoise nz;

    __device__ __forceinline__ void load(float (&r)[4], int k0, int kend) const {
        const int t = threadIdx.x;
        if (KFAST) {
            const int k = k0 + (t & 15);
#pragma unroll
            for (int l = 0; l < 4; ++l) {
                const int o = o0 + (t >> 4) + 16 * l;
                float v = 0.0f;
                if (o < outer_n && k < kend) {
                    const int idx = o * ld + k;
                    v = p[idx];
                    if (NOISY) v = mtc_noisy(v, nz, nz.w_offset + (unsigned)idx);
                }
                r[l] = v;
            }
        } else {
            const int o = o0 + (t & 63);
#pragma unroll
            for (int l = 0; l < 4; ++l) {
                const int k = k0 + (t >> 6) + 4 * l;
                float v = 0.0f;
                if (o < outer_n && k < kend) {
                    const int idx = k * ld + o;
                    v = p[idx];
                    if (NOISY) v = mtc_noisy(v, nz, nz.w_offset + (unsigned)idx);
                }
                r[l] = v;
            }
        }
    }
    template <int LD>
    __device__ __forceinline__ void store(float (*S)[LD], const float (&r)[4]) const {
        if (KFAST) {
            mtc_store_kfast<LD>(S, r);
        } else {
            mtc_store_ofast<LD>(S, r);
        }
    }
};

// acc[i][j] += sum over k in [kbeg, kend) of A(m0 + ty + 16 i, k) * B(k, n0 + tx + 16 j), f32 FMAs
// in ascending k. Every thread of the block must call it (it synchronises the block).
template <class LA, class LB>
__device__ __forceinline__ void mtc_gemm_mainloop(const LA& la, const LB& lb, int kbeg, int kend,
                                                  float (&acc)[4][4]) {
    __shared__ float As[MTC_BK][MTC_LD];
    __shared__ float Bs[MTC_BK][MTC_LD];
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float ra[4], rb[4];
    if (kbeg < kend) {
        la.load(ra, kbeg, kend);
        lb.load(rb, kbeg, kend);
    }
    for (int k0 = kbeg; k0 < kend; k0 += MTC_BK) {
        la.template store<MTC_LD>(As, ra);
        lb.template store<MTC_LD>(Bs, rb);
        __syncthreads();
        if (k0 + MTC_BK < kend) {  // prefetch the next slab while this one is multiplied
            la.load(ra, k0 + MTC_BK, kend);
            lb.load(rb, k0 + MTC_BK, kend);
        }
#pragma unroll
        for (int kk = 0; kk < MTC_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
        __syncthreads();  // the slab is overwritten by the next iteration's stores
    }
}
