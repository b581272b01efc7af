// 2-d convolution as implicit GEMM (no im2col buffer); CPU reference: src/backend/cpu/conv.rs
// (conv2d_forward, conv2d_backward_data, conv2d_backward_weight; conv_transpose2d_* reuse these
// three kernels exactly as the CPU code does). NCHW, w: [Co, Ci, kh, kw], stride s, zero padding p.
// The tile loop (64 x 64 tiles, 4 x 4 per thread, k slabs of 16 in shared memory) is
// kernels/igemm.cuh; here are the loaders that read the operands through the convolution windows.
//
//   forward          y[n, co, q]  = sum over r = (ci, ky, kx) of w[co, r] . x[n, ci, window(q, r)]
//                    GEMM M = Co, N = batch . Ho . Wo (column q = (n, oy, ox)), K = Ci . kh . kw
//   backward data    dx[n, ci, q] = sum over r = (co, ky, kx) of w[co, ci, ky, kx] . dy[n, co, o]
//                    where o . s + k - p = i; GEMM M = Ci, N = batch . H . W, K = Co . kh . kw
//   backward weight  dw[co, r]    = sum over q = (n, oy, ox) of dy[n, co, oy, ox] . x[n, ci, window]
//                    GEMM M = Co, N = Ci . kh . kw, K = batch . Ho . Wo, split over blockIdx.z
//
// Launch: blockDim 256, grid (ceil(N / 64), ceil(M / 64), splits). Every output element is written.
// The weight gradient never uses float atomics: split z writes its own partial tile to a workspace
// [splits, Co, Ci kh kw], and conv2d_backward_weight_reduce adds the partials in split order.
#include "common.cuh"
#include "igemm.cuh"

// Geometry of one convolution; the layout matches the #[repr(C)] Rust struct ConvGeom in
// src/backend/cuda/conv.rs (11 ints). x: [n, ci, h, w], weight [co, ci, kh, kw], y: [n, co, ho, wo].
struct MtcConvGeom {
    int n, ci, h, w;
    int co, kh, kw;
    int ho, wo;
    int stride, pad;
};

// Forward B(r, q) = x[n, ci, oy s + ky - p, ox s + kx - p] (0 in the padding), r = (ci, ky, kx),
// q = (n, oy, ox). o-fast pattern: the thread's column q = n0 + tid % 64 is fixed, decoded once.
struct MtcConvFwdB {
    const float* x;
    int h, w, khkw, kw;
    int base, iy0, ix0;  // image offset, window origin; base < 0: column out of range
    __device__ __forceinline__ MtcConvFwdB(const float* x_, const MtcConvGeom& g, int n0)
        : x(x_), h(g.h), w(g.w), khkw(g.kh * g.kw), kw(g.kw) {
        const int q = n0 + (threadIdx.x & 63);
        const int hw = g.ho * g.wo;
        const int img = q / hw, pix = q - img * hw;
        const int oy = pix / g.wo, ox = pix - oy * g.wo;
        base = q < g.n * hw ? img * g.ci * g.h * g.w : -1;
        iy0 = oy * g.stride - g.pad;
        ix0 = ox * g.stride - g.pad;
    }
    __device__ __forceinline__ void load(float (&r)[4], int k0, int kend) const {
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int k = k0 + (threadIdx.x >> 6) + 4 * l;
            float v = 0.0f;
            if (base >= 0 && k < kend) {
                const int c = k / khkw, t = k - c * khkw;
                const int ky = t / kw, kx = t - ky * kw;
                const int iy = iy0 + ky, ix = ix0 + kx;
                if ((unsigned)iy < (unsigned)h && (unsigned)ix < (unsigned)w)
                    v = x[base + (c * h + iy) * w + ix];
            }
            r[l] = v;
        }
    }
    template <int LD>
    __device__ __forceinline__ void store(float (*S)[LD], const float (&r)[4]) const {
        mtc_store_ofast<LD>(S, r);
    }
};

