// Nearest-neighbour upsampling by an integer scale and bilinear resizing (align_corners=False), NCHW,
// forward and backward; CPU reference: src/backend/cpu/upsample.rs (same names).
//
// x is `planes` = N*C planes of h x w, y planes of ho x wo. The bilinear arithmetic is spelled with
// IEEE round-to-nearest intrinsics in the CPU's order (never contracted into FMAs), so the taps,
// weights and outputs are bit-identical to the CPU. Both backward passes are gathers (one thread per
// dx element visiting the outputs that read it, in increasing output order): no atomics, and the
// bilinear f32 sums are added in the CPU scatter's exact order.
#include "common.cuh"

// y[p, oy, ox] = x[p, oy / scale, ox / scale].
extern "C" __global__ void upsample_nearest_forward(float* __restrict__ y, const float* __restrict__ x,
                                                    mtc_u64 planes, unsigned h, unsigned w,
                                                    unsigned scale) {
    const unsigned ho = h * scale, wo = w * scale;
    const mtc_u64 per_plane = (mtc_u64)ho * wo;
    MTC_GRID_STRIDE(i, planes * per_plane) {
        const mtc_u64 plane = i / per_plane;
        const unsigned r = (unsigned)(i - plane * per_plane);
        const unsigned oy = r / wo, ox = r - oy * wo;
        y[i] = x[(plane * h + oy / scale) * w + ox / scale];
    }
}

// dx[p, iy, ix] = sum of dy over its scale x scale block (double, row-major order).
extern "C" __global__ void upsample_nearest_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                                     mtc_u64 planes, unsigned h, unsigned w,
                                                     unsigned scale) {
    const unsigned ho = h * scale, wo = w * scale;
    const mtc_u64 per_plane = (mtc_u64)h * w;
    MTC_GRID_STRIDE(j, planes * per_plane) {
        const mtc_u64 plane = j / per_plane;
        const unsigned r = (unsigned)(j - plane * per_plane);
        const unsigned iy = r / w, ix = r - iy * w;
        double acc = 0.0;
        for (unsigned sy = 0; sy < scale; ++sy) {
            const mtc_u64 row = (plane * ho + iy * scale + sy) * wo + (mtc_u64)ix * scale;
            for (unsigned sx = 0; sx < scale; ++sx) acc += (double)dy[row + sx];
        }
        dx[j] = (float)acc;
    }
}

// One output position's source taps along one axis (the CPU's bilinear_taps):
// src = max((dst + 0.5) * scale - 0.5, 0), i0 = min(floor(src), in - 1), i1 = i0 + 1 clamped,
// l1 = clamp(src - i0, 0, 1), l0 = 1 - l1; scale = in / out in f32.
struct mtc_taps {
    unsigned i0, i1;
    float l0, l1;
};

__device__ __forceinline__ mtc_taps mtc_bilinear_taps(unsigned dst, unsigned in_len, float scale) {
    const float src = fmaxf(__fsub_rn(__fmul_rn(__fadd_rn((float)dst, 0.5f), scale), 0.5f), 0.0f);
    unsigned i0 = (unsigned)src;
    if (i0 > in_len - 1) i0 = in_len - 1;
    mtc_taps t;
    t.i0 = i0;
    t.i1 = i0 < in_len - 1 ? i0 + 1 : i0;
    t.l1 = fminf(fmaxf(__fsub_rn(src, (float)i0), 0.0f), 1.0f);
    t.l0 = __fsub_rn(1.0f, t.l1);
    return t;
}

