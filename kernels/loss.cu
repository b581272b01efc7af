// Losses and whole-tensor reductions; CPU references: src/backend/cpu/loss.rs (softmax cross-entropy,
// soft Dice) and src/backend/cpu/elementwise.rs (sum_all, mean_all).
//
// Classes sit on dim 1 of an [n, c, inner] tensor; item i = b * inner + s (targets in (n, h, w) order)
// reads class ch at (b * c + ch) * inner + s. Per-item work runs one thread per item (grid-stride);
// softmax and log-sum-exp are evaluated in double like the CPU reference. An out-of-range target makes
// that item's outputs NaN (the kernels cannot report errors, and NaN is loud).
//
// Reductions never use atomics: per-item values go to a double scratch array, which
// reduce_sum_f64_chunks / reduce_sum_finish sum in fixed chunks of MTC_REDUCE_CHUNK (the same constant
// as REDUCE_CHUNK in src/backend/cuda/loss.rs), so the result depends only on the data and the sizes,
// not on the GPU's SM count or on timing. Per-channel sums (soft Dice) run one block per channel.
// Every kernel with a block reduction needs blockDim.x to be a multiple of 32 and at most 1024;
// reduce_sum_finish and soft_dice_loss must be launched with a single block.
#include "common.cuh"
#include "reduce.cuh"

#define MTC_REDUCE_CHUNK 4096ull

// partials[k] = sum of x[k * CHUNK .. min((k + 1) * CHUNK, n)), one block per chunk (grid-stride).
template <typename T>
__device__ __forceinline__ void mtc_reduce_chunks(double* __restrict__ partials, const T* __restrict__ x,
                                                  mtc_u64 n) {
    __shared__ double scratch[32];
    for (mtc_u64 chunk = blockIdx.x; chunk * MTC_REDUCE_CHUNK < n; chunk += gridDim.x) {
        const mtc_u64 start = chunk * MTC_REDUCE_CHUNK;
        const mtc_u64 end = start + MTC_REDUCE_CHUNK < n ? start + MTC_REDUCE_CHUNK : n;
        double acc = 0.0;
        for (mtc_u64 j = start + threadIdx.x; j < end; j += blockDim.x) acc += (double)x[j];
        acc = mtc_block_sum1(acc, scratch);
        if (threadIdx.x == 0) partials[chunk] = acc;
    }
}

extern "C" __global__ void reduce_sum_f32_chunks(double* __restrict__ partials,
                                                 const float* __restrict__ x, mtc_u64 n) {
    mtc_reduce_chunks<float>(partials, x, n);
}

extern "C" __global__ void reduce_sum_f64_chunks(double* __restrict__ partials,
                                                 const double* __restrict__ x, mtc_u64 n) {
    mtc_reduce_chunks<double>(partials, x, n);
}

// One block: r = sum(x[0..n)) / (divisor ? *divisor : denom); out (f32) and out64 (f64) receive r,
// each only when non-null.
extern "C" __global__ void reduce_sum_finish(float* __restrict__ out, double* __restrict__ out64,
                                             const double* __restrict__ x, mtc_u64 n,
                                             const double* __restrict__ divisor, double denom) {
    __shared__ double scratch[32];
    double acc = 0.0;
    for (mtc_u64 j = threadIdx.x; j < n; j += blockDim.x) acc += x[j];
    acc = mtc_block_sum1(acc, scratch);
    if (threadIdx.x == 0) {
        const double r = acc / (divisor != nullptr ? *divisor : denom);
        if (out != nullptr) *out = (float)r;
        if (out64 != nullptr) *out64 = r;
    }
}

// The class weight of item i's target (1 without class weights; NaN for an out-of-range target).
__device__ __forceinline__ double mtc_item_weight(const float* __restrict__ class_weights, unsigned y,
                                                  mtc_u64 c) {
    if ((mtc_u64)y >= c) return __longlong_as_double(0x7ff8000000000000ll);
    return class_weights != nullptr ? (double)class_weights[y] : 1.0;
}

// item_w[i] = w[targets[i]]: summed by the reductions into the weighted mean's denominator.
extern "C" __global__ void cross_entropy_item_weights(double* __restrict__ item_w,
                                                      const unsigned* __restrict__ targets,
                                                      const float* __restrict__ class_weights,
                                                      mtc_u64 items, mtc_u64 c) {
    MTC_GRID_STRIDE(i, items) { item_w[i] = mtc_item_weight(class_weights, targets[i], c); }
}

// Max over the classes of one item (f32 max ignoring NaN, like the CPU's fold with f32::max), and the
// double sum of exp(z - max).
__device__ __forceinline__ void mtc_softmax_stats(const float* __restrict__ z, mtc_u64 c, mtc_u64 inner,
                                                  double* max_out, double* denom_out) {
    float mx = -INFINITY;
    for (mtc_u64 ch = 0; ch < c; ++ch) mx = fmaxf(mx, z[ch * inner]);
    const double m = (double)mx;
    double denom = 0.0;
    for (mtc_u64 ch = 0; ch < c; ++ch) denom += exp((double)z[ch * inner] - m);
    *max_out = m;
    *denom_out = denom;
}

