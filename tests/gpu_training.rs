//! Training on the GPU, under the emulated device (emu/): the unchanged `mtcool` binary with
//! `--device cuda` and LD_LIBRARY_PATH at the emulator. Every method and task follows the CPU run of the
//! same seed step by step; a killed GPU run resumes to the same weights; a NaN stops a GPU run with the
//! CPU's message; the summary reports the GPU's memory.
//!
//! Each run below has one step per epoch (`--limit-train` = `--batch-size`), so `metrics.jsonl`'s
//! per-epoch training loss is the loss of each step.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::real_mnist_dir;

/// The emulator's folder, or None (skip) when it was not built; under CI it must have been.
fn emu_dir() -> Option<PathBuf> {
    let dir = env!("MTCOOL_EMU_DIR");
    if dir.is_empty() {
        assert!(std::env::var("CI").is_err(), "the emulated device was not built (see the build warning)");
        println!("skipping: the emulated device was not built");
        return None;
    }
    Some(PathBuf::from(dir))
}

/// `mtcool train <args> --out <out>` on `device` ("cpu" or "cuda", the latter on the emulator).
fn train_cmd(device: &str, args: &[&str], out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mtcool"));
    c.arg("train").args(args).args(["--device", device]).arg("--out").arg(out);
    c.env_remove("MTCOOL_INJECT_NAN_AT_STEP").env("MTCOOL_EMU_THREADS", "2");
    if let Some(dir) = emu_dir() {
        c.env("LD_LIBRARY_PATH", dir);
    }
    c
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "mtcool failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Every number of `a` and `b` (same structure), paired, with its path.
fn numbers(a: &serde_json::Value, b: &serde_json::Value, at: String, out: &mut Vec<(String, f64, f64)>) {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => out.push((at, x.as_f64().unwrap(), y.as_f64().unwrap())),
        (Array(x), Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                numbers(x, y, format!("{at}[{i}]"), out);
            }
        }
        (Object(x), Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}");
            for (k, x) in x {
                numbers(x, &y[k], format!("{at}.{k}"), out);
            }
        }
        (x, y) => assert_eq!(x, y, "{at}"),
    }
}

/// Relative tolerance on each step's loss. Measured: 0 — on the emulator the f32 kernels reproduce the
/// CPU reference's rounding on these shapes (both accumulate each dot product in k order with FMA;
/// reductions are in f64), so any real divergence shows at once; a wrong noise index moves the loss
/// by ~1e-4 with the `--b 0.05` below.
const LOSS_TOL: f64 = 1e-5;
/// Test metrics (accuracy, Dice, AUROC, ...) on the few test items: within this absolute difference.
const METRIC_TOL: f64 = 0.02;

/// Trains `args` on the CPU and on the emulated GPU and compares every step's loss and the final
/// test metrics.
fn assert_gpu_follows_cpu(name: &str, args: &[&str], tmp: &Path) {
    let (cpu, gpu) = (tmp.join(format!("{name}-cpu")), tmp.join(format!("{name}-gpu")));
    ok(train_cmd("cpu", args, &cpu).output().unwrap());
    let o = ok(train_cmd("cuda", args, &gpu).output().unwrap());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("mtcool-emu"), "{name}: did not run on the emulated GPU:\n{err}");
    let (mc, mg) = (json_lines(&cpu.join("metrics.jsonl")), json_lines(&gpu.join("metrics.jsonl")));
    assert_eq!(mc.len(), mg.len(), "{name}");
    for (step, (c, g)) in mc.iter().zip(&mg).enumerate() {
        let mut pairs = vec![];
        numbers(&c["train_loss"], &g["train_loss"], "train_loss".into(), &mut pairs);
        for (at, x, y) in pairs {
            let rel = (x - y).abs() / x.abs().max(1e-3);
            if std::env::var("MTCOOL_SHOW_DIFF").is_ok() {
                eprintln!("{name} step {} {at}: rel {rel:e}", step + 1);
            }
            assert!(rel <= LOSS_TOL, "{name}: step {} {at}: cpu {x} gpu {y} (rel {rel:e})", step + 1);
        }
    }
    let mut pairs = vec![];
    numbers(&mc.last().unwrap()["test"], &mg.last().unwrap()["test"], "test".into(), &mut pairs);
    for (at, x, y) in pairs {
        assert!((x - y).abs() <= METRIC_TOL || (x.is_nan() && y.is_nan()), "{name}: {at}: cpu {x} gpu {y}");
    }
    let s = json(&gpu.join("summary.json"));
    assert!(s["device"].as_str().unwrap().contains("cuda:0"), "{s}");
    assert!(s["gpu_memory"]["peak_bytes"].as_u64().unwrap() > 0, "{s}");
    assert!(json(&cpu.join("summary.json")).get("gpu_memory").is_none(), "a CPU run reports no GPU memory");
}

