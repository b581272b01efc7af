//! Compiles every `kernels/*.cu` into one fatbin with nvcc and writes `$OUT_DIR/kernels_gen.rs`, which
//! `src/kernels.rs` includes: the fatbin bytes, ptxas's per-kernel resource report and nvcc's version.
//!
//! nvcc is looked for in this order: env `NVCC`, `$CUDA_HOME/bin/nvcc`, `nvcc` on `PATH`, then the
//! project's own `.toolchain/cuda-venv/lib/python3*/site-packages/nvidia/cu13/bin/nvcc` (installed by
//! `scripts/install-cuda-toolchain.sh`). `MTCOOL_NO_NVCC=1` pretends none exists. Without nvcc the build
//! still succeeds (CPU only) with a warning; with nvcc, a kernel that fails to compile fails the build.
//!
//! Floating point: no fast-math and nvcc's default `-fmad=true`; the kernels that must match the CPU
//! bit for bit (noise, optimiser steps) use explicit IEEE `__f*_rn` intrinsics, which are never fused.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "emu/build.rs"]
mod emu;

/// Real GPU code for these architectures, plus compute_90 PTX that newer GPUs can JIT.
const GENCODE: &[&str] =
    &["arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90", "arch=compute_90,code=compute_90"];

#[derive(Debug, Default)]
struct Entry {
    name: String,
    arch: String,
    registers: u32,
    spill_store: u32,
    spill_load: u32,
    stack: u32,
    shared: u32,
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let kernels = root.join("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", kernels.display());
    for var in ["NVCC", "CUDA_HOME", "PATH", "MTCOOL_NO_NVCC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let sources = kernel_sources(&kernels);
    emu::build(&root, &out, &sources);

    let generated = match find_nvcc(&root) {
        Err(why) => {
            println!(
                "cargo:warning=GPU kernels unavailable ({why}); building for CPU only. To enable them, \
                 run scripts/install-cuda-toolchain.sh (or set NVCC / CUDA_HOME), then `touch build.rs` \
                 and rebuild."
            );
            render(None, None, &[], Some(&why))
        }
        Ok(nvcc) => {
            if nvcc.starts_with(&root) {
                println!("cargo:rerun-if-changed={}", nvcc.display());
            }
            let version = nvcc_version(&nvcc);
            let fatbin = out.join("mtcool_kernels.fatbin");
            let log = compile(&nvcc, &kernels, &sources, &out, &fatbin);
            render(Some(&fatbin), version.as_deref(), &parse_ptxas(&log), None)
        }
    };
    fs::write(out.join("kernels_gen.rs"), generated).expect("writing kernels_gen.rs");
}

/// Every `kernels/*.cu`, sorted; also registers every `.cu`/`.cuh` for rebuilds.
fn kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let is = |p: &Path, ext: &str| p.extension().is_some_and(|e| e == ext);
    for f in files.iter().filter(|p| is(p, "cu") || is(p, "cuh")) {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    files.into_iter().filter(|p| is(p, "cu")).collect()
}

fn find_nvcc(root: &Path) -> Result<PathBuf, String> {
    if env::var("MTCOOL_NO_NVCC").is_ok_and(|v| !v.is_empty() && v != "0") {
        return Err("MTCOOL_NO_NVCC is set".into());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = env::var_os("NVCC") {
        candidates.push(PathBuf::from(p));
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        candidates.push(Path::new(&home).join("bin").join("nvcc"));
    }
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    if let Ok(rd) = fs::read_dir(root.join(".toolchain/cuda-venv/lib")) {
        let mut pythons: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        pythons.sort();
        for py in pythons.iter().filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python3"))) {
            candidates.push(py.join("site-packages/nvidia/cu13/bin/nvcc"));
        }
    }
    let works = |c: &Path| c.is_file() && Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success());
    if let Some(explicit) = env::var_os("NVCC").map(PathBuf::from).filter(|p| !works(p)) {
        println!("cargo:warning=NVCC={} is not a working nvcc; looking elsewhere", explicit.display());
    }
    candidates
        .into_iter()
        .find(|c| works(c))
        .ok_or_else(|| "no working nvcc in NVCC, $CUDA_HOME/bin, PATH or .toolchain/cuda-venv".into())
}

