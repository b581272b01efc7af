// Deterministic reductions shared by pool.cu, norm.cu and loss.cu.
//
// Every sum here has a fixed shape that depends only on the problem size and blockDim (which the Rust
// wrappers fix at 256), never on timing or on the number of SMs: each thread accumulates a fixed
// strided subset in order, warps combine with a fixed XOR butterfly (IEEE addition is commutative, so
// every lane ends with the bit-identical total), and warp 0's partials are combined the same way. No
// atomics anywhere, so results are identical from run to run. Accumulation is in double, like the CPU
// references.
#pragma once

#include "common.cuh"

// Sum over the 32 lanes of a warp, returned to every lane (all lanes must be active).
__device__ __forceinline__ double mtc_warp_sum(double v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

// Sums K values over the block, each returned to every thread. blockDim.x must be a multiple of 32 and
// at most 1024; every thread of the block must call it (it synchronises). scratch: K * 32 doubles of
// shared memory, reusable by the next call (the leading barrier protects it).
template <int K>
__device__ __forceinline__ void mtc_block_sum(double (&v)[K], double* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned warps = blockDim.x >> 5;
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = mtc_warp_sum(v[k]);
    __syncthreads();  // earlier readers of scratch are done
    if (lane == 0) {
#pragma unroll
        for (int k = 0; k < K; ++k) scratch[k * 32 + warp] = v[k];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = mtc_warp_sum(lane < warps ? scratch[k * 32 + lane] : 0.0);
}

__device__ __forceinline__ double mtc_block_sum1(double v, double* scratch) {
    double a[1] = {v};
    mtc_block_sum<1>(a, scratch);
    return a[0];
}

// Walks the M = n * inner elements of channel ch of an [n, c, inner] tensor, thread t of the block
// taking j = t, t + blockDim.x, ... (j = b * inner + s) without a 64-bit division per element.
struct mtc_channel_walk {
    mtc_u64 b, s, db, ds;
    __device__ __forceinline__ mtc_channel_walk(mtc_u64 inner) {
        b = threadIdx.x / inner;
        s = threadIdx.x % inner;
        db = blockDim.x / inner;
        ds = blockDim.x % inner;
    }
    // Flat index of (b, ch, s).
    __device__ __forceinline__ mtc_u64 at(mtc_u64 c, mtc_u64 inner, mtc_u64 ch) const {
        return (b * c + ch) * inner + s;
    }
    __device__ __forceinline__ void next(mtc_u64 inner) {
        b += db;
        s += ds;
        if (s >= inner) {
            s -= inner;
            ++b;
        }
    }
};
