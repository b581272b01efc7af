// Shared helpers for the kernels in this folder. build.rs compiles every kernels/*.cu as ONE
// translation unit (a generated file #including them all, sorted), so: kernels are extern "C"
// __global__ (unmangled names, unique across files, named like their CPU reference), and helpers are
// __device__ __forceinline__ with an mtc_ prefix; headers use #pragma once.
//
// Floating point: the build does not use fast-math and keeps nvcc's default -fmad=true (matrix kernels
// want FMA). Where a kernel must reproduce its CPU reference bit for bit (noise, optimiser steps) it
// spells every operation with an IEEE round-to-nearest intrinsic (__fadd_rn, __fmul_rn, __fdiv_rn,
// __fsqrt_rn, ...), which the compiler never contracts into an FMA, in the CPU code's order.
#pragma once

#include <stdint.h>

typedef unsigned long long mtc_u64;

// Grid-stride loop over [0, n) with 64-bit indices.
#define MTC_GRID_STRIDE(i, n)                                                          \
    for (mtc_u64 i = (mtc_u64)blockIdx.x * blockDim.x + threadIdx.x; i < (mtc_u64)(n); \
         i += (mtc_u64)blockDim.x * gridDim.x)