/// Every method and MT-CooL variant, as `mtcool train` flags.
const METHODS: [&[&str]; 13] = [
    &["--method", "independent"],
    &["--method", "joint"],
    &["--method", "pcgrad"],
    &["--method", "cagrad"],
    &["--method", "mgda"],
    &["--method", "graddrop"],
    &["--method", "mtan"],
    &["--method", "ctan"],
    &["--method", "mtcool", "--mode", "vanilla"],
    &["--method", "mtcool", "--mode", "noreg", "--noise-samples", "2", "--b", "0.05"],
    &["--method", "mtcool", "--mode", "full", "--inner-steps", "2", "--b", "0.05"],
    &["--method", "mtcool", "--fusion", "add", "--b", "0.05"],
    &["--method", "mtcool", "--fusion", "attention", "--b", "0.05"],
];

fn every_method_on(task: &[&str]) {
    if emu_dir().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for m in METHODS {
        let args = [task, m, &["--epochs", "3", "--seed", "4"]].concat();
        assert_gpu_follows_cpu(&args.join("_").replace("--", ""), &args, tmp.path());
    }
}

const FUNDUS: [&str; 10] =
    ["--task", "fundus", "--size", "32", "--limit-train", "4", "--batch-size", "4", "--limit-test", "4"];

#[test]
fn every_method_follows_the_cpu_on_fundus() {
    every_method_on(&FUNDUS);
}

#[test]
fn every_method_follows_the_cpu_on_fundus_av() {
    every_method_on(&[
        "--task",
        "fundus-av",
        "--size",
        "32",
        "--limit-train",
        "4",
        "--batch-size",
        "4",
        "--limit-test",
        "4",
    ]);
}

#[test]
fn every_method_follows_the_cpu_on_multimnist() {
    if real_mnist_dir().is_none() {
        return;
    }
    every_method_on(&["--task", "multimnist", "--limit-train", "16", "--batch-size", "16", "--limit-test", "32"]);
}

/// fundus, 8 steps per epoch, 2 epochs.
const RESUMABLE: [&str; 14] = [
    "--task",
    "fundus",
    "--size",
    "32",
    "--limit-train",
    "16",
    "--batch-size",
    "2",
    "--limit-test",
    "4",
    "--epochs",
    "2",
    "--seed",
    "7",
];

