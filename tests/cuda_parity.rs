//! Every CUDA kernel against its CPU reference (the suite in src/parity, also run by
//! `mtcool check parity --device cuda`). Without a usable GPU (no libcuda, no device, or no compiled
//! kernels) the test prints a skip line and passes.

use mtcool::backend::cuda::Gpu;
use mtcool::device::{self, Device, DeviceChoice};
use mtcool::parity;

#[test]
fn every_kernel_matches_the_cpu_reference() {
    let ordinal = match device::select(DeviceChoice::Auto).expect("device selection") {
        (Device::Cuda(ordinal), _) => ordinal,
        (Device::Cpu, msg) => {
            println!("skipping CUDA parity, no usable GPU: {msg}");
            return;
        }
    };
    let gpu = Gpu::new(ordinal).expect("opening the GPU");
    let outcomes = parity::run_all(&gpu, 0).expect("parity suite");
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.pass)
        .map(|o| format!("{} [{}]: {:.3e} > {:.0e}", o.kernel, o.case, o.max_rel_err, o.tol))
        .collect();
    println!("{} parity cases, {} failed", outcomes.len(), failed.len());
    assert!(failed.is_empty(), "parity failures:\n{}", failed.join("\n"));
}
