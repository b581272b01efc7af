// 2-d max / average pooling (k x k, stride s, no padding, floor mode) and global average pooling over
// NCHW, forward and backward; CPU reference: src/backend/cpu/pool.rs (same names).
//
// Layout: x is `planes` = N*C planes of h x w, y is planes of ho x wo, ho = (h - k) / s + 1.
// The backward passes are gathers, not scatters: each dx element visits, in increasing output order,
// the windows that cover it, so no atomics are needed and the f32 sums are added in exactly the CPU
// loop's order (bit-identical to the CPU). global_avg_pool_forward needs blockDim.x to be a multiple of 32.
#include "common.cuh"
#include "reduce.cuh"

// The output positions [*lo, *hi] (inclusive; empty when lo > hi) whose window covers input position
// i along one axis: o * s <= i < o * s + k, 0 <= o < out (out >= 1).
__device__ __forceinline__ void mtc_pool_cover(unsigned i, unsigned k, unsigned s, unsigned out,
                                               unsigned* lo, unsigned* hi) {
    *lo = i + 1 >= k ? (i + 1 - k + s - 1) / s : 0u;  // ceil((i - k + 1) / s)
    const unsigned h = i / s;
    *hi = h < out - 1 ? h : out - 1;
}

// y[i] = max of window i, argmax[i] = flat index into x of that value: the first maximum in row-major
// window order; the first NaN wins over numbers.
extern "C" __global__ void max_pool2d_forward(float* __restrict__ y, unsigned* __restrict__ argmax,
                                              const float* __restrict__ x, mtc_u64 planes,
                                              unsigned h, unsigned w, unsigned ho, unsigned wo,
                                              unsigned k, unsigned s) {
    const mtc_u64 per_plane = (mtc_u64)ho * wo;
    MTC_GRID_STRIDE(i, planes * per_plane) {
        const mtc_u64 plane = i / per_plane;
        const unsigned r = (unsigned)(i - plane * per_plane);
        const unsigned oy = r / wo, ox = r - oy * wo;
        const mtc_u64 base = plane * h * w;
        mtc_u64 best_idx = base + (mtc_u64)(oy * s) * w + ox * s;
        float best = x[best_idx];
        for (unsigned ky = 0; ky < k; ++ky) {
            const mtc_u64 row = base + (mtc_u64)(oy * s + ky) * w + ox * s;
            for (unsigned kx = 0; kx < k; ++kx) {
                const float v = x[row + kx];
                if (v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    best_idx = row + kx;
                }
            }
        }
        y[i] = best;
        argmax[i] = (unsigned)best_idx;
    }
}

// dx[j] = sum of dy[i] over the windows i covering j whose argmax is j (zero elsewhere). argmax must
// come from max_pool2d_forward with the same geometry (an index outside its window is never found).
extern "C" __global__ void max_pool2d_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                               const unsigned* __restrict__ argmax, mtc_u64 planes,
                                               unsigned h, unsigned w, unsigned ho, unsigned wo,
                                               unsigned k, unsigned s) {
    const mtc_u64 per_plane = (mtc_u64)h * w;
    MTC_GRID_STRIDE(j, planes * per_plane) {
        const mtc_u64 plane = j / per_plane;
        const unsigned r = (unsigned)(j - plane * per_plane);
        const unsigned iy = r / w, ix = r - iy * w;
        unsigned oy0, oy1, ox0, ox1;
        mtc_pool_cover(iy, k, s, ho, &oy0, &oy1);
        mtc_pool_cover(ix, k, s, wo, &ox0, &ox1);
        float acc = 0.0f;
        for (unsigned oy = oy0; oy <= oy1; ++oy) {
            const mtc_u64 row = (plane * ho + oy) * wo;
            for (unsigned ox = ox0; ox <= ox1; ++ox) {
                if (argmax[row + ox] == (unsigned)j) acc = __fadd_rn(acc, dy[row + ox]);
            }
        }
        dx[j] = acc;
    }
}

// y[i] = mean of window i, summed in double in row-major window order.
extern "C" __global__ void avg_pool2d_forward(float* __restrict__ y, const float* __restrict__ x,
                                              mtc_u64 planes, unsigned h, unsigned w, unsigned ho,
                                              unsigned wo, unsigned k, unsigned s) {
    const mtc_u64 per_plane = (mtc_u64)ho * wo;
    const double area = (double)k * (double)k;
    MTC_GRID_STRIDE(i, planes * per_plane) {
        const mtc_u64 plane = i / per_plane;
        const unsigned r = (unsigned)(i - plane * per_plane);
        const unsigned oy = r / wo, ox = r - oy * wo;
        const mtc_u64 base = plane * h * w;
        double acc = 0.0;
        for (unsigned ky = 0; ky < k; ++ky) {
            const mtc_u64 row = base + (mtc_u64)(oy * s + ky) * w + ox * s;
            for (unsigned kx = 0; kx < k; ++kx) acc += (double)x[row + kx];
        }
        y[i] = (float)(acc / area);
    }
}

// dx[j] = sum over the windows i covering j of dy[i] / (k*k), in f32, in increasing i.
extern "C" __global__ void avg_pool2d_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                               mtc_u64 planes, unsigned h, unsigned w, unsigned ho,
                                               unsigned wo, unsigned k, unsigned s) {
    const mtc_u64 per_plane = (mtc_u64)h * w;
    const float area = (float)(k * k);
    MTC_GRID_STRIDE(j, planes * per_plane) {
        const mtc_u64 plane = j / per_plane;
        const unsigned r = (unsigned)(j - plane * per_plane);
        const unsigned iy = r / w, ix = r - iy * w;
        unsigned oy0, oy1, ox0, ox1;
        mtc_pool_cover(iy, k, s, ho, &oy0, &oy1);
        mtc_pool_cover(ix, k, s, wo, &ox0, &ox1);
        float acc = 0.0f;
        for (unsigned oy = oy0; oy <= oy1; ++oy) {
            const mtc_u64 row = (plane * ho + oy) * wo;
            for (unsigned ox = ox0; ox <= ox1; ++ox) acc = __fadd_rn(acc, __fdiv_rn(dy[row + ox], area));
        }
        dx[j] = acc;
    }
}

// y[p] = mean of plane p: one warp per plane (grid-stride over planes), lanes summing a fixed strided
// subset in double, then the warp's XOR butterfly.
extern "C" __global__ void global_avg_pool_forward(float* __restrict__ y, const float* __restrict__ x,
                                                   mtc_u64 planes, mtc_u64 hw) {
    const unsigned lane = threadIdx.x & 31u;
    const mtc_u64 warps = ((mtc_u64)gridDim.x * blockDim.x) >> 5;
    for (mtc_u64 p = ((mtc_u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; p < planes; p += warps) {
        const float* plane = x + p * hw;
        double acc = 0.0;
        for (mtc_u64 j = lane; j < hw; j += 32) acc += (double)plane[j];
        acc = mtc_warp_sum(acc);
        if (lane == 0) y[p] = (float)(acc / (double)hw);
    }
}

// dx[p, j] = dy[p] / (h*w).
extern "C" __global__ void global_avg_pool_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                                    mtc_u64 planes, mtc_u64 hw) {
    const float count = (float)hw;
    MTC_GRID_STRIDE(j, planes * hw) { dx[j] = __fdiv_rn(dy[j / hw], count); }
}