#[test]
fn a_killed_gpu_run_resumes_on_the_gpu_to_the_same_weights() {
    let Some(_) = emu_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (a, c) = (tmp.path().join("a"), tmp.path().join("c"));
    ok(train_cmd("cuda", &RESUMABLE, &a).output().unwrap());
    let every1 = [&RESUMABLE[..], &["--checkpoint-every", "1"]].concat();
    let mut child = train_cmd("cuda", &every1, &c).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    common::kill_after_checkpoint(&mut child, &c, 2..8);
    assert!(!c.join("summary.json").exists(), "the run was not interrupted");
    let mut r = Command::new(env!("CARGO_BIN_EXE_mtcool"));
    r.args(["train", "--device", "cuda", "--resume"]).arg(&c).env("LD_LIBRARY_PATH", emu_dir().unwrap());
    let o = ok(r.env_remove("MTCOOL_INJECT_NAN_AT_STEP").output().unwrap());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resuming from") && err.contains("mtcool-emu"), "{err}");
    let (wa, wc) = (fs::read(a.join("model.safetensors")).unwrap(), fs::read(c.join("model.safetensors")).unwrap());
    assert!(wa == wc, "the resumed GPU run's weights differ from the uninterrupted GPU run's");

    // `eval` reloads the GPU-trained model on either device and reproduces summary.json's metrics.
    let summary = json(&c.join("summary.json"));
    for device in ["cuda", "cpu"] {
        let mut e = Command::new(env!("CARGO_BIN_EXE_mtcool"));
        e.args(["eval", "--device", device, "--run"]).arg(&c).env("LD_LIBRARY_PATH", emu_dir().unwrap());
        let out = String::from_utf8_lossy(&ok(e.output().unwrap()).stdout).into_owned();
        let mut rows = 0;
        assert!(out.contains(&format!("re-evaluated on device: {device}")), "{out}");
        for line in out.lines().skip(1).filter(|l| l.starts_with(|c: char| c.is_ascii_digit())) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (task, metric, got): (usize, &str, f64) = (f[0].parse().unwrap(), f[1], f[3].parse().unwrap());
            let want = summary["metrics"][task - 1][metric].as_f64().unwrap();
            assert!((got - want).abs() <= 5e-5, "{device}: {metric} of task {task}: {got} vs summary {want}");
            rows += 1;
        }
        assert!(rows >= 6, "{device}: eval printed {rows} metrics:\n{out}");
    }
}

#[test]
fn a_nan_on_the_gpu_stops_the_run_with_the_cpu_message() {
    let Some(_) = emu_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut lines = vec![];
    for device in ["cpu", "cuda"] {
        let out = tmp.path().join(device);
        let o = train_cmd(device, &RESUMABLE, &out).env("MTCOOL_INJECT_NAN_AT_STEP", "3").output().unwrap();
        assert!(!o.status.success(), "{device}: the NaN did not stop the run");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let line = err.lines().find(|l| l.starts_with("error:")).unwrap_or_else(|| panic!("{err}")).to_string();
        assert!(
            line.contains("non-finite loss") && line.contains("task 1") && line.contains("global step 3"),
            "{line}"
        );
        assert!(!out.join("model.safetensors").exists() || !err.contains("panicked"), "{err}");
        lines.push(line);
    }
    assert_eq!(lines[0], lines[1], "the GPU run stops with another message than the CPU run");
}

// ---------------------------------------------------------------------------------------------------
// Library-level checks on the emulator, each in a child process (the loader reads LD_LIBRARY_PATH once,
// at start-up): this test binary again, running the ignored test `child` with MTCOOL_GPU_TEST_CHILD
// naming the case. The child prints `key=value` lines; the parent asserts on them.

const CHILD: &str = "MTCOOL_GPU_TEST_CHILD";

fn run_child(case: &str) -> Option<String> {
    let dir = emu_dir()?;
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .env("LD_LIBRARY_PATH", dir)
        .env("MTCOOL_EMU_THREADS", "2")
        .output()
        .unwrap();
    let out = ok(o);
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `key=` in the child's output (values have no spaces; the test harness may print
/// its own words before the first one on the same line).
fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    stdout
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in:\n{stdout}"))
}

#[test]
fn after_the_second_step_a_training_step_allocates_nothing() {
    let Some(out) = run_child("steady_state") else { return };
    for method in ["mtcool", "joint", "pcgrad"] {
        let per_step: Vec<u64> =
            value(&out, &format!("{method}_allocs")).split(',').map(|v| v.parse().unwrap()).collect();
        // The first method warms the cache; the others (same shapes) may find every buffer there.
        assert!(method != "mtcool" || per_step[0] > 0, "the first step allocated nothing? {per_step:?}");
        assert!(per_step[2..].iter().all(|&n| n == 0), "{method}: driver allocations per step {per_step:?}");
        let emu: Vec<u64> =
            value(&out, &format!("{method}_emu_allocs")).split(',').map(|v| v.parse().unwrap()).collect();
        assert!(emu[2..].iter().all(|&n| n == 0), "{method}: cuMemAlloc calls per step {emu:?}");
    }
}

