//! Builds the emulated CUDA device (emu/README.md), included by the crate's build.rs: two shared
//! libraries named libcuda.so.1 (+ a libcuda.so link), a plain one in `target/<profile>/emu/` and an
//! AddressSanitizer one in `target/<profile>/emu-asan/`, each from emu/*.cpp plus every kernels/*.cu
//! (group "product") and emu/tests/*.cu (group "emutest") compiled by g++.
//!
//! The kernel registry is generated from one preprocessor pass over the same sources: with
//! MTC_EMU_SCAN, cuda_emu.h turns `__global__` into a marker, so every kernel (also those a macro
//! defines) is listed with its `__launch_bounds__`; its parameter list comes from its C++ type.
//!
//! Sets `MTCOOL_EMU_DIR`, `MTCOOL_EMU_ASAN_DIR` and `MTCOOL_EMU_LIBASAN` for the crate (empty when the
//! emulator could not be built: no g++, or `MTCOOL_NO_EMU=1`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Kernel {
    pub name: String,
    pub group: &'static str,
    pub max_threads: u32,
}

pub fn build(root: &Path, out: &Path, product: &[PathBuf]) {
    let emu = root.join("emu");
    // The sources only (not the README): a directory would rebuild on any file in it.
    for dir in [emu.clone(), emu.join("include")] {
        for f in fs::read_dir(&dir).into_iter().flatten().filter_map(|e| e.ok().map(|e| e.path())) {
            if f.extension().is_some_and(|e| e == "cpp" || e == "h" || e == "rs") {
                println!("cargo:rerun-if-changed={}", f.display());
            }
        }
    }
    println!("cargo:rerun-if-changed={}", emu.join("tests").display());
    for var in ["CXX", "MTCOOL_NO_EMU"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let tests = sources(&emu.join("tests"));
    let (mut dir, mut asan_dir, mut libasan) = (String::new(), String::new(), String::new());
    match try_build(root, out, product, &tests) {
        Ok((d, a, l)) => (dir, asan_dir, libasan) = (d, a, l),
        Err(why) => println!("cargo:warning=emulated CUDA device not built ({why}); its tests will fail under CI"),
    }
    println!("cargo:rustc-env=MTCOOL_EMU_DIR={dir}");
    println!("cargo:rustc-env=MTCOOL_EMU_ASAN_DIR={asan_dir}");
    println!("cargo:rustc-env=MTCOOL_EMU_LIBASAN={libasan}");
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    v.sort();
    for p in &v {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    v
}

fn try_build(
    root: &Path,
    out: &Path,
    product: &[PathBuf],
    tests: &[PathBuf],
) -> Result<(String, String, String), String> {
    if env::var("MTCOOL_NO_EMU").is_ok_and(|v| !v.is_empty() && v != "0") {
        return Err("MTCOOL_NO_EMU is set".into());
    }
    let cxx = env::var("CXX").unwrap_or_else(|_| "g++".into());
    let emu = root.join("emu");
    let mut kernels = scan(&cxx, root, out, product, "product")?;
    kernels.extend(scan(&cxx, root, out, tests, "emutest")?);
    let registry = out.join("emu_registry.cpp");
    fs::write(&registry, render(&emu, product, tests, &kernels)).map_err(|e| e.to_string())?;

    // target/<profile>/ from target/<profile>/build/<pkg>-<hash>/out
    let profile = out.ancestors().nth(3).ok_or("unexpected OUT_DIR layout")?;
    let plain = profile.join("emu");
    let asan = profile.join("emu-asan");
    let inputs = [emu.join("runtime.cpp"), emu.join("exec.cpp"), registry];
    // -march=native: the libraries are built for, and run on, this machine (hardware FMA for fmaf);
    // they are never shipped to a GPU host.
    let mut jobs: Vec<(PathBuf, bool, Child)> = Vec::new();
    for (dir, is_asan, flags) in [
        (&plain, false, &["-O2", "-march=native"][..]),
        (&asan, true, &["-O2", "-g", "-march=native", "-fsanitize=address", "-fno-omit-frame-pointer"][..]),
    ] {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&cxx);
        cmd.args(["-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden", "-fvisibility-inlines-hidden"])
            .args(["-ffp-contract=off", "-pthread"])
            .args(flags)
            .arg("-I")
            .arg(emu.join("include"))
            .arg("-I")
            .arg(&emu)
            .arg("-I")
            .arg(root.join("kernels"))
            .arg("-Wl,-soname,libcuda.so.1")
            .arg("-o")
            .arg(dir.join("libcuda.so.1"))
            .args(&inputs)
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| format!("cannot run {cxx}: {e}"))?;
        jobs.push((dir.to_path_buf(), is_asan, child));
    }
    let mut asan_ok = true;
    for (dir, is_asan, child) in jobs {
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            let log = String::from_utf8_lossy(&o.stderr);
            if is_asan {
                // e.g. no libasan: the plain emulator still works; its ASan tests then say why.
                println!(
                    "cargo:warning=the AddressSanitizer build of the emulated device failed: {}",
                    log.lines().next().unwrap_or("")
                );
                asan_ok = false;
                continue;
            }
            // A kernel the emulation header cannot compile fails the build, as nvcc's errors do.
            panic!("{cxx} failed to build the emulated device in {}:\n{log}", dir.display());
        }
        let link = dir.join("libcuda.so");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("libcuda.so.1", &link).map_err(|e| e.to_string())?;
    }
    let libasan = Command::new(&cxx)
        .arg("-print-file-name=libasan.so")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let asan_dir = if asan_ok { asan.display().to_string() } else { String::new() };
    Ok((plain.display().to_string(), asan_dir, libasan))
}

