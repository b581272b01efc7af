// Philox-4x32-10 (Salmon et al., SC'11, "Random123") and the map to uniform noise, identical to
// src/noise.rs so that GPU noise equals CPU noise bit for bit.
//
// Layout: counter = (index, sample k, stream/task, step t), key = (seed low 32 bits, seed high 32 bits).
// The first output word u maps to ((u >> 8) + 0.5) * 2^-24 in (0, 1), then to b * (2 * that - 1).
// Usable from host code too (a C++ compiler without CUDA sees plain inline functions), which is how the
// known-answer vectors of DESIGN.md section 2 can be checked without a GPU.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define MTC_HD __host__ __device__ __forceinline__
#else
#define MTC_HD static inline
#endif

struct mtc_philox_out {
    uint32_t x, y, z, w;
};

// IEEE single-precision add/mul/sub, round to nearest, never fused into an FMA.
MTC_HD float mtc_add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
MTC_HD float mtc_sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
MTC_HD float mtc_mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// The raw block function: 10 rounds, key bumped before every round but the first.
MTC_HD mtc_philox_out mtc_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                        uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const uint64_t p0 = (uint64_t)0xD2511F53u * c0;
        const uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
        const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
    }
    mtc_philox_out r = {c0, c1, c2, c3};
    return r;
}

// A 32-bit word to the open interval (0, 1): ((u >> 8) + 0.5) * 2^-24 (the int-to-float is exact).
MTC_HD float mtc_u32_to_unit(uint32_t u) {
    return mtc_mul_rn(mtc_add_rn((float)(u >> 8), 0.5f), 5.9604644775390625e-8f);
}

// The uniform (0, 1) value of one element index (src/noise.rs: NoiseKey::unit).
MTC_HD float mtc_noise_unit(uint64_t seed, uint32_t step, uint32_t stream, uint32_t sample,
                            uint32_t index) {
    const mtc_philox_out r =
        mtc_philox4x32_10(index, sample, stream, step, (uint32_t)seed, (uint32_t)(seed >> 32));
    return mtc_u32_to_unit(r.x);
}

// epsilon in (-b, b) for one element index (src/noise.rs: NoiseKey::uniform): b * (2u - 1).
MTC_HD float mtc_noise_uniform(uint64_t seed, uint32_t step, uint32_t stream, uint32_t sample,
                               uint32_t index, float b) {
    const float u = mtc_noise_unit(seed, step, stream, sample, index);
    return mtc_mul_rn(b, mtc_sub_rn(mtc_mul_rn(2.0f, u), 1.0f));
}