#[test]
fn the_frozen_extractor_gets_its_noise_inside_its_kernels() {
    let Some(out) = run_child("fused_noise") else { return };
    let launched = value(&out, "launched");
    assert!(launched.contains("conv2d_forward_noisy") && launched.contains("linear_forward_noisy"), "{launched}");
    assert!(!launched.split(',').any(|k| k == "add_noise"), "a perturbed copy of θ was made: {launched}");
    // Vanilla reads the other extractor clean.
    let vanilla = value(&out, "vanilla_launched");
    assert!(!vanilla.contains("noisy") && !vanilla.contains("add_noise"), "{vanilla}");
    // And the noise costs no memory: a noisy step's peak of live device bytes (over what was live
    // before it) equals the clean step's; a perturbed copy of the frozen θ would add its size.
    let (noisy, clean): (u64, u64) =
        (value(&out, "noreg_peak").parse().unwrap(), value(&out, "vanilla_peak").parse().unwrap());
    let theta: u64 = value(&out, "frozen_theta_bytes").parse().unwrap();
    assert!(noisy > 0 && theta > 0);
    assert_eq!(noisy, clean, "the noisy step needs more memory than the clean one (θ is {theta} bytes)");
}

#[test]
fn the_predictor_runs_on_the_gpu_and_mixed_devices_are_a_typed_error() {
    let Some(out) = run_child("predictor") else { return };
    assert_eq!(value(&out, "logits_max_diff"), "0", "GPU logits differ from the CPU's");
    assert_eq!(value(&out, "mismatch"), "DeviceMismatch", "{out}");
}

#[test]
#[ignore = "run by the tests above in a child process on the emulated device"]
fn child() {
    let Ok(case) = std::env::var(CHILD) else { return };
    match case.as_str() {
        "steady_state" => steady_state(),
        "fused_noise" => fused_noise(),
        "predictor" => predictor_and_mismatch(),
        other => panic!("unknown case {other}"),
    }
}

mod child_cases {
    use std::sync::Arc;

    use mtcool::backend::cuda::Gpu;
    use mtcool::backend::Backend;
    use mtcool::model::{Arch, Fusion, Method, ModelConfig, MultiTaskModel, TaskSpec};
    use mtcool::mtl::gradient_step::{combined_step, Combiner};
    use mtcool::mtl::mtcool::{mtcool_step, Mode, MtCoolConfig};
    use mtcool::mtl::{summed_step, Batch, Objective};
    use mtcool::optim::{AdamConfig, Optimizer};
    use mtcool::Tensor;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    pub fn gpu() -> Arc<Gpu> {
        Arc::new(Gpu::new(0).expect("the emulated GPU"))
    }

    /// cuMemAlloc calls so far, from the emulator's own counters.
    pub fn emu_allocs() -> u64 {
        super::common::emu_stats()[3]
    }

    /// A U-Net seg + cls model on `backend` and a batch of 2 random 16×16 images.
    pub fn setup(method: Method, backend: &Backend) -> (MultiTaskModel, Batch, Objective) {
        let specs = [TaskSpec::Segment { classes: 3 }, TaskSpec::Classify { classes: 2 }];
        let cfg = ModelConfig {
            arch: Arch::Unet { base: 4 },
            method,
            fusion: Fusion::Concat,
            width: 1.0,
            in_channels: 3,
            tasks: specs.to_vec(),
        };
        let mut m = MultiTaskModel::new(cfg, 3);
        m.store.to_backend(backend).unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let x = Tensor::randn(&[2, 3, 16, 16], 1.0, &mut rng);
        let seg = (0..2 * 16 * 16).map(|_| rng.random_range(0..3)).collect();
        (m, Batch::new(x, vec![seg, vec![0, 1]]), Objective::unweighted(&specs))
    }

