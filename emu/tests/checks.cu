// Test-only kernels: each breaks one rule on purpose, so tests/emu.rs can show that the emulated
// device's check for it fires. Not part of the product: build.rs compiles them into the emulator
// only (module group "emutest"), never into the nvcc fatbin.

// Threads read a neighbour's shared-memory slot without __syncthreads between write and read.
extern "C" __global__ void emutest_missing_syncthreads(float* out, const float* in) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, n = blockDim.x;
    s[t] = in[blockIdx.x * n + t];
    out[blockIdx.x * n + t] = s[(t + 1) % n];
}

// The same with the barrier: must pass every check.
extern "C" __global__ void emutest_with_syncthreads(float* out, const float* in) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, n = blockDim.x;
    s[t] = in[blockIdx.x * n + t];
    __syncthreads();
    out[blockIdx.x * n + t] = s[(t + 1) % n];
}

// out[i] = in[i + 1] for i < n: the last thread reads one element past the end of `in`.
extern "C" __global__ void emutest_read_past_end(float* out, const float* in, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = in[i + 1];
}

// out[i] = scratch[i] + 1, scratch never written by anyone.
extern "C" __global__ void emutest_read_unwritten(float* out, const float* scratch, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = scratch[i] + 1.0f;
}

// A warp-synchronous tree sum over shared memory that assumes the lanes run in lockstep (no
// __syncwarp between the steps): a race on Volta and later.
extern "C" __global__ void emutest_warp_sum_no_syncwarp(float* out, const float* in) {
    __shared__ float s[32];
    const unsigned t = threadIdx.x;
    s[t] = in[t];
    for (unsigned off = 16; off > 0; off >>= 1) {
        if (t < off) s[t] += s[t + off];
    }
    if (t == 0) out[0] = s[0];
}

// The same, correct: every step ends with __syncwarp.
extern "C" __global__ void emutest_warp_sum_syncwarp(float* out, const float* in) {
    __shared__ float s[32];
    const unsigned t = threadIdx.x;
    s[t] = in[t];
    __syncwarp();
    for (unsigned off = 16; off > 0; off >>= 1) {
        float v = t < off ? s[t + off] : 0.0f;
        __syncwarp();
        if (t < off) s[t] += v;
        __syncwarp();
    }
    if (t == 0) out[0] = s[0];
}

// Half the warp has returned when the other half shuffles with a full mask (undefined on a card).
extern "C" __global__ void emutest_shuffle_exited_lane(float* out, const float* in) {
    const unsigned t = threadIdx.x;
    if (t >= 16) return;
    out[t] = __shfl_xor_sync(0xffffffffu, in[t], 1);
}