// Backward-data A(ci, r) = w[co, ci, ky, kx], r = (co, t = ky kw + kx). k-fast pattern: the
// thread's k = k0 + tid % 16 is decoded once per slab, its 4 rows are ci = m0 + tid / 16 + 16 l.
struct MtcConvBwdDataA {
    const float* wt;
    int ci_n, khkw, m0;
    __device__ __forceinline__ void load(float (&r)[4], int k0, int kend) const {
        const int k = k0 + (threadIdx.x & 15);
        const int co = k / khkw, t = k - co * khkw;
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int ci = m0 + (threadIdx.x >> 4) + 16 * l;
            r[l] = (ci < ci_n && k < kend) ? wt[(co * ci_n + ci) * khkw + t] : 0.0f;
        }
    }
    template <int LD>
    __device__ __forceinline__ void store(float (*S)[LD], const float (&r)[4]) const {
        mtc_store_kfast<LD>(S, r);
    }
};

// Backward-data B(r, q) = dy[n, co, oy, ox] where oy s + ky - p = iy and ox s + kx - p = ix (0 when
// no such in-range output exists), r = (co, ky, kx), q = (n, iy, ix) an input position. o-fast
// pattern: the thread's column q = n0 + tid % 64 is fixed, decoded once.
struct MtcConvBwdDataB {
    const float* dy;
    int khkw, kw, ho, wo, s;
    int base, ty0, tx0;  // image offset in dy (< 0: column out of range), iy + p, ix + p
    __device__ __forceinline__ MtcConvBwdDataB(const float* dy_, const MtcConvGeom& g, int n0)
        : dy(dy_), khkw(g.kh * g.kw), kw(g.kw), ho(g.ho), wo(g.wo), s(g.stride) {
        const int q = n0 + (threadIdx.x & 63);
        const int hw = g.h * g.w;
        const int img = q / hw, pix = q - img * hw;
        const int iy = pix / g.w, ix = pix - iy * g.w;
        base = q < g.n * hw ? img * g.co * g.ho * g.wo : -1;
        ty0 = iy + g.pad;
        tx0 = ix + g.pad;
    }
    __device__ __forceinline__ void load(float (&r)[4], int k0, int kend) const {
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int k = k0 + (threadIdx.x >> 6) + 4 * l;
            float v = 0.0f;
            if (base >= 0 && k < kend) {
                const int co = k / khkw, t = k - co * khkw;
                const int ky = t / kw, kx = t - ky * kw;
                const int ty = ty0 - ky, tx = tx0 - kx;  // = o s when some output o reads here
                if (ty >= 0 && tx >= 0) {
                    const int oy = ty / s, ox = tx / s;
                    if (oy * s == ty && ox * s == tx && oy < ho && ox < wo)
                        v = dy[base + (co * ho + oy) * wo + ox];
                }
            }
            r[l] = v;
        }
    }
    template <int LD>
    __device__ __forceinline__ void store(float (*S)[LD], const float (&r)[4]) const {
        mtc_store_ofast<LD>(S, r);
    }
};

// Backward-weight A(co, q) = dy[n, co, oy, ox], q = (n, oy ox). k-fast pattern.
struct MtcConvBwdWeightA {
    const float* dy;
    int co_n, hw, m0;
    __device__ __forceinline__ void load(float (&r)[4], int k0, int kend) const {
        const int q = k0 + (threadIdx.x & 15);
        const int img = q / hw, pix = q - img * hw;
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int co = m0 + (threadIdx.x >> 4) + 16 * l;
            r[l] = (co < co_n && q < kend) ? dy[(img * co_n + co) * hw + pix] : 0.0f;
        }
    }
    template <int LD>
    __device__ __forceinline__ void store(float (*S)[LD], const float (&r)[4]) const {
        mtc_store_kfast<LD>(S, r);
    }
};

