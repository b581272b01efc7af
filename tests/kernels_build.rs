//! The embedded kernels: every expected kernel compiled for every SASS architecture, none spilling.
//! Without nvcc this skips, except under CI=true, where the toolchain is installed and kernels must exist.

use mtcool::kernels::{self, KERNEL_NAMES, SASS_ARCHS};

fn compiled_or_skip() -> bool {
    if kernels::kernels_available() {
        return true;
    }
    let why = kernels::unavailable_reason().unwrap_or("nvcc not found");
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "CI=true but the CUDA kernels were not compiled ({why}); CI must install the toolchain \
         (scripts/install-cuda-toolchain.sh)"
    );
    println!("skipping: CUDA kernels were not compiled into this build ({why})");
    false
}

#[test]
fn every_kernel_is_compiled_for_every_arch() {
    if !compiled_or_skip() {
        return;
    }
    let report = kernels::report();
    for name in KERNEL_NAMES {
        for arch in SASS_ARCHS {
            let rows = report.iter().filter(|k| k.name == *name && k.arch == *arch).count();
            assert_eq!(rows, 1, "kernel {name} for {arch}: {rows} rows in the ptxas report");
        }
    }
    for k in report {
        assert!(KERNEL_NAMES.contains(&k.name), "kernel {} is not listed in kernels::KERNEL_NAMES", k.name);
        assert!(k.registers > 0, "{} {}: no register count parsed", k.name, k.arch);
    }
    assert!(kernels::fatbin().is_some_and(|f| !f.is_empty()), "empty fatbin");
    assert!(kernels::nvcc_version().is_some(), "no nvcc version recorded");
}

#[test]
fn no_kernel_spills() {
    if !compiled_or_skip() {
        return;
    }
    let spilling: Vec<String> = kernels::report()
        .iter()
        .filter(|k| k.spill_store_bytes != 0 || k.spill_load_bytes != 0)
        .map(|k| format!("{} {}: {} B stored, {} B loaded", k.name, k.arch, k.spill_store_bytes, k.spill_load_bytes))
        .collect();
    assert!(spilling.is_empty(), "register spills:\n{}", spilling.join("\n"));
}