// The first output position in [0, out) whose i0 is >= target (out when none): i0 is non-decreasing
// in the output position (every step of mtc_bilinear_taps is monotone), so a binary search finds it.
__device__ __forceinline__ unsigned mtc_taps_lower_bound(unsigned target, unsigned in_len, unsigned out,
                                                         float scale) {
    unsigned lo = 0, hi = out;
    while (lo < hi) {
        const unsigned mid = lo + (hi - lo) / 2;
        if (mtc_bilinear_taps(mid, in_len, scale).i0 < target) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// y[p, oy, ox] = l0y * (l0x * x[y0, x0] + l1x * x[y0, x1]) + l1y * (l0x * x[y1, x0] + l1x * x[y1, x1]).
extern "C" __global__ void upsample_bilinear_forward(float* __restrict__ y, const float* __restrict__ x,
                                                     mtc_u64 planes, unsigned h, unsigned w,
                                                     unsigned ho, unsigned wo) {
    const float sy = __fdiv_rn((float)h, (float)ho), sx = __fdiv_rn((float)w, (float)wo);
    const mtc_u64 per_plane = (mtc_u64)ho * wo;
    MTC_GRID_STRIDE(i, planes * per_plane) {
        const mtc_u64 plane = i / per_plane;
        const unsigned r = (unsigned)(i - plane * per_plane);
        const unsigned oy = r / wo, ox = r - oy * wo;
        const mtc_taps ty = mtc_bilinear_taps(oy, h, sy), tx = mtc_bilinear_taps(ox, w, sx);
        const float* p = x + plane * h * w;
        const mtc_u64 r0 = (mtc_u64)ty.i0 * w, r1 = (mtc_u64)ty.i1 * w;
        const float top = __fadd_rn(__fmul_rn(tx.l0, p[r0 + tx.i0]), __fmul_rn(tx.l1, p[r0 + tx.i1]));
        const float bottom = __fadd_rn(__fmul_rn(tx.l0, p[r1 + tx.i0]), __fmul_rn(tx.l1, p[r1 + tx.i1]));
        y[i] = __fadd_rn(__fmul_rn(ty.l0, top), __fmul_rn(ty.l1, bottom));
    }
}

// dx[p, iy, ix] = sum over the outputs (oy, ox) that read it of (ly * lx) * dy[oy, ox], in the CPU's
// order: outputs row-major, and per output the taps (y0, x0), (y0, x1), (y1, x0), (y1, x1). Only
// outputs with y0 in {iy - 1, iy} (and likewise x0) can read (iy, ix), since y1 is y0 or y0 + 1.
extern "C" __global__ void upsample_bilinear_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                                      mtc_u64 planes, unsigned h, unsigned w,
                                                      unsigned ho, unsigned wo) {
    const float sy = __fdiv_rn((float)h, (float)ho), sx = __fdiv_rn((float)w, (float)wo);
    const mtc_u64 per_plane = (mtc_u64)h * w;
    MTC_GRID_STRIDE(j, planes * per_plane) {
        const mtc_u64 plane = j / per_plane;
        const unsigned r = (unsigned)(j - plane * per_plane);
        const unsigned iy = r / w, ix = r - iy * w;
        const unsigned oy0 = mtc_taps_lower_bound(iy > 0 ? iy - 1 : 0, h, ho, sy);
        const unsigned oy1 = mtc_taps_lower_bound(iy + 1, h, ho, sy);
        const unsigned ox0 = mtc_taps_lower_bound(ix > 0 ? ix - 1 : 0, w, wo, sx);
        const unsigned ox1 = mtc_taps_lower_bound(ix + 1, w, wo, sx);
        float acc = 0.0f;
        for (unsigned oy = oy0; oy < oy1; ++oy) {
            const mtc_taps ty = mtc_bilinear_taps(oy, h, sy);
            const bool top = ty.i0 == iy, bottom = ty.i1 == iy;
            if (!top && !bottom) continue;
            const float* g_row = dy + (plane * ho + oy) * wo;
            for (unsigned ox = ox0; ox < ox1; ++ox) {
                const mtc_taps tx = mtc_bilinear_taps(ox, w, sx);
                const bool left = tx.i0 == ix, right = tx.i1 == ix;
                if (!left && !right) continue;
                const float g = g_row[ox];
                if (top && left) acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(ty.l0, tx.l0), g));
                if (top && right) acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(ty.l0, tx.l1), g));
                if (bottom && left) acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(ty.l1, tx.l0), g));
                if (bottom && right) acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(ty.l1, tx.l1), g));
            }
        }
        dx[j] = acc;
    }
}