/// The line of `nvcc --version` naming the release (e.g. "Cuda compilation tools, release 13.0,
/// V13.0.88"), else its last line.
fn nvcc_version(nvcc: &Path) -> Option<String> {
    let out = Command::new(nvcc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines.iter().find(|l| l.contains("release")).or(lines.last())?;
    Some(line.to_string())
}

/// Compiles all sources as one translation unit; returns ptxas's `-v` log. Panics (failing the build)
/// with nvcc's own message when compilation fails.
fn compile(nvcc: &Path, kdir: &Path, sources: &[PathBuf], out: &Path, fatbin: &Path) -> String {
    let unity = out.join("mtcool_kernels.cu");
    let mut text = String::from("// Generated by build.rs: every kernels/*.cu, sorted.\n");
    for s in sources {
        writeln!(text, "#include \"{}\"", s.display()).unwrap();
    }
    fs::write(&unity, text).expect("writing the unity .cu file");
    let mut cmd = Command::new(nvcc);
    cmd.args(["-fatbin", "-O3", "-Xptxas", "-v", "-I"]).arg(kdir);
    for g in GENCODE {
        cmd.args(["-gencode", g]);
    }
    cmd.arg("-o").arg(fatbin).arg(&unity);
    let output = cmd.output().unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        panic!("nvcc failed to compile the CUDA kernels ({:?}):\n{log}", cmd);
    }
    log
}

/// Reads ptxas's `-v` lines: "Compiling entry function 'NAME' for 'sm_XX'", then "N bytes stack
/// frame, N bytes spill stores, N bytes spill loads", then "Used N registers, ..., N bytes smem, ...".
fn parse_ptxas(log: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let head = &line[..line.find(unit)?];
        head.split(|c: char| !c.is_ascii_digit()).rfind(|w| !w.is_empty())?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let name = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            entries.push(Entry { name, arch, ..Entry::default() });
            continue;
        }
        let Some(e) = entries.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            e.stack = number_before(line, "bytes stack frame").unwrap_or(0);
            e.spill_store = number_before(line, "bytes spill stores").unwrap_or(0);
            e.spill_load = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains(" registers") {
            e.registers = number_before(line, " registers").unwrap_or(0);
            e.shared = number_before(line, " bytes smem").unwrap_or(0);
        }
    }
    entries.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    entries
}

fn render(fatbin: Option<&Path>, version: Option<&str>, report: &[Entry], unavailable: Option<&str>) -> String {
    let mut s = String::from("// Generated by build.rs. Do not edit.\n");
    match fatbin {
        Some(p) => writeln!(
            s,
            "const FATBIN_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!({:?}));\n\
             pub(crate) static FATBIN: Option<&[u8]> = Some(&FATBIN_ALIGNED.0);",
            p.display().to_string()
        ),
        None => writeln!(s, "pub(crate) static FATBIN: Option<&[u8]> = None;"),
    }
    .unwrap();
    writeln!(s, "pub(crate) static NVCC_VERSION: Option<&str> = {version:?};").unwrap();
    writeln!(s, "pub(crate) static UNAVAILABLE_REASON: Option<&str> = {unavailable:?};").unwrap();
    writeln!(s, "pub(crate) static REPORT: &[KernelInfo] = &[").unwrap();
    for e in report {
        writeln!(
            s,
            "    KernelInfo {{ name: {:?}, arch: {:?}, registers: {}, spill_store_bytes: {}, \
             spill_load_bytes: {}, stack_bytes: {}, shared_bytes: {} }},",
            e.name, e.arch, e.registers, e.spill_store, e.spill_load, e.stack, e.shared
        )
        .unwrap();
    }
    s.push_str("];\n");
    s
}