// probs = softmax over dim 1, one thread per item.
extern "C" __global__ void softmax_dim1(float* __restrict__ probs, const float* __restrict__ logits,
                                        mtc_u64 n, mtc_u64 c, mtc_u64 inner) {
    MTC_GRID_STRIDE(i, n * inner) {
        const mtc_u64 b = i / inner, base = b * c * inner + (i - b * inner);
        double m, denom;
        mtc_softmax_stats(logits + base, c, inner, &m, &denom);
        for (mtc_u64 ch = 0; ch < c; ++ch) {
            const mtc_u64 at = base + ch * inner;
            probs[at] = (float)(exp((double)logits[at] - m) / denom);
        }
    }
}

// Writes NaN over item (base)'s classes and its nll: what an out-of-range target produces.
__device__ __forceinline__ void mtc_poison_item(float* __restrict__ out, double* __restrict__ nll,
                                                mtc_u64 base, mtc_u64 c, mtc_u64 inner) {
    for (mtc_u64 ch = 0; ch < c; ++ch) out[base + ch * inner] = __int_as_float(0x7fc00000);
    *nll = __longlong_as_double(0x7ff8000000000000ll);
}

// Per item: probs = softmax, item_nll[i] = w[y] * (logsumexp(z) - z[y]). The loss is
// sum(item_nll) / sum(item_w), finished by the reductions.
extern "C" __global__ void softmax_cross_entropy_forward(float* __restrict__ probs,
                                                         double* __restrict__ item_nll,
                                                         const float* __restrict__ logits,
                                                         const unsigned* __restrict__ targets,
                                                         const float* __restrict__ class_weights,
                                                         mtc_u64 n, mtc_u64 c, mtc_u64 inner) {
    MTC_GRID_STRIDE(i, n * inner) {
        const mtc_u64 b = i / inner, base = b * c * inner + (i - b * inner);
        const unsigned y = targets[i];
        if ((mtc_u64)y >= c) {
            mtc_poison_item(probs, item_nll + i, base, c, inner);
            continue;
        }
        double m, denom;
        mtc_softmax_stats(logits + base, c, inner, &m, &denom);
        const double w = mtc_item_weight(class_weights, y, c);
        item_nll[i] = w * (m + log(denom) - (double)logits[base + (mtc_u64)y * inner]);
        for (mtc_u64 ch = 0; ch < c; ++ch) {
            const mtc_u64 at = base + ch * inner;
            probs[at] = (float)(exp((double)logits[at] - m) / denom);
        }
    }
}

// Fused forward + backward in one pass over the logits: item_nll as in the forward and
// dlogits = dloss * w[y] * (p - onehot(y)) / weight_sum, weight_sum (device, one double) computed first.
extern "C" __global__ void softmax_cross_entropy_fused(float* __restrict__ dlogits,
                                                       double* __restrict__ item_nll,
                                                       const float* __restrict__ logits,
                                                       const unsigned* __restrict__ targets,
                                                       const float* __restrict__ class_weights,
                                                       const double* __restrict__ weight_sum,
                                                       float dloss, mtc_u64 n, mtc_u64 c,
                                                       mtc_u64 inner) {
    const double wsum = *weight_sum;
    MTC_GRID_STRIDE(i, n * inner) {
        const mtc_u64 b = i / inner, base = b * c * inner + (i - b * inner);
        const unsigned y = targets[i];
        if ((mtc_u64)y >= c) {
            mtc_poison_item(dlogits, item_nll + i, base, c, inner);
            continue;
        }
        double m, denom;
        mtc_softmax_stats(logits + base, c, inner, &m, &denom);
        const double w = mtc_item_weight(class_weights, y, c);
        item_nll[i] = w * (m + log(denom) - (double)logits[base + (mtc_u64)y * inner]);
        const double k = (double)dloss * w / wsum;
        for (mtc_u64 ch = 0; ch < c; ++ch) {
            const mtc_u64 at = base + ch * inner;
            const double p = exp((double)logits[at] - m) / denom;
            dlogits[at] = (float)(k * (p - (ch == (mtc_u64)y ? 1.0 : 0.0)));
        }
    }
}

// dx = dloss * w[y] * (p - onehot(y)) / weight_sum, elementwise over all n * c * inner elements.
extern "C" __global__ void softmax_cross_entropy_backward(float* __restrict__ dx,
                                                          const float* __restrict__ probs,
                                                          const unsigned* __restrict__ targets,
                                                          const float* __restrict__ class_weights,
                                                          const double* __restrict__ weight_sum,
                                                          float dloss, mtc_u64 n, mtc_u64 c,
                                                          mtc_u64 inner) {
    const double wsum = *weight_sum;
    const mtc_u64 per_sample = c * inner;
    MTC_GRID_STRIDE(i, n * per_sample) {
        const mtc_u64 b = i / per_sample, rem = i - b * per_sample;
        const mtc_u64 ch = rem / inner, s = rem - ch * inner;
        const unsigned y = targets[b * inner + s];
        const double k = (double)dloss * mtc_item_weight(class_weights, y, c) / wsum;
        dx[i] = (float)(k * ((double)probs[i] - (ch == (mtc_u64)y ? 1.0 : 0.0)));
    }
}

