//! CUDA driver errors as one line a user can act on: running out of GPU memory or resources, or a
//! failed kernel launch, suggests a smaller `--batch-size` instead of surfacing a bare error code.

use cudarc::driver::sys::CUresult;
use cudarc::driver::DriverError;

/// What to do about `code`, if there is advice to give.
pub fn hint(code: CUresult) -> Option<&'static str> {
    use CUresult::*;
    match code {
        CUDA_ERROR_OUT_OF_MEMORY => Some("the GPU is out of memory: try a smaller --batch-size"),
        CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => {
            Some("the GPU ran out of resources for a kernel: try a smaller --batch-size")
        }
        CUDA_ERROR_LAUNCH_FAILED | CUDA_ERROR_ILLEGAL_ADDRESS | CUDA_ERROR_LAUNCH_TIMEOUT => {
            Some("a GPU kernel failed: try a smaller --batch-size, or --device cpu")
        }
        _ => None,
    }
}

/// "`what` failed (CODE): hint" — one line (the code's name needs no driver, so this runs without a GPU).
pub fn message(what: &str, code: CUresult) -> String {
    match hint(code) {
        Some(h) => format!("{what} failed ({code:?}): {h}"),
        None => format!("{what} failed ({code:?})"),
    }
}

/// For `map_err`: the driver error of `what` as an `anyhow::Error` with [`message`]'s line.
pub fn cuda_error(what: impl std::fmt::Display) -> impl FnOnce(DriverError) -> anyhow::Error {
    move |e| anyhow::anyhow!(message(&what.to_string(), e.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_and_launch_failures_suggest_a_smaller_batch() {
        let oom = message("allocating 4096 MiB of GPU memory", CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        assert_eq!(oom, "allocating 4096 MiB of GPU memory failed (CUDA_ERROR_OUT_OF_MEMORY): the GPU is out of memory: try a smaller --batch-size");
        for code in [CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, CUresult::CUDA_ERROR_LAUNCH_FAILED] {
            let m = cuda_error("launching kernel conv2d_forward")(DriverError(code)).to_string();
            assert!(
                m.starts_with("launching kernel conv2d_forward failed (CUDA_ERROR_LAUNCH")
                    && m.contains("--batch-size"),
                "{m}"
            );
            assert_eq!(m.lines().count(), 1);
        }
        let other = message("creating a CUDA stream", CUresult::CUDA_ERROR_INVALID_VALUE);
        assert_eq!(other, "creating a CUDA stream failed (CUDA_ERROR_INVALID_VALUE)");
    }
}
