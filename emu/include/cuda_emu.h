// The device side of the emulated CUDA device: what kernels/*.cu needs from CUDA, as plain C++17, so
// that g++ compiles the project's own kernel source for the host (emu/README.md). Force-included
// (-include) before every kernel file; never used by nvcc.
//
// A GPU thread is a fiber (emu/exec.cpp). threadIdx is the running fiber's, blockIdx / blockDim /
// gridDim the running block's; both live behind thread-local pointers of the worker (OS) thread,
// which runs one block at a time, so `__shared__` is a thread-local static: one instance per running
// block, as on the card.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cmath>

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

namespace mtc_emu {
struct ThreadState {
    uint3 idx;
    unsigned lane;  // flat thread index % 32
};
struct BlockState {
    uint3 idx;
    dim3 dim;
    dim3 grid;
};
// Set by the scheduler on every switch. (Not initial-exec TLS: the shared-memory statics make the
// TLS block too large for the static TLS space a dlopen-ed library may use.)
extern thread_local ThreadState* cur_thread;
extern thread_local BlockState* cur_block;

void block_barrier();                 // __syncthreads
void warp_barrier(unsigned mask);     // __syncwarp, and both halves of a shuffle
uint64_t* warp_slots();               // the running warp's 32 exchange slots
[[noreturn]] void fault(const char* what);  // ends the launch with an error naming `what`
}  // namespace mtc_emu

#define threadIdx (mtc_emu::cur_thread->idx)
#define blockIdx (mtc_emu::cur_block->idx)
#define blockDim (mtc_emu::cur_block->dim)
#define gridDim (mtc_emu::cur_block->grid)
#define warpSize 32

#if defined(MTC_EMU_SCAN)
// build.rs preprocesses the kernels in this mode to list them (emu/build.rs): each kernel is marked,
// with its launch bounds.
#define __global__ mtc_emu_kernel_mark
#define __launch_bounds__(...) mtc_emu_launch_bounds(__VA_ARGS__)
#else
#define __global__
#define __launch_bounds__(...)
#endif
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__ static const

inline void __syncthreads() { mtc_emu::block_barrier(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { mtc_emu::warp_barrier(mask); }

// A shuffle: every lane of `mask` publishes its value, waits for the others, reads lane `src`'s, and
// waits again so that no slot is overwritten before every lane has read it.
template <class T>
inline T mtc_emu_exchange(unsigned mask, T v, unsigned src) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
    uint64_t* slots = mtc_emu::warp_slots();
    const unsigned lane = mtc_emu::cur_thread->lane;
    memcpy(&slots[lane], &v, sizeof(T));
    mtc_emu::warp_barrier(mask);
    T r;
    memcpy(&r, &slots[src], sizeof(T));
    mtc_emu::warp_barrier(mask);
    return r;
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    const unsigned lane = mtc_emu::cur_thread->lane;
    unsigned src = lane ^ (unsigned)lane_mask;
    if ((src & ~(unsigned)(width - 1)) != (lane & ~(unsigned)(width - 1))) src = lane;
    return mtc_emu_exchange(mask, v, src);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const unsigned lane = mtc_emu::cur_thread->lane;
    const unsigned seg = lane & ~(unsigned)(width - 1);
    const unsigned src = lane + delta < seg + (unsigned)width ? lane + delta : lane;
    return mtc_emu_exchange(mask, v, src);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    const unsigned lane = mtc_emu::cur_thread->lane;
    const unsigned seg = lane & ~(unsigned)(width - 1);
    const unsigned src = lane >= seg + delta ? lane - delta : lane;
    return mtc_emu_exchange(mask, v, src);
}
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    const unsigned lane = mtc_emu::cur_thread->lane;
    const unsigned seg = lane & ~(unsigned)(width - 1);
    return mtc_emu_exchange(mask, v, seg + ((unsigned)src_lane & (unsigned)(width - 1)));
}

// IEEE round-to-nearest arithmetic. The library is compiled with -ffp-contract=off, so none of these
// (nor any other expression) is fused into an FMA; fmaf / __fmaf_rn / __fma_rn are the only FMAs.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }

template <class To, class From>
inline To mtc_emu_bits(From v) {
    static_assert(sizeof(To) == sizeof(From), "same size");
    To t;
    memcpy(&t, &v, sizeof t);
    return t;
}
inline float __int_as_float(int v) { return mtc_emu_bits<float>(v); }
inline int __float_as_int(float f) { return mtc_emu_bits<int>(f); }
inline double __longlong_as_double(long long v) { return mtc_emu_bits<double>(v); }
inline long long __double_as_longlong(double d) { return mtc_emu_bits<long long>(d); }

// CUDA's integer and float min / max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

using std::isinf;
using std::isnan;
