//! `mtcool info`: what this binary was built with (kernels, nvcc) and what it finds on this machine.

use std::fmt::Write as _;

use crate::device::{self, DeviceChoice, GpuInfo};
use crate::kernels::{self, KernelInfo};

#[derive(Clone, Debug, serde::Serialize)]
pub struct InfoReport {
    pub version: &'static str,
    /// The nvcc that compiled the kernels, or null when built without one.
    pub nvcc_version: Option<&'static str>,
    pub kernels_available: bool,
    /// Why there are no kernels (null when there are).
    pub kernels_unavailable_reason: Option<&'static str>,
    /// ptxas's report: one row per kernel and architecture.
    pub kernels: Vec<KernelInfo>,
    pub gpu: GpuStatus,
    /// What `--device auto` picks here ("cpu" or "cuda:0"), and the one-line reason.
    pub auto_device: String,
    pub auto_message: String,
    /// Where the build put the emulated CUDA device (emu/), or null when it was not built.
    pub emulator_dir: Option<&'static str>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuStatus {
    pub found: bool,
    /// GPU 0, when found.
    pub info: Option<GpuInfo>,
    /// Why none was found.
    pub reason: Option<String>,
}

pub fn gather() -> InfoReport {
    let gpu = match device::probe(0) {
        Ok(info) => GpuStatus { found: true, info: Some(info), reason: None },
        Err(why) => GpuStatus { found: false, info: None, reason: Some(why) },
    };
    let (auto_device, auto_message) = match device::select(DeviceChoice::Auto) {
        Ok((d, msg)) => (d.to_string(), msg),
        Err(e) => ("cpu".to_string(), format!("{e:#}")),
    };
    InfoReport {
        version: env!("CARGO_PKG_VERSION"),
        nvcc_version: kernels::nvcc_version(),
        kernels_available: kernels::kernels_available(),
        kernels_unavailable_reason: kernels::unavailable_reason(),
        kernels: kernels::report().to_vec(),
        gpu,
        auto_device,
        auto_message,
        emulator_dir: Some(env!("MTCOOL_EMU_DIR")).filter(|d| !d.is_empty()),
    }
}

/// A readable summary with a table of the kernels (registers, spills, shared memory).
pub fn render_text(r: &InfoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "mtcool {}", r.version);
    let _ = writeln!(s, "nvcc:    {}", r.nvcc_version.unwrap_or("none (kernels not compiled)"));
    let _ = match (&r.gpu.info, &r.gpu.reason) {
        (Some(g), _) => writeln!(s, "gpu:     cuda:{} {g}", g.ordinal),
        (None, why) => writeln!(s, "gpu:     none ({})", why.as_deref().unwrap_or("not found")),
    };
    let _ = writeln!(s, "auto:    {}", r.auto_message);
    if let Some(dir) = r.emulator_dir {
        let _ = writeln!(s, "emu:     {dir} (LD_LIBRARY_PATH={dir} runs the kernels on the emulated device)");
    }
    if !r.kernels_available {
        let why = r.kernels_unavailable_reason.unwrap_or("nvcc not found at build time");
        let _ = writeln!(s, "kernels: unavailable ({why}); install with scripts/install-cuda-toolchain.sh");
        return s;
    }
    let names = r.kernels.iter().map(|k| k.name).collect::<std::collections::BTreeSet<_>>();
    let _ = writeln!(s, "kernels: {} ({} rows)", names.len(), r.kernels.len());
    let w = r.kernels.iter().map(|k| k.name.len()).max().unwrap_or(0).max("kernel".len());
    let _ = writeln!(
        s,
        "  {:<w$}  {:<5}  {:>4}  {:>11}  {:>5}  {:>5}",
        "kernel", "arch", "regs", "spill st/ld", "stack", "smem"
    );
    for k in &r.kernels {
        let spills = format!("{}/{}", k.spill_store_bytes, k.spill_load_bytes);
        let flag = if k.spill_store_bytes + k.spill_load_bytes > 0 { "SPILLS" } else { "" };
        let line = format!(
            "  {:<w$}  {:<5}  {:>4}  {:>11}  {:>5}  {:>5}  {flag}",
            k.name, k.arch, k.registers, spills, k.stack_bytes, k.shared_bytes
        );
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}
