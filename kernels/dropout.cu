// Inverted dropout; CPU reference: src/backend/cpu/dropout.rs (same names). Element i is kept iff
// unit(i) >= p, unit(i) being mtc_noise_unit of the same Philox counter as NoiseKey::unit (philox.cuh),
// and kept elements are scaled by keep_scale = 1 / (1 - p), computed in f32 on the host exactly as the
// CPU does. The mask and the products are bit-identical to the CPU. n must not exceed 2^32.
#include "common.cuh"
#include "philox.cuh"

__device__ __forceinline__ float mtc_dropout_scale(mtc_u64 i, mtc_u64 seed, unsigned step, unsigned stream,
                                                   unsigned sample, float p, float keep_scale) {
    return mtc_noise_unit(seed, step, stream, sample, (uint32_t)i) >= p ? keep_scale : 0.0f;
}

// mask[i] = keep_scale where kept, 0 where dropped.
extern "C" __global__ void dropout_mask(float* __restrict__ mask, mtc_u64 n, mtc_u64 seed, unsigned step,
                                        unsigned stream, unsigned sample, float p, float keep_scale) {
    MTC_GRID_STRIDE(i, n) { mask[i] = mtc_dropout_scale(i, seed, step, stream, sample, p, keep_scale); }
}

// y = x * mask.
extern "C" __global__ void dropout_forward(float* __restrict__ y, const float* __restrict__ x,
                                           const float* __restrict__ mask, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { y[i] = __fmul_rn(x[i], mask[i]); }
}

// dx = dy * mask.
extern "C" __global__ void dropout_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                            const float* __restrict__ mask, mtc_u64 n) {
    MTC_GRID_STRIDE(i, n) { dx[i] = __fmul_rn(dy[i], mask[i]); }
}

// y = x * mask without storing the mask (it is redrawn from the key): the forward on x, and the
// backward on dy with the same key.
extern "C" __global__ void dropout_keyed(float* __restrict__ y, const float* __restrict__ x, mtc_u64 n,
                                         mtc_u64 seed, unsigned step, unsigned stream, unsigned sample,
                                         float p, float keep_scale) {
    MTC_GRID_STRIDE(i, n) {
        y[i] = __fmul_rn(x[i], mtc_dropout_scale(i, seed, step, stream, sample, p, keep_scale));
    }
}
