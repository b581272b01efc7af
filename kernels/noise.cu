// Uniform weight noise from Philox-4x32-10; CPU reference: src/noise.rs (NoiseKey::uniform, perturb).
// Bit-identical to the CPU: integer Philox plus IEEE round-to-nearest float ops (see philox.cuh).
// The element index is the counter's first word: n must not exceed 2^32.
#include "common.cuh"
#include "philox.cuh"

// out[i] = epsilon_i in (-b, b).
extern "C" __global__ void noise_uniform(float* __restrict__ out, mtc_u64 n, mtc_u64 seed,
                                         unsigned step, unsigned stream, unsigned sample, float b) {
    MTC_GRID_STRIDE(i, n) { out[i] = mtc_noise_uniform(seed, step, stream, sample, (uint32_t)i, b); }
}

// out[i] = w[i] + epsilon_(offset + i): w starts at `offset` inside its extractor's flat theta.
extern "C" __global__ void add_noise(float* __restrict__ out, const float* __restrict__ w,
                                     mtc_u64 n, mtc_u64 seed, unsigned step, unsigned stream,
                                     unsigned sample, float b, unsigned offset) {
    MTC_GRID_STRIDE(i, n) {
        uint32_t idx = offset + (uint32_t)i;
        out[i] = mtc_add_rn(w[i], mtc_noise_uniform(seed, step, stream, sample, idx, b));
    }
}