    pub fn mtcool_cfg(mode: Mode) -> MtCoolConfig {
        MtCoolConfig { mode, b: 1e-2, noise_samples: 1, inner_steps: 1, seed: 1 }
    }

    pub fn step(method: Method, m: &mut MultiTaskModel, opt: &mut Optimizer, b: &Batch, obj: &Objective, i: u32) {
        match method {
            Method::Mtcool => mtcool_step(m, opt, b, obj, i, &mtcool_cfg(Mode::Full)).map(|_| ()),
            Method::Pcgrad => combined_step(m, opt, b, obj, &Combiner::Pcgrad { seed: 1 }, i).map(|_| ()),
            _ => summed_step(m, opt, b, obj).map(|_| ()),
        }
        .unwrap();
    }

    pub fn adam() -> Optimizer {
        Optimizer::adam(AdamConfig::with_lr(1e-3))
    }
}

/// Driver allocations (the cache's and the emulator's count) of each of 5 steps, per method.
fn steady_state() {
    use child_cases::*;
    use mtcool::model::Method;
    let gpu = gpu();
    let backend = mtcool::backend::Backend::Cuda(gpu.clone());
    for (name, method) in [("mtcool", Method::Mtcool), ("joint", Method::Joint), ("pcgrad", Method::Pcgrad)] {
        let (mut m, b, obj) = setup(method, &backend);
        let mut opt = adam();
        let (mut cache, mut emu) = (vec![], vec![]);
        for i in 0..5 {
            let (c0, e0) = (gpu.memory_stats().driver_allocs, emu_allocs());
            step(method, &mut m, &mut opt, &b, &obj, i);
            cache.push(gpu.memory_stats().driver_allocs - c0);
            emu.push(emu_allocs() - e0);
        }
        let join = |v: &[u64]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        println!("{name}_allocs={}", join(&cache));
        println!("{name}_emu_allocs={}", join(&emu));
    }
}

/// The kernels one MT-CooL step launches, with noise (full) and without (vanilla).
fn fused_noise() {
    use child_cases::*;
    use mtcool::model::{Fusion, Method, ModelConfig, MultiTaskModel};
    use mtcool::mtl::mtcool::{mtcool_step, Mode};
    use mtcool::mtl::{Batch, Objective};
    let gpu = gpu();
    let backend = mtcool::backend::Backend::Cuda(gpu.clone());
    // MultiLeNet: the frozen extractor has conv and linear layers.
    let cfg = ModelConfig::multimnist(Method::Mtcool, Fusion::Concat, 0.5);
    let obj = Objective::unweighted(&cfg.tasks);
    let b = Batch::new(Tensor::full(&[2, 1, 28, 28], 0.5), vec![vec![1, 2], vec![3, 4]]);
    use mtcool::Tensor;
    for (key, mode) in [("noreg_peak", Mode::Noreg), ("vanilla_peak", Mode::Vanilla)] {
        let mut m = MultiTaskModel::new(cfg.clone(), 1);
        m.store.to_backend(&backend).unwrap();
        let mut opt = adam();
        mtcool_step(&mut m, &mut opt, &b, &obj, 0, &mtcool_cfg(mode)).unwrap();
        let live = gpu.memory_stats().live_bytes;
        gpu.reset_peak_memory();
        mtcool_step(&mut m, &mut opt, &b, &obj, 1, &mtcool_cfg(mode)).unwrap();
        println!("{key}={}", gpu.memory_stats().peak_bytes - live);
        let theta: usize =
            m.extractor_params(mtcool::model::TaskId(1)).iter().map(|&id| m.store.value(id).numel()).sum();
        println!("frozen_theta_bytes={}", 4 * theta);
    }
    for (key, mode) in [("launched", Mode::Full), ("vanilla_launched", Mode::Vanilla)] {
        let mut m = MultiTaskModel::new(cfg.clone(), 1);
        m.store.to_backend(&backend).unwrap();
        let mut opt = adam();
        gpu.take_launched();
        mtcool_step(&mut m, &mut opt, &b, &obj, 0, &mtcool_cfg(mode)).unwrap();
        println!("{key}={}", gpu.take_launched().join(","));
    }
}