// Backward-weight B(q, r) = x[n, ci, oy s + ky - p, ox s + kx - p], q = (n, oy, ox) the GEMM depth,
// r = (ci, ky, kx) the column. k-fast pattern: the thread's 4 columns r = n0 + tid / 16 + 16 l are
// fixed (decoded once), its q = k0 + tid % 16 is decoded once per slab.
struct MtcConvBwdWeightB {
    const float* x;
    int h, w, ho, wo, s, p, chw;
    int choff[4], ky[4], kx[4];  // choff < 0: column out of range
    __device__ __forceinline__ MtcConvBwdWeightB(const float* x_, const MtcConvGeom& g, int n0)
        : x(x_), h(g.h), w(g.w), ho(g.ho), wo(g.wo), s(g.stride), p(g.pad), chw(g.ci * g.h * g.w) {
        const int khkw = g.kh * g.kw, n_cols = g.ci * khkw;
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int r = n0 + (threadIdx.x >> 4) + 16 * l;
            const int c = r / khkw, t = r - c * khkw;
            ky[l] = t / g.kw;
            kx[l] = t - ky[l] * g.kw;
            choff[l] = r < n_cols ? c * g.h * g.w : -1;
        }
    }
    __device__ __forceinline__ void load(float (&r)[4], int k0, int kend) const {
        const int q = k0 + (threadIdx.x & 15);
        const int hw = ho * wo;
        const int img = q / hw, pix = q - img * hw;
        const int oy = pix / wo, ox = pix - oy * wo;
        const int iy0 = oy * s - p, ix0 = ox * s - p;
        const int base = img * chw;
#pragma unroll
        for (int l = 0; l < 4; ++l) {
            const int iy = iy0 + ky[l], ix = ix0 + kx[l];
            float v = 0.0f;
            if (choff[l] >= 0 && q < kend && (unsigned)iy < (unsigned)h && (unsigned)ix < (unsigned)w)
                v = x[base + choff[l] + iy * w + ix];
            r[l] = v;
        }
    }
    template <int LD>
    __device__ __forceinline__ void store(float (*S)[LD], const float (&r)[4]) const {
        mtc_store_kfast<LD>(S, r);
    }
};

__device__ __forceinline__ void mtc_zero_acc(float (&acc)[4][4]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    }
}

// Stores acc rows (channels ch < n_ch) and columns (positions q = (n, pix) < batch . hw) into an
// [batch, n_ch, hw] tensor, adding bias[ch] (perturbed by epsilon(b_offset + ch) when NOISY).
template <bool NOISY>
__device__ __forceinline__ void mtc_conv_epilogue(float* __restrict__ out, const float (&acc)[4][4],
                                                  const float* __restrict__ bias, int has_bias,
                                                  int n_ch, int batch, int hw, const MtcNoise& nz) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    const int m0 = blockIdx.y * MTC_BM, n0 = blockIdx.x * MTC_BN;
    float bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int ch = m0 + ty + 16 * i;
        bv[i] = 0.0f;
        if (has_bias && ch < n_ch) {
            bv[i] = bias[ch];
            if (NOISY) bv[i] = mtc_noisy(bv[i], nz, nz.b_offset + (unsigned)ch);
        }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int q = n0 + tx + 16 * j;
        if (q >= batch * hw) continue;
        const int img = q / hw, pix = q - img * hw;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int ch = m0 + ty + 16 * i;
            if (ch < n_ch) out[(img * n_ch + ch) * hw + pix] = acc[i][j] + bv[i];
        }
    }
}

template <bool NOISY>
__device__ __forceinline__ void mtc_conv2d_forward(float* __restrict__ y, const float* __restrict__ x,
                                                   const float* __restrict__ w,
                                                   const float* __restrict__ bias, int has_bias,
                                                   const MtcConvGeom& g, const MtcNoise& nz) {
    const int m0 = blockIdx.y * MTC_BM, n0 = blockIdx.x * MTC_BN;
    const int k = g.ci * g.kh * g.kw;
    // A(co, r) = w[co * K + r]: the weight as a dense [Co, K] matrix (noise index = flat index).
    const MtcDense<true, NOISY> la{w, g.co, k, m0, nz};
    const MtcConvFwdB lb(x, g, n0);
    float acc[4][4];
    mtc_zero_acc(acc);
    mtc_gemm_mainloop(la, lb, 0, k, acc);
    mtc_conv_epilogue<NOISY>(y, acc, bias, has_bias, g.co, g.n, g.ho * g.wo, nz);
}

