// nvcuda::wmma for the emulated device, the subset kernels/sgemm.cuh uses: m16n16k8 TF32 fragments
// with f32 accumulators. On a card a fragment is spread over the 32 lanes of a warp in an unspecified
// layout; here every lane holds the whole tile (row-major in x[]), which is a legal layout for code
// that, like ours, only touches fragments elementwise or through the *_sync calls. mma_sync reads
// its operands as TF32 (the low 13 mantissa bits dropped, as the tensor cores do) and accumulates in
// f32, k ascending.
#pragma once

#include "cuda_emu.h"

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

template <class Use, int M, int N, int K>
struct mtc_shape {
    static constexpr int rows = M, cols = N;  // accumulator
};
template <int M, int N, int K>
struct mtc_shape<matrix_a, M, N, K> {
    static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct mtc_shape<matrix_b, M, N, K> {
    static constexpr int rows = K, cols = N;
};

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static constexpr int rows = mtc_shape<Use, M, N, K>::rows;
    static constexpr int cols = mtc_shape<Use, M, N, K>::cols;
    static constexpr int num_elements = rows * cols;
    float x[rows * cols];
};

// Round to the nearest TF32 value, ties away from zero (cvt.rna.tf32.f32).
inline float __float_to_tf32(float v) {
    if (!std::isfinite(v)) return v;
    uint32_t b;
    memcpy(&b, &v, 4);
    b = (b + 0x1000u) & 0xffffe000u;
    memcpy(&v, &b, 4);
    return v;
}

inline float mtc_tf32_operand(float v) {
    if (!std::isfinite(v)) return v;
    uint32_t b;
    memcpy(&b, &v, 4);
    b &= 0xffffe000u;
    memcpy(&v, &b, 4);
    return v;
}

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
    for (int e = 0; e < f.num_elements; ++e) f.x[e] = v;
}

template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major>& f, const float* p, unsigned ldm) {
    for (int r = 0; r < f.rows; ++r)
        for (int c = 0; c < f.cols; ++c) f.x[r * f.cols + c] = p[(size_t)r * ldm + c];
}
template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major>& f, const float* p, unsigned ldm) {
    for (int r = 0; r < f.rows; ++r)
        for (int c = 0; c < f.cols; ++c) f.x[r * f.cols + c] = p[(size_t)c * ldm + r];
}

template <int M, int N, int K, class T>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                              layout_t layout) {
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) {
            const size_t at = layout == mem_row_major ? (size_t)r * ldm + c : (size_t)c * ldm + r;
            p[at] = f.x[r * N + c];
        }
}

template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
inline void mma_sync(fragment<accumulator, M, N, K, TC>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
                     const fragment<matrix_b, M, N, K, TB, LB>& b,
                     const fragment<accumulator, M, N, K, TC>& c) {
    float out[M * N];
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float acc = c.x[i * N + j];
            for (int k = 0; k < K; ++k)
                acc = fmaf(mtc_tf32_operand(a.x[i * K + k]), mtc_tf32_operand(b.x[k * N + j]), acc);
            out[i * N + j] = acc;
        }
    memcpy(d.x, out, sizeof out);
}
}  // namespace wmma
}  // namespace nvcuda
