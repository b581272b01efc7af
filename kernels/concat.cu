// Channel concatenation along dim 1 and its backward, the split; CPU reference:
// src/backend/cpu/concat.rs (same names). Pure copies (bit-identical).
//
// Both kernels move one part: the part is [n, cp, inner] and sits at channels [offset, offset + cp) of
// the whole [n, ctotal, inner] tensor. concat_channels is launched once per input, split_channels once
// per output, each over the part's n * cp * inner elements.
#include "common.cuh"

// Flat index in the whole tensor of element i of the part.
__device__ __forceinline__ mtc_u64 mtc_part_to_whole(mtc_u64 i, mtc_u64 part_block, mtc_u64 whole_block,
                                                     mtc_u64 offset_elems) {
    const mtc_u64 b = i / part_block;
    return b * whole_block + offset_elems + (i - b * part_block);
}

// y[:, offset : offset + cp] = x, with part_block = cp * inner, whole_block = ctotal * inner and
// offset_elems = offset * inner.
extern "C" __global__ void concat_channels(float* __restrict__ y, const float* __restrict__ x,
                                           mtc_u64 part_numel, mtc_u64 part_block,
                                           mtc_u64 whole_block, mtc_u64 offset_elems) {
    MTC_GRID_STRIDE(i, part_numel) { y[mtc_part_to_whole(i, part_block, whole_block, offset_elems)] = x[i]; }
}

// part = dy[:, offset : offset + cp], same parameters as concat_channels.
extern "C" __global__ void split_channels(float* __restrict__ part, const float* __restrict__ dy,
                                          mtc_u64 part_numel, mtc_u64 part_block,
                                          mtc_u64 whole_block, mtc_u64 offset_elems) {
    MTC_GRID_STRIDE(i, part_numel) { part[i] = dy[mtc_part_to_whole(i, part_block, whole_block, offset_elems)]; }
}