/// `mtcool <cmd> --device <device> --json <rest>` (bench, profile), parsed.
fn json_cmd(device: &str, args: &[&str]) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mtcool"));
    c.arg(args[0]).args(["--device", device, "--json"]).args(&args[1..]).env("MTCOOL_EMU_THREADS", "2");
    if let Some(dir) = emu_dir() {
        c.env("LD_LIBRARY_PATH", dir);
    }
    let o = ok(c.output().unwrap());
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn bench_and_profile_run_on_the_gpu() {
    let Some(_) = emu_dir() else { return };
    let args =
        ["bench", "--task", "fundus", "--batch-size", "2", "--steps", "3", "--warmup", "2", "--", "--size", "32"];
    let (cpu, gpu) = (json_cmd("cpu", &args), json_cmd("cuda", &args));
    assert_eq!(gpu["timer"], "cuda events", "{gpu}");
    assert_eq!(cpu["timer"], "wall clock", "{cpu}");
    assert_eq!(gpu["timed_driver_allocs"], 0, "the timed steps allocated: {gpu}");
    assert!(gpu["median_us"].as_f64().unwrap() > 0.0);
    let mut pairs = vec![];
    numbers(&cpu["first_losses"], &gpu["first_losses"], "first_losses".into(), &mut pairs);
    for (at, x, y) in pairs {
        assert!((x - y).abs() <= LOSS_TOL * x.abs().max(1e-3), "{at}: cpu {x} gpu {y}");
    }

    // With --graph: every timed step is a replay, still without a driver allocation.
    let mut graph_args = args.to_vec();
    graph_args[8] = "3"; // --warmup 3: two eager steps and the capture
    graph_args.insert(1, "--graph");
    let g = json_cmd("cuda", &graph_args);
    assert_eq!(g["graph_replays"].as_u64(), Some(4), "3 timed steps and the capture's own replay: {g}");
    assert_eq!(g["timed_driver_allocs"], 0, "{g}");
    assert_eq!(g["first_losses"], gpu["first_losses"], "the eager steps are the same");

    let mut args = args.to_vec();
    args[0] = "profile";
    let p = json_cmd("cuda", &args);
    let kernels: Vec<&str> = p["kernels"].as_array().unwrap().iter().map(|k| k["kernel"].as_str().unwrap()).collect();
    assert!(kernels.contains(&"conv2d_forward_noisy") && kernels.contains(&"adam_step"), "{kernels:?}");
    let row = |k: &str| p["kernels"].as_array().unwrap().iter().find(|r| r["kernel"] == k).unwrap().clone();
    assert!(row("conv2d_forward_noisy")["gflop_s"].as_f64().unwrap() > 0.0, "matrix kernels report GFLOP/s");
    assert!(row("adam_step")["gb_s"].as_f64().unwrap() > 0.0, "memory-bound kernels report GB/s");
    let share: f64 = p["kernels"].as_array().unwrap().iter().map(|k| k["share"].as_f64().unwrap()).sum();
    assert!((share - 100.0).abs() < 1e-6, "kernel shares sum to {share}");
    let rows = p["rows"].as_array().unwrap();
    let conv = rows
        .iter()
        .find(|r| r["phase"] == "forward" && r["op"] == "conv2d_noisy_relu")
        .expect("a conv2d_noisy_relu row");
    assert!(conv["gflop_s"].as_f64().unwrap() > 0.0 && conv["calls"] == 12.0, "{conv}");
    assert!(p["peaks"]["sgemm_gflop_s"].as_f64().unwrap() > 0.0 && p["peaks"]["copy_gb_s"].as_f64().unwrap() > 0.0);
}

