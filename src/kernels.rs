//! The compiled CUDA kernels embedded in this binary, and ptxas's resource report for each of them.
//!
//! `build.rs` compiles every `kernels/*.cu` into one fatbin (SASS for sm_80 and sm_90, PTX for
//! compute_90) when it finds nvcc; otherwise the binary is CPU only and [`kernels_available`] is false.

/// ptxas's resource usage for one kernel on one architecture (from `nvcc -Xptxas -v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    pub name: &'static str,
    /// The SASS target, e.g. "sm_90".
    pub arch: &'static str,
    pub registers: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    pub stack_bytes: u32,
    /// Static shared memory per block.
    pub shared_bytes: u32,
}

/// Keeps the embedded fatbin aligned, as the driver's module loader expects (unused without nvcc).
#[allow(dead_code)]
#[repr(C, align(64))]
struct Aligned<B: ?Sized>(B);

include!(concat!(env!("OUT_DIR"), "/kernels_gen.rs"));

/// Every kernel the fatbin must contain (`kernels/*.cu`), named like its CPU reference.
pub const KERNEL_NAMES: &[&str] = &[
    // kernels/attention.cu
    "bmm_nn",
    "bmm_nt",
    "bmm_tn",
    "bmm_tt",
    "softmax_lastdim_forward",
    "softmax_lastdim_backward",
    "sigmoid_gate_forward",
    "sigmoid_gate_backward",
    // kernels/elementwise.cu
    "add",
    "sub",
    "mul",
    "scale",
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "add_channel_bias",
    "add_channel_bias_backward",
    // kernels/noise.cu
    "noise_uniform",
    "add_noise",
    // kernels/optim.cu
    "sgd_step",
    "adam_step",
    // kernels/conv.cu
    "conv2d_forward",
    "conv2d_forward_noisy",
    "conv2d_backward_data",
    "conv2d_backward_weight",
    "conv2d_backward_weight_reduce",
    // kernels/linear.cu
    "sgemm_nn",
    "sgemm_nt",
    "sgemm_tn",
    "sgemm_tt",
    "sgemm_tf32_nn",
    "sgemm_tf32_nt",
    "sgemm_tf32_tn",
    "sgemm_tf32_tt",
    "linear_forward_noisy",
    "linear_backward_bias",
    // kernels/pool.cu
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "global_avg_pool_forward",
    "global_avg_pool_backward",
    // kernels/norm.cu
    "batch_norm_train_forward",
    "batch_norm_train_backward",
    "batch_norm_eval_forward",
    "batch_norm_eval_backward",
    "update_running_stats",
    // kernels/loss.cu
    "reduce_sum_f32_chunks",
    "reduce_sum_f64_chunks",
    "reduce_sum_finish",
    "cross_entropy_item_weights",
    "count_correct",
    "softmax_dim1",
    "softmax_cross_entropy_forward",
    "softmax_cross_entropy_fused",
    "softmax_cross_entropy_backward",
    "soft_dice_sums",
    "soft_dice_loss",
    "soft_dice_backward",
    // kernels/upsample.cu
    "upsample_nearest_forward",
    "upsample_nearest_backward",
    "upsample_bilinear_forward",
    "upsample_bilinear_backward",
    // kernels/concat.cu
    "concat_channels",
    "split_channels",
    // kernels/dropout.cu
    "dropout_mask",
    "dropout_forward",
    "dropout_backward",
    "dropout_keyed",
];

/// The architectures with real GPU code (SASS) in the fatbin; each has one report row per kernel.
pub const SASS_ARCHS: &[&str] = &["sm_80", "sm_90"];

/// The fatbin with every kernel, or `None` when this binary was built without nvcc.
pub fn fatbin() -> Option<&'static [u8]> {
    FATBIN
}

/// ptxas's report, one row per (kernel, arch), sorted by name then arch. Empty without kernels.
pub fn report() -> &'static [KernelInfo] {
    REPORT
}

/// The nvcc that compiled the kernels, e.g. "Cuda compilation tools, release 13.0, V13.0.88".
pub fn nvcc_version() -> Option<&'static str> {
    NVCC_VERSION
}

pub fn kernels_available() -> bool {
    FATBIN.is_some()
}

/// Why the kernels are missing (e.g. "MTCOOL_NO_NVCC is set"), or `None` when they were compiled.
pub fn unavailable_reason() -> Option<&'static str> {
    UNAVAILABLE_REASON
}