// y = conv(x, w) (+ bias): x [n, ci, h, w], w [co, ci, kh, kw], bias [co] (read when has_bias).
extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)
    conv2d_forward(float* __restrict__ y, const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ bias, int has_bias, MtcConvGeom g) {
    const MtcNoise nz = {0, 0, 0, 0, 0.0f, 0, 0};
    mtc_conv2d_forward<false>(y, x, w, bias, has_bias, g, nz);
}

// y = conv(x, w + eps_w) (+ bias + eps_b) with eps_w[i] = epsilon(nz.w_offset + i) for the flat
// index i of w and eps_b[co] = epsilon(nz.b_offset + co), added as the weights are read (no
// perturbed copy of theta). Equals conv2d_forward(x, perturb(w), perturb(bias)) up to f32 rounding.
extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)
    conv2d_forward_noisy(float* __restrict__ y, const float* __restrict__ x,
                         const float* __restrict__ w, const float* __restrict__ bias, int has_bias,
                         MtcConvGeom g, MtcNoise nz) {
    mtc_conv2d_forward<true>(y, x, w, bias, has_bias, g, nz);
}

// dx = the data gradient of conv(x, w) for dy [n, co, ho, wo] (+ bias[ci] when has_bias, which
// makes this the transposed convolution's forward). Input pixels no window reads get 0 (+ bias).
extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)
    conv2d_backward_data(float* __restrict__ dx, const float* __restrict__ dy,
                         const float* __restrict__ w, const float* __restrict__ bias, int has_bias,
                         MtcConvGeom g) {
    const int m0 = blockIdx.y * MTC_BM, n0 = blockIdx.x * MTC_BN;
    const int khkw = g.kh * g.kw;
    const MtcConvBwdDataA la{w, g.ci, khkw, m0};
    const MtcConvBwdDataB lb(dy, g, n0);
    float acc[4][4];
    mtc_zero_acc(acc);
    mtc_gemm_mainloop(la, lb, 0, g.co * khkw, acc);
    const MtcNoise nz = {0, 0, 0, 0, 0.0f, 0, 0};
    mtc_conv_epilogue<false>(dx, acc, bias, has_bias, g.ci, g.n, g.h * g.w, nz);
}

// Partial weight gradients: split z = blockIdx.z sums q in [z . k_split, min(K, (z + 1) k_split))
// (K = n . ho . wo) and writes part[z, co, r] (part: [gridDim.z, co, ci kh kw]). With one split,
// part is dw itself.
extern "C" __global__ void __launch_bounds__(MTC_GEMM_THREADS)
    conv2d_backward_weight(float* __restrict__ part, const float* __restrict__ dy,
                           const float* __restrict__ x, MtcConvGeom g, int k_split) {
    const int m0 = blockIdx.y * MTC_BM, n0 = blockIdx.x * MTC_BN;
    const int hw = g.ho * g.wo, k = g.n * hw;
    const int n_cols = g.ci * g.kh * g.kw;
    const int kbeg = blockIdx.z * k_split;
    const int kend = min(k, kbeg + k_split);
    const MtcConvBwdWeightA la{dy, g.co, hw, m0};
    const MtcConvBwdWeightB lb(x, g, n0);
    float acc[4][4];
    mtc_zero_acc(acc);
    mtc_gemm_mainloop(la, lb, kbeg, kend, acc);
    float* out = part + blockIdx.z * g.co * n_cols;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int row = m0 + ty + 16 * i;
        if (row >= g.co) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int col = n0 + tx + 16 * j;
            if (col < n_cols) out[row * n_cols + col] = acc[i][j];
        }
    }
}

// dw[i] = part[0, i] + part[1, i] + ... + part[splits - 1, i], in that order (deterministic).
extern "C" __global__ void conv2d_backward_weight_reduce(float* __restrict__ dw,
                                                         const float* __restrict__ part, int splits,
                                                         int len) {
    MTC_GRID_STRIDE(i, len) {
        float s = part[i];
        for (int z = 1; z < splits; ++z) s += part[(mtc_u64)z * len + i];
        dw[i] = s;
    }
}