/// The kernels `files` define, from a preprocessor pass with MTC_EMU_SCAN.
fn scan(cxx: &str, root: &Path, out: &Path, files: &[PathBuf], group: &'static str) -> Result<Vec<Kernel>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let unity = out.join(format!("emu_scan_{group}.cpp"));
    let mut text = String::new();
    for f in files {
        writeln!(text, "#include \"{}\"", f.display()).unwrap();
    }
    fs::write(&unity, text).map_err(|e| e.to_string())?;
    let o = Command::new(cxx)
        .args(["-E", "-P", "-std=c++17", "-DMTC_EMU_SCAN", "-include"])
        .arg(root.join("emu/include/cuda_emu.h"))
        .arg("-I")
        .arg(root.join("emu/include"))
        .arg("-I")
        .arg(root.join("kernels"))
        .arg(&unity)
        .output()
        .map_err(|e| format!("cannot run {cxx}: {e}"))?;
    if !o.status.success() {
        panic!("{cxx} -E failed on the kernels:\n{}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(parse_marked(&String::from_utf8_lossy(&o.stdout), group))
}

/// `mtc_emu_kernel_mark void [mtc_emu_launch_bounds(N[, ...])] NAME (` → kernels.
pub fn parse_marked(pre: &str, group: &'static str) -> Vec<Kernel> {
    let mut v = Vec::new();
    for piece in pre.split("mtc_emu_kernel_mark").skip(1) {
        let rest = piece.trim_start();
        let Some(rest) = rest.strip_prefix("void") else { continue };
        let mut rest = rest.trim_start();
        let mut max_threads = 1024;
        if let Some(r) = rest.strip_prefix("mtc_emu_launch_bounds") {
            let r = r.trim_start().trim_start_matches('(');
            let end = r.find(')').unwrap_or(r.len());
            let first = r[..end].split(',').next().unwrap_or("").trim();
            max_threads = first.trim_start_matches('(').trim_end_matches(')').trim().parse().unwrap_or(1024);
            rest = r[end..].trim_start_matches(')').trim_start();
        }
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            v.push(Kernel { name, group, max_threads });
        }
    }
    v
}

fn render(emu: &Path, product: &[PathBuf], tests: &[PathBuf], kernels: &[Kernel]) -> String {
    let mut s = String::from("// Generated by emu/build.rs: the kernels of the emulated device, by name.\n");
    writeln!(s, "#include \"{}\"", emu.join("include/cuda_emu.h").display()).unwrap();
    writeln!(s, "#include \"{}\"", emu.join("emu.h").display()).unwrap();
    for f in product.iter().chain(tests) {
        writeln!(s, "#include \"{}\"", f.display()).unwrap();
    }
    s.push_str("const mtc_emu::KernelDef mtc_emu::kRegistry[] = {\n");
    for k in kernels {
        writeln!(s, "    mtc_emu::def(\"{0}\", \"{1}\", &{0}, {2}u),", k.name, k.group, k.max_threads).unwrap();
    }
    writeln!(s, "}};\nconst size_t mtc_emu::kRegistryLen = {};", kernels.len()).unwrap();
    s
}
