//! Every CUDA kernel against its CPU reference (the suite in src/parity, `mtcool check parity`).
//!
//! On the emulated device (emu/), always: the unchanged `mtcool` binary with LD_LIBRARY_PATH at the
//! emulator runs the whole suite twice, once with every launch executed in forward, reverse and random
//! thread order and compared bit for bit (MTCOOL_EMU_SCHEDULE=check: a race fails its launch), once on
//! the AddressSanitizer build (an out-of-bounds access aborts with ASan's report). Every kernel of the
//! fatbin must be checked by at least one case. Under CI the emulator must be there.
//!
//! On a real GPU, when this machine has one: the same suite in-process.

use std::path::Path;
use std::process::Command;

use mtcool::backend::cuda::Gpu;
use mtcool::device;
use mtcool::kernels::KERNEL_NAMES;
use mtcool::parity;

/// Runs `mtcool check parity --device cuda --json` on the emulator in `dir`; returns its JSON.
fn parity_on_emulator(dir: &str, env: &[(&str, &str)]) -> Option<serde_json::Value> {
    if dir.is_empty() {
        assert!(std::env::var("CI").is_err(), "the emulated CUDA device was not built (see the build warning)");
        println!("skipping: the emulated CUDA device was not built");
        return None;
    }
    assert!(mtcool::kernels::kernels_available(), "the parity suite needs the compiled kernels (nvcc)");
    let out = Command::new(env!("CARGO_BIN_EXE_mtcool"))
        .args(["check", "parity", "--device", "cuda", "--json"])
        .env("LD_LIBRARY_PATH", Path::new(dir))
        .envs(env.iter().copied())
        .output()
        .expect("running mtcool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "parity on the emulator failed:\n{stderr}\n{}", tail(&stdout));
    Some(serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {}", tail(&stdout))))
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The report is from the emulator, every case passed and every kernel was checked.
fn assert_complete(doc: &serde_json::Value) {
    assert_eq!(doc["device"]["emulated"], true, "{}", doc["device"]);
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() > 1000, "only {} parity cases", cases.len());
    let failed: Vec<String> = cases.iter().filter(|c| c["pass"] != true).map(|c| c.to_string()).collect();
    assert!(failed.is_empty(), "parity failures:\n{}", failed.join("\n"));
    let kernels = doc["kernels"].as_array().unwrap();
    assert_eq!(kernels.len(), KERNEL_NAMES.len());
    for k in kernels {
        assert!(k["cases"].as_u64().unwrap() > 0 && k["pass"] == true, "kernel not checked or failing: {k}");
    }
}

#[test]
fn every_kernel_matches_the_cpu_reference_on_the_emulator_in_every_thread_order() {
    let Some(doc) = parity_on_emulator(env!("MTCOOL_EMU_DIR"), &[("MTCOOL_EMU_SCHEDULE", "check")]) else { return };
    assert_complete(&doc);
}

#[test]
fn every_kernel_matches_the_cpu_reference_on_the_asan_build_of_the_emulator() {
    let env = [("LD_PRELOAD", env!("MTCOOL_EMU_LIBASAN")), ("ASAN_OPTIONS", "detect_leaks=0")];
    let Some(doc) = parity_on_emulator(env!("MTCOOL_EMU_ASAN_DIR"), &env) else { return };
    assert_complete(&doc);
}

#[test]
fn every_kernel_matches_the_cpu_reference_on_a_real_gpu() {
    let gpu_info = match device::probe(0) {
        Ok(info) if !info.emulated => info,
        Ok(_) | Err(_) => {
            println!("skipping: no real GPU here (the emulator tests above cover the kernels)");
            return;
        }
    };
    let gpu = Gpu::new(gpu_info.ordinal).expect("opening the GPU");
    let outcomes = parity::run_all(&gpu, 0).expect("parity suite");
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.pass)
        .map(|o| format!("{} [{}]: {:.3e} > {:.0e}", o.kernel, o.case, o.max_rel_err, o.tol))
        .collect();
    println!("{} parity cases on {gpu_info}, {} failed", outcomes.len(), failed.len());
    assert!(failed.is_empty(), "parity failures:\n{}", failed.join("\n"));
    assert!(parity::per_kernel(&outcomes).iter().all(|k| k.cases > 0), "a kernel no case ran");
}