/// metrics.jsonl without the timings.
fn metrics_no_time(run: &Path) -> Vec<serde_json::Value> {
    json_lines(&run.join("metrics.jsonl"))
        .into_iter()
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("seconds");
            v.as_object_mut().unwrap().remove("time");
            v
        })
        .collect()
}

#[test]
fn a_captured_step_replays_to_the_same_weights() {
    let Some(_) = emu_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // 10 examples in batches of 4: the third batch of each epoch is short and runs eagerly.
    let small = ["--task", "fundus", "--size", "32", "--limit-train", "10", "--batch-size", "4", "--limit-test", "4"];
    let methods: [&[&str]; 3] = [
        &["--method", "mtcool", "--noise-samples", "2", "--inner-steps", "2", "--b", "0.05"],
        &["--method", "joint"],
        &["--method", "mtcool", "--fusion", "attention", "--optimizer", "sgd", "--b", "0.05"],
    ];
    for (i, m) in methods.iter().enumerate() {
        let args = [&small[..], m, &["--epochs", "3", "--seed", "6"]].concat();
        let (eager, graph) = (tmp.path().join(format!("eager{i}")), tmp.path().join(format!("graph{i}")));
        ok(train_cmd("cuda", &args, &eager).output().unwrap());
        ok(train_cmd("cuda", &[&args[..], &["--graph"]].concat(), &graph).output().unwrap());
        let replays = json(&graph.join("summary.json"))["graph_replays"].as_u64().unwrap();
        assert!(replays >= 3, "{m:?}: only {replays} steps replayed the graph");
        let (a, b) =
            (fs::read(eager.join("model.safetensors")).unwrap(), fs::read(graph.join("model.safetensors")).unwrap());
        assert!(a == b, "{m:?}: the captured step's weights differ from the uncaptured step's");
        assert_eq!(metrics_no_time(&eager), metrics_no_time(&graph), "{m:?}");
    }
    // What cannot be captured is refused before anything is written.
    for (extra, device, why) in [
        (&["--graph"][..], "cpu", "--graph needs --device cuda"),
        (&["--graph", "--method", "pcgrad"][..], "cuda", "gradient combiner runs on the host"),
        (&["--graph", "--skip-nonfinite"][..], "cuda", "--skip-nonfinite"),
    ] {
        let out = tmp.path().join("refused");
        let o = train_cmd(device, &[&small[..], extra].concat(), &out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.lines().any(|l| l.starts_with("error:") && l.contains(why)), "{err}");
        assert!(!out.exists(), "{extra:?}: the run folder was created");
    }
}

/// The Predictor's logits on the CPU and, after `to_backend`, on the GPU; and an op given a host and a
/// GPU tensor.
fn predictor_and_mismatch() {
    use child_cases::*;
    use mtcool::backend::dispatch::{self, DeviceMismatch};
    use mtcool::model::Method;
    use mtcool::predict::Predictor;
    let gpu = gpu();
    let backend = mtcool::backend::Backend::Cuda(gpu.clone());
    let (m, b, _) = setup(Method::Mtcool, &mtcool::backend::Backend::Cpu);
    let mut p = Predictor::from_model(m);
    let cpu = p.logits(&b.x).unwrap();
    p.to_backend(&backend).unwrap();
    let on_gpu = p.logits(&b.x).unwrap();
    let diff = cpu.iter().zip(&on_gpu).map(|(a, g)| a.rel_err(g)).fold(0.0f64, f64::max);
    println!("logits_max_diff={diff}");
    let host = mtcool::Tensor::full(&[4], 1.0);
    let dev = host.to_backend(&backend).unwrap();
    let err = dispatch::add(&host, &dev).unwrap_err();
    let kind = if err.downcast_ref::<DeviceMismatch>().is_some() { "DeviceMismatch" } else { "other" };
    println!("mismatch={kind}");
    eprintln!("{err}");
}