// Per channel ch: sums[ch] = sum(p * t), sums[c + ch] = sum(p), sums[2c + ch] = sum(t) over n and
// inner, one block per channel (grid-stride over channels).
extern "C" __global__ void soft_dice_sums(double* __restrict__ sums, const float* __restrict__ probs,
                                          const float* __restrict__ target, mtc_u64 n, mtc_u64 c,
                                          mtc_u64 inner) {
    __shared__ double scratch[96];
    for (mtc_u64 ch = blockIdx.x; ch < c; ch += gridDim.x) {
        double v[3] = {0.0, 0.0, 0.0};
        for (mtc_channel_walk w(inner); w.b < n; w.next(inner)) {
            const mtc_u64 i = w.at(c, inner, ch);
            const double p = (double)probs[i], t = (double)target[i];
            v[0] += p * t;
            v[1] += p;
            v[2] += t;
        }
        mtc_block_sum<3>(v, scratch);
        if (threadIdx.x == 0) {
            sums[ch] = v[0];
            sums[c + ch] = v[1];
            sums[2 * c + ch] = v[2];
        }
    }
}

// One block: loss = 1 - mean over channels of (2 * sum(p t) + eps) / (sum(p) + sum(t) + eps).
extern "C" __global__ void soft_dice_loss(float* __restrict__ loss, const double* __restrict__ sums,
                                          mtc_u64 c, float eps) {
    __shared__ double scratch[32];
    const double e = (double)eps;
    double acc = 0.0;
    for (mtc_u64 ch = threadIdx.x; ch < c; ch += blockDim.x) {
        acc += (2.0 * sums[ch] + e) / (sums[c + ch] + sums[2 * c + ch] + e);
    }
    acc = mtc_block_sum1(acc, scratch);
    if (threadIdx.x == 0) *loss = (float)(1.0 - acc / (double)c);
}

// dloss/dp of channel ch at one element: -dloss / c * (2 t / S - D / S), S = sum p + sum t + eps,
// D = (2 sum(p t) + eps) / S.
__device__ __forceinline__ double mtc_dice_grad(const double* __restrict__ sums, mtc_u64 c, mtc_u64 ch,
                                                double t, double e, double k) {
    const double s = sums[c + ch] + sums[2 * c + ch] + e;
    const double d = (2.0 * sums[ch] + e) / s;
    return k * (2.0 * t / s - d / s);
}

// dlogits of soft Dice, one thread per item. multiclass = 0 (Binary, sigmoid):
// dx = g * p * (1 - p); multiclass = 1 (softmax): dx[ch] = p[ch] * (g[ch] - sum_k p[k] g[k]).
extern "C" __global__ void soft_dice_backward(float* __restrict__ dx, const float* __restrict__ probs,
                                              const float* __restrict__ target,
                                              const double* __restrict__ sums, mtc_u64 n, mtc_u64 c,
                                              mtc_u64 inner, float eps, float dloss, int multiclass) {
    const double e = (double)eps, k = -(double)dloss / (double)c;
    MTC_GRID_STRIDE(i, n * inner) {
        const mtc_u64 b = i / inner, base = b * c * inner + (i - b * inner);
        double dot = 0.0;
        if (multiclass) {
            for (mtc_u64 ch = 0; ch < c; ++ch) {
                const mtc_u64 at = base + ch * inner;
                dot += (double)probs[at] * mtc_dice_grad(sums, c, ch, (double)target[at], e, k);
            }
        }
        for (mtc_u64 ch = 0; ch < c; ++ch) {
            const mtc_u64 at = base + ch * inner;
            const double p = (double)probs[at];
            const double g = mtc_dice_grad(sums, c, ch, (double)target[at], e, k);
            dx[at] = multiclass ? (float)(p * (g - dot)) : (float)(g * p * (1.0 - p));
        }
    }
}

// hit[i] = 1 when item i's arg-max over the classes equals its label, else 0; the reductions sum it into
// the step's correct count. Arg-max as src/backend/cpu/loss.rs `count_correct`: the first maximum, by a
// strict `>` (a NaN never replaces the current best).
extern "C" __global__ void count_correct(double* __restrict__ hit, const float* __restrict__ logits,
                                         const unsigned* __restrict__ labels, mtc_u64 n, mtc_u64 c,
                                         mtc_u64 inner) {
    MTC_GRID_STRIDE(i, n * inner) {
        const mtc_u64 b = i / inner, base = b * c * inner + (i - b * inner);
        mtc_u64 best = 0;
        for (mtc_u64 ch = 1; ch < c; ++ch)
            if (logits[base + ch * inner] > logits[base + best * inner]) best = ch;
        hit[i] = best == (mtc_u64)labels[i] ? 1.0 : 0.0;
    }
}
