//! Which device runs the ops: the CPU reference backend or a CUDA GPU, chosen once per run.
//!
//! Probing never panics: a missing libcuda makes cudarc panic on first use, so it is checked for
//! first, and the driver calls themselves run under `catch_unwind`.

use std::fmt;

/// How the emulated device (emu/) names itself; a device whose name starts with this is the emulator.
pub const EMULATED_NAME_PREFIX: &str = "mtcool-emu";

/// The oldest GPU generation the fatbin has code for (sm_80, Ampere). Newer ones run the sm_90 SASS
/// (Hopper) or JIT the compute_90 PTX.
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (8, 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU, by ordinal.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// What the user asked for (`--device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The GPU when one is usable (driver, device and compiled kernels), else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// What the driver reports about one GPU.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GpuInfo {
    pub name: String,
    pub memory_bytes: u64,
    pub ordinal: usize,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (u32, u32),
    /// The CUDA device is mtcool's emulator (emu/): it runs the kernels on the CPU to check them, far
    /// slower than the CPU backend, so `--device auto` never picks it.
    pub emulated: bool,
}

impl fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gib = self.memory_bytes as f64 / (1u64 << 30) as f64;
        let (major, minor) = self.compute_capability;
        write!(f, "{}, {gib:.1} GiB, compute capability {major}.{minor}", self.name)?;
        if self.emulated {
            write!(f, " [emulated device: checks kernels, not for training speed]")?;
        }
        Ok(())
    }
}

/// GPU 0 as the driver sees it, or `None` (no libcuda, no device, driver error). Never panics.
pub fn probe_gpu() -> Option<GpuInfo> {
    probe(0).ok()
}

/// GPU `ordinal`, or a one-line reason why there is none. Never panics.
pub fn probe(ordinal: usize) -> Result<GpuInfo, String> {
    // SAFETY: only tries to open the library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda) found".into());
    }
    std::panic::catch_unwind(|| probe_driver(ordinal))
        .unwrap_or_else(|_| Err("the CUDA driver could not be used (too old for CUDA 13?)".into()))
}

fn probe_driver(ordinal: usize) -> Result<GpuInfo, String> {
    use cudarc::driver::{result, sys};
    let err = |what: &str, e: result::DriverError| format!("{what}: {e}");
    if let Err(e) = result::init() {
        return Err(match e.0 {
            sys::CUresult::CUDA_ERROR_NO_DEVICE => "CUDA driver found but no GPU".into(),
            _ => err("CUDA driver failed to initialise", e),
        });
    }
    let count = result::device::get_count().map_err(|e| err("counting GPUs", e))?.max(0) as usize;
    if count == 0 {
        return Err("CUDA driver found but no GPU".into());
    }
    if ordinal >= count {
        return Err(format!("no GPU with ordinal {ordinal} ({count} found)"));
    }
    let dev = result::device::get(ordinal as i32).map_err(|e| err("opening the GPU", e))?;
    let name = result::device::get_name(dev).map_err(|e| err("reading the GPU's name", e))?;
    // SAFETY: `dev` is a valid device handle from cuDeviceGet.
    let memory = unsafe { result::device::total_mem(dev) }.map_err(|e| err("reading GPU memory", e))?;
    let attr = |a: sys::CUdevice_attribute| {
        // SAFETY: as above.
        unsafe { result::device::get_attribute(dev, a) }
            .map(|v| v.max(0) as u32)
            .map_err(|e| err("reading the compute capability", e))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let emulated = name.starts_with(EMULATED_NAME_PREFIX);
    Ok(GpuInfo { name, memory_bytes: memory as u64, ordinal, compute_capability: (major, minor), emulated })
}

/// GPU 0 if this binary can run its kernels there, else why not.
fn usable_gpu() -> Result<GpuInfo, String> {
    if !crate::kernels::kernels_available() {
        let why = crate::kernels::unavailable_reason().unwrap_or("nvcc not found");
        return Err(format!(
            "GPU kernels were not compiled into this binary ({why}; run scripts/install-cuda-toolchain.sh and rebuild)"
        ));
    }
    let gpu = probe(0)?;
    if gpu.compute_capability < MIN_COMPUTE_CAPABILITY {
        let (major, minor) = gpu.compute_capability;
        return Err(format!("{} has compute capability {major}.{minor}; the kernels need 8.0 or newer", gpu.name));
    }
    Ok(gpu)
}

/// Picks the device for `choice`, with a one-line message saying which one and why. `Cuda` fails
/// with one clear error when no GPU is usable; `Auto` then falls back to the CPU. `Auto` never picks
/// the emulated device; `Cuda` does.
pub fn select(choice: DeviceChoice) -> anyhow::Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "device: cpu (requested)".into())),
        DeviceChoice::Cuda => match usable_gpu() {
            Ok(gpu) => Ok((Device::Cuda(gpu.ordinal), format!("device: cuda:{} ({gpu}; requested)", gpu.ordinal))),
            Err(why) => Err(anyhow::anyhow!("--device cuda: no usable GPU: {why}")),
        },
        DeviceChoice::Auto => Ok(match usable_gpu() {
            Ok(gpu) if gpu.emulated => (
                Device::Cpu,
                format!("device: cpu (auto: the CUDA device is {}, which only --device cuda uses)", gpu.name),
            ),
            Ok(gpu) => (Device::Cuda(gpu.ordinal), format!("device: cuda:{} ({gpu}; auto)", gpu.ordinal)),
            Err(why) => (Device::Cpu, format!("device: cpu (auto: {why})")),
        }),
    }
}
