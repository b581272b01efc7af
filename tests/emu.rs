//! The emulated CUDA device (emu/) through the unchanged cudarc path: each of its checks shown to fire
//! on a test-only kernel that breaks the rule it guards (emu/tests/checks.cu), and its driver API
//! (launch-configuration errors, unknown kernels, graphs, events, memory accounting, out of memory).
//!
//! The loader reads LD_LIBRARY_PATH once, at start-up, so each case runs in a child process: this
//! test binary again, with LD_LIBRARY_PATH at the emulator and MTCOOL_EMU_TEST_CHILD naming the case,
//! running the ignored test `child`. The child prints `key=value` lines; the parent asserts on them.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

const CHILD: &str = "MTCOOL_EMU_TEST_CHILD";

/// The emulator's folder, or None (skip) when it was not built; under CI it must have been.
fn emu_dir(var: &str, dir: &'static str) -> Option<PathBuf> {
    if dir.is_empty() {
        assert!(
            std::env::var("CI").is_err(),
            "{var} is empty: the emulated device was not built (see the build warning)"
        );
        println!("skipping: the emulated device was not built");
        return None;
    }
    Some(PathBuf::from(dir))
}

/// Runs `case` in a child process on the plain (or AddressSanitizer) build of the emulator.
fn run_case(case: &str, asan: bool, env: &[(&str, &str)]) -> Option<Output> {
    let dir = if asan {
        emu_dir("MTCOOL_EMU_ASAN_DIR", env!("MTCOOL_EMU_ASAN_DIR"))?
    } else {
        emu_dir("MTCOOL_EMU_DIR", env!("MTCOOL_EMU_DIR"))?
    };
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .env("LD_LIBRARY_PATH", &dir)
        .env("MTCOOL_EMU_THREADS", "2")
        .envs(env.iter().copied());
    if asan {
        cmd.env("LD_PRELOAD", env!("MTCOOL_EMU_LIBASAN")).env("ASAN_OPTIONS", "detect_leaks=0");
    }
    Some(cmd.output().expect("running the child"))
}

/// The unchanged `mtcool` binary with `args` on the plain emulator (None: skip, see `emu_dir`).
fn mtcool_on_emu(args: &[&str], env: &[(&str, &str)]) -> Option<Output> {
    let dir = emu_dir("MTCOOL_EMU_DIR", env!("MTCOOL_EMU_DIR"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtcool"));
    cmd.args(args).env("LD_LIBRARY_PATH", dir).envs(env.iter().copied());
    Some(cmd.output().expect("running mtcool"))
}

/// Runs `case` on the plain build, asserts the child succeeded, returns its (stdout, stderr).
fn run_ok(case: &str, env: &[(&str, &str)]) -> Option<(String, String)> {
    let o = run_case(case, false, env)?;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    Some((out, err))
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// The value of `key=` in the child's output.
fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    stdout.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no {key}= in:\n{stdout}"))
}

// ---------------------------------------------------------------------------------------------------
// The checks, each made to fire.

#[test]
fn a_missing_syncthreads_is_reported_as_a_race_and_the_barrier_fixes_it() {
    let Some((out, err)) = run_ok("syncthreads", &[("MTCOOL_EMU_SCHEDULE", "check")]) else { return };
    assert!(value(&out, "missing").contains("CUDA_ERROR_LAUNCH_FAILED"), "{out}");
    assert!(err.contains("kernel emutest_missing_syncthreads: race"), "{err}");
    assert_eq!(value(&out, "with"), "ok", "{out}\n{err}");
    assert_eq!(value(&out, "with_values"), "right", "{out}");
}

#[test]
fn a_warp_synchronous_reduction_without_syncwarp_is_reported_as_a_race() {
    let Some((out, err)) = run_ok("syncwarp", &[("MTCOOL_EMU_SCHEDULE", "check")]) else { return };
    assert!(value(&out, "without").contains("CUDA_ERROR_LAUNCH_FAILED"), "{out}");
    assert!(err.contains("kernel emutest_warp_sum_no_syncwarp: race"), "{err}");
    assert_eq!(value(&out, "with"), "ok", "{out}\n{err}");
    assert_eq!(value(&out, "with_sum"), "496", "{out}");
}

#[test]
fn one_thread_order_alone_does_not_see_the_race_which_is_why_check_runs_three() {
    // With one order there is nothing to compare: the racy kernel "succeeds" with a wrong sum (in
    // forward order lane 0 runs its whole loop before lanes 1..31 have even stored their inputs).
    let Some(o) = run_case("syncwarp", false, &[("MTCOOL_EMU_SCHEDULE", "forward")]) else { return };
    let (out, err) = text(&o);
    assert_eq!(value(&out, "without"), "ok", "{out}\n{err}");
    assert_ne!(value(&out, "without_sum"), "496", "{out}");
    assert_eq!(value(&out, "with_sum"), "496", "{out}");
}

#[test]
fn a_read_past_the_end_of_a_buffer_is_caught_by_the_asan_build() {
    let Some(o) = run_case("past_end", true, &[]) else { return };
    let (out, err) = text(&o);
    assert!(!o.status.success(), "the out-of-bounds read went unnoticed:\n{out}\n{err}");
    assert!(err.contains("heap-buffer-overflow") && err.contains("emutest_read_past_end"), "{err}");
    // In bounds, the same kernel runs clean under ASan.
    let Some(o) = run_case("in_bounds", true, &[]) else { return };
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(value(&out, "in_bounds"), "ok", "{out}");
}

#[test]
fn a_read_of_never_written_device_memory_gives_nan() {
    let Some((out, _)) = run_ok("unwritten", &[]) else { return };
    assert_eq!(value(&out, "unwritten_nan"), "1000/1000", "{out}");
    assert_eq!(value(&out, "written_nan"), "0/1000", "{out}");
}

#[test]
fn a_shuffle_that_waits_for_an_exited_lane_fails_the_launch() {
    let Some(o) = run_case("exited_lane", false, &[]) else { return };
    let (out, err) = text(&o);
    assert!(value(&out, "exited").contains("CUDA_ERROR_LAUNCH_FAILED"), "{out}");
    assert!(err.contains("lane 16 of warp 0, which has exited"), "{err}");
}

// ---------------------------------------------------------------------------------------------------
// The driver API.

#[test]
fn launch_configuration_errors_and_unknown_kernels_return_the_drivers_codes() {
    let Some((out, _)) = run_ok("config", &[]) else { return };
    assert_eq!(value(&out, "unknown_kernel"), "CUDA_ERROR_NOT_FOUND");
    assert_eq!(value(&out, "zero_grid"), "CUDA_ERROR_INVALID_VALUE");
    assert_eq!(value(&out, "block_2048"), "CUDA_ERROR_INVALID_VALUE");
    assert_eq!(value(&out, "over_launch_bounds"), "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES");
    assert_eq!(value(&out, "shared_64k"), "CUDA_ERROR_INVALID_VALUE");
    assert_eq!(value(&out, "not_a_fatbin"), "CUDA_ERROR_INVALID_IMAGE");
    assert_eq!(value(&out, "name"), "mtcool-emu (emulated H100 on the CPU; not a GPU)");
    assert_eq!(value(&out, "sms"), "132");
    assert_eq!(value(&out, "cc"), "9.0");
    assert_eq!(value(&out, "pools"), "0");
}

#[test]
fn a_captured_graph_runs_only_when_launched_and_replays_on_current_memory() {
    let Some((out, _)) = run_ok("graph", &[]) else { return };
    assert_eq!(value(&out, "after_capture"), "untouched", "{out}");
    assert_eq!(value(&out, "after_launch"), "a+b", "{out}");
    assert_eq!(value(&out, "after_relaunch"), "a2+b", "{out}");
    assert_eq!(value(&out, "sync_while_capturing"), "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED", "{out}");
    // Events recorded in the capture are stamped when a launch of the graph reaches them.
    assert_eq!(value(&out, "events_before_launch"), "CUDA_ERROR_INVALID_HANDLE", "{out}");
    assert_eq!(value(&out, "events_after_launch"), "ok", "{out}");
}

#[test]
fn events_time_the_work_between_them_and_refuse_without_timing() {
    let Some((out, _)) = run_ok("events", &[]) else { return };
    let ms: f32 = value(&out, "elapsed_ms").parse().unwrap();
    assert!(ms >= 20.0, "slept 20 ms between the events, measured {ms} ms");
    assert_eq!(value(&out, "no_timing"), "CUDA_ERROR_INVALID_HANDLE");
}

#[test]
fn allocations_are_counted_and_freed() {
    let Some((out, _)) = run_ok("accounting", &[]) else { return };
    assert_eq!(value(&out, "delta_live_allocs"), "1");
    assert_eq!(value(&out, "delta_live_bytes"), "4000");
    assert_eq!(value(&out, "delta_alloc_calls"), "1");
    assert_eq!(value(&out, "after_drop_live_bytes_delta"), "0");
}

#[test]
fn running_out_of_device_memory_is_one_clear_error() {
    let Some((out, _)) = run_ok("oom", &[("MTCOOL_EMU_MEM_LIMIT", "1000000")]) else { return };
    assert_eq!(
        value(&out, "oom"),
        "allocating 3.8 MiB of GPU memory failed (CUDA_ERROR_OUT_OF_MEMORY): the GPU is out of memory: try a smaller --batch-size"
    );
}

#[test]
fn the_caching_allocator_makes_no_driver_allocation_once_a_step_has_run() {
    let Some((out, _)) = run_ok("cache", &[]) else { return };
    let allocs: Vec<u64> = value(&out, "driver_allocs_after_steps").split(',').map(|v| v.parse().unwrap()).collect();
    assert!(allocs[0] > 0, "{out}");
    assert_eq!(allocs[1], allocs[0], "step 2 called cuMemAlloc: {out}");
    assert_eq!(allocs[2], allocs[0], "step 3 called cuMemAlloc: {out}");
    assert_eq!(value(&out, "cache_driver_allocs_equal"), "true", "{out}");
    assert_eq!(value(&out, "reuses_per_step"), "7", "{out}");
    assert_eq!(value(&out, "same_result"), "true", "{out}");
}

#[test]
fn the_binary_reports_gpu_out_of_memory_in_one_error_line_without_a_panic() {
    let args = ["check", "parity", "--device", "cuda"];
    let Some(o) = mtcool_on_emu(&args, &[("MTCOOL_EMU_MEM_LIMIT", "100000")]) else { return };
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("CUDA_ERROR_OUT_OF_MEMORY") && errors[0].contains("--batch-size"), "{err}");
}

#[test]
fn a_failing_kernel_fails_parity_and_the_other_families_still_run() {
    let args = ["check", "parity", "--device", "cuda", "--json"];
    let Some(o) = mtcool_on_emu(&args, &[("MTCOOL_EMU_FAIL_KERNEL", "relu_backward")]) else { return };
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("parity cases failed"), "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kernel = |name: &str| doc["kernels"].as_array().unwrap().iter().find(|k| k["kernel"] == name).unwrap().clone();
    assert_eq!(kernel("relu_backward")["pass"], false);
    assert_eq!(kernel("relu")["pass"], true, "earlier kernels of the family passed");
    for later in ["noise_uniform", "conv2d_forward", "softmax_lastdim_backward"] {
        assert_eq!(kernel(later)["pass"], true, "{later} (a later family) did not run: {}", kernel(later));
    }
}

#[test]
fn info_names_the_emulated_device_and_auto_does_not_pick_it() {
    let Some(json) = mtcool_on_emu(&["info", "--json"], &[]) else { return };
    let Some(plain) = mtcool_on_emu(&["info"], &[]) else { return };
    let (json, plain) = (text(&json).0, text(&plain).0);
    let info: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(info["gpu"]["info"]["emulated"], true, "{}", info["gpu"]);
    assert_eq!(info["gpu"]["info"]["compute_capability"], serde_json::json!([9, 0]));
    assert_eq!(info["auto_device"], "cpu", "{}", info["auto_message"]);
    assert!(info["auto_message"].as_str().unwrap().contains("mtcool-emu"), "{}", info["auto_message"]);
    assert!(plain.contains("[emulated device"), "{plain}");
}

// ---------------------------------------------------------------------------------------------------
// The child side.

fn code(e: cudarc::driver::DriverError) -> String {
    format!("{:?}", e.0)
}

fn outcome<T>(r: Result<T, cudarc::driver::DriverError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => code(e),
    }
}

/// A module image the emulator serves the test kernels from: a fatbin header, then the group tag.
fn emutest_image() -> Vec<u8> {
    let tag = b"MTCOOL-EMU-GROUP:emutest\0";
    let mut v = Vec::new();
    v.extend_from_slice(&0xBA55ED50u32.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&16u16.to_le_bytes());
    v.extend_from_slice(&(tag.len() as u64).to_le_bytes());
    v.extend_from_slice(tag);
    v
}

struct Emu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    tests: Arc<CudaModule>,
}

impl Emu {
    fn new() -> Emu {
        let ctx = CudaContext::new(0).expect("context on the emulated device");
        let stream = ctx.new_stream().unwrap();
        let tests = ctx.load_module(Ptx::from_binary(emutest_image())).unwrap();
        Emu { ctx, stream, tests }
    }
    fn f(&self, name: &str) -> CudaFunction {
        self.tests.load_function(name).unwrap()
    }
}

fn cfg(blocks: u32, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Launches test kernel `name` over (out, in) with `blocks` × `threads`; returns the outcome and out.
fn launch_out_in(e: &Emu, name: &str, input: &[f32], out_len: usize, blocks: u32, threads: u32) -> (String, Vec<f32>) {
    let f = e.f(name);
    let inp = e.stream.clone_htod(input).unwrap();
    let mut out = e.stream.alloc_zeros::<f32>(out_len).unwrap();
    let mut b = e.stream.launch_builder(&f);
    b.arg(&mut out).arg(&inp);
    let r = outcome(unsafe { b.launch(cfg(blocks, threads)) });
    (r, e.stream.clone_dtoh(&out).unwrap())
}

#[test]
#[ignore = "runs only as the child process of the tests above"]
fn child() {
    let Ok(case) = std::env::var(CHILD) else { return };
    println!(); // the harness prints "test child ... " without a newline
    let e = Emu::new();
    match case.as_str() {
        "syncthreads" => {
            let input: Vec<f32> = (0..512).map(|i| i as f32).collect();
            let (r, _) = launch_out_in(&e, "emutest_missing_syncthreads", &input, 512, 2, 256);
            println!("missing={r}");
            let (r, out) = launch_out_in(&e, "emutest_with_syncthreads", &input, 512, 2, 256);
            println!("with={r}");
            let right = (0..512).all(|i| out[i] == input[(i / 256) * 256 + (i % 256 + 1) % 256]);
            println!("with_values={}", if right { "right" } else { "wrong" });
        }
        "syncwarp" => {
            let input: Vec<f32> = (0..32).map(|i| i as f32).collect();
            let (r, out) = launch_out_in(&e, "emutest_warp_sum_no_syncwarp", &input, 1, 1, 32);
            println!("without={r}");
            println!("without_sum={}", out[0]);
            let (r, out) = launch_out_in(&e, "emutest_warp_sum_syncwarp", &input, 1, 1, 32);
            println!("with={r}");
            println!("with_sum={}", out[0]);
        }
        "past_end" | "in_bounds" => {
            let f = e.f("emutest_read_past_end");
            let inp = e.stream.clone_htod(&vec![1.0f32; 1000]).unwrap();
            let mut out = e.stream.alloc_zeros::<f32>(1000).unwrap();
            let n: i32 = if case == "past_end" { 1000 } else { 999 };
            let mut b = e.stream.launch_builder(&f);
            b.arg(&mut out).arg(&inp).arg(&n);
            println!("{case}={}", outcome(unsafe { b.launch(cfg(4, 256)) }));
        }
        "unwritten" => {
            let f = e.f("emutest_read_unwritten");
            let n = 1000i32;
            let never = unsafe { e.stream.alloc::<f32>(1000) }.unwrap();
            let written = e.stream.clone_htod(&vec![2.0f32; 1000]).unwrap();
            for (key, src) in [("unwritten_nan", &never), ("written_nan", &written)] {
                let mut out = e.stream.alloc_zeros::<f32>(1000).unwrap();
                let mut b = e.stream.launch_builder(&f);
                b.arg(&mut out).arg(src).arg(&n);
                unsafe { b.launch(cfg(4, 256)) }.unwrap();
                let nan = e.stream.clone_dtoh(&out).unwrap().iter().filter(|v| v.is_nan()).count();
                println!("{key}={nan}/1000");
            }
        }
        "exited_lane" => {
            let (r, _) = launch_out_in(&e, "emutest_shuffle_exited_lane", &[1.0; 32], 32, 1, 32);
            println!("exited={r}");
        }
        "config" => child_config(&e),
        "graph" => child_graph(&e),
        "events" => {
            let start = e.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
            let end = e.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
            start.record(&e.stream).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            end.record(&e.stream).unwrap();
            println!("elapsed_ms={}", start.elapsed_ms(&end).unwrap());
            let a = e.ctx.new_event(None).unwrap();
            let b = e.ctx.new_event(None).unwrap();
            a.record(&e.stream).unwrap();
            b.record(&e.stream).unwrap();
            println!("no_timing={}", outcome(a.elapsed_ms(&b)));
        }
        "accounting" => {
            let before = stats();
            let buf = e.stream.alloc_zeros::<f32>(1000).unwrap();
            let during = stats();
            drop(buf);
            let after = stats();
            println!("delta_live_allocs={}", during[0] - before[0]);
            println!("delta_live_bytes={}", during[1] - before[1]);
            println!("delta_alloc_calls={}", during[3] - before[3]);
            println!("after_drop_live_bytes_delta={}", after[1] - before[1]);
        }
        "cache" => {
            // One "step" of f32 ops: upload x and w, y = relu(x·w), dy = y, the matmul backward and the
            // relu backward: 7 tensors. Its buffers go back to the cache when the step's tensors drop.
            use mtcool::Tensor;
            let gpu = mtcool::backend::cuda::Gpu::new(0).unwrap();
            let x = Tensor::new(&[33, 70], (0..33 * 70).map(|i| (i % 7) as f32 - 3.0).collect()).unwrap();
            let w = Tensor::new(&[70, 20], (0..70 * 20).map(|i| (i % 5) as f32 * 0.25).collect()).unwrap();
            let step = || {
                let (gx, gw) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
                let y = gpu.matmul(&gx, &gw).unwrap();
                let r = gpu.relu(&y).unwrap();
                let dr = gpu.relu_backward(&r, &y).unwrap();
                let (da, db) = gpu.matmul_backward(&gx, &gw, &dr).unwrap();
                (gpu.download(&da).unwrap(), gpu.download(&db).unwrap())
            };
            let mut allocs = Vec::new();
            let mut results = Vec::new();
            for _ in 0..3 {
                results.push(step());
                allocs.push(stats()[3].to_string());
            }
            println!("driver_allocs_after_steps={}", allocs.join(","));
            let m = gpu.memory_stats();
            println!("cache_driver_allocs_equal={}", m.driver_allocs == 7);
            println!("reuses_per_step={}", m.reuses / 2);
            let same = results.iter().all(|r| r.0.data() == results[0].0.data() && r.1.data() == results[0].1.data());
            println!("same_result={same}");
        }
        "oom" => {
            let gpu = mtcool::backend::cuda::Gpu::new(0).unwrap();
            let err = gpu.zeros(&[1_000_000]).err().expect("1M floats do not fit in a 1 MB device");
            println!("oom={err:#}");
        }
        other => panic!("unknown case {other}"),
    }
}

use common::emu_stats as stats;

fn product_module(e: &Emu) -> Arc<CudaModule> {
    let fatbin = mtcool::kernels::fatbin().expect("the kernels were compiled (nvcc)");
    e.ctx.load_module(Ptx::from_binary(fatbin.to_vec())).unwrap()
}

fn child_config(e: &Emu) {
    let m = product_module(e);
    println!("unknown_kernel={}", outcome(m.load_function("no_such_kernel")));
    let add = m.load_function("add").unwrap();
    let conv = m.load_function("conv2d_forward").unwrap();
    let a = e.stream.clone_htod(&[1.0f32; 8]).unwrap();
    let mut y = e.stream.alloc_zeros::<f32>(8).unwrap();
    let n = 8u64;
    let mut try_cfg = |f: &CudaFunction, c: LaunchConfig| {
        let mut b = e.stream.launch_builder(f);
        b.arg(&mut y).arg(&a).arg(&a).arg(&n);
        outcome(unsafe { b.launch(c) })
    };
    println!("zero_grid={}", try_cfg(&add, cfg(0, 32)));
    println!("block_2048={}", try_cfg(&add, cfg(1, 2048)));
    println!("shared_64k={}", try_cfg(&add, LaunchConfig { shared_mem_bytes: 64 * 1024, ..cfg(1, 32) }));
    println!("over_launch_bounds={}", try_cfg(&conv, cfg(1, 512)));
    println!("not_a_fatbin={}", outcome(e.ctx.load_module(Ptx::from_binary(b"not a fatbin at all".to_vec()))));
    let dev = cudarc::driver::result::device::get(0).unwrap();
    println!("name={}", cudarc::driver::result::device::get_name(dev).unwrap());
    let attr = |a| unsafe { cudarc::driver::result::device::get_attribute(dev, a) }.unwrap();
    use sys::CUdevice_attribute::*;
    println!("sms={}", attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT));
    println!(
        "cc={}.{}",
        attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
        attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
    );
    println!("pools={}", attr(CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED));
}

fn child_graph(e: &Emu) {
    let m = product_module(e);
    let add = m.load_function("add").unwrap();
    let n = 1000u64;
    let a: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..1000).map(|i| 0.5 * i as f32).collect();
    let mut ga = e.stream.clone_htod(&a).unwrap();
    let gb = e.stream.clone_htod(&b).unwrap();
    let mut y = e.stream.alloc_zeros::<f32>(1000).unwrap();
    let start = e.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
    let end = e.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
    e.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).unwrap();
    start.record(&e.stream).unwrap();
    let mut l = e.stream.launch_builder(&add);
    l.arg(&mut y).arg(&ga).arg(&gb).arg(&n);
    unsafe { l.launch(cfg(4, 256)) }.unwrap();
    end.record(&e.stream).unwrap();
    println!("sync_while_capturing={}", outcome(e.stream.synchronize()));
    let graph = e.stream.end_capture(sys::CUgraphInstantiate_flags(0)).unwrap().expect("a graph");
    println!("events_before_launch={}", outcome(start.elapsed_ms(&end)));
    let y0 = e.stream.clone_dtoh(&y).unwrap();
    println!("after_capture={}", if y0.iter().all(|&v| v == 0.0) { "untouched" } else { "written" });
    graph.launch().unwrap();
    println!("events_after_launch={}", outcome(start.elapsed_ms(&end)));
    let y1 = e.stream.clone_dtoh(&y).unwrap();
    let sum_ok = |y: &[f32], a: &[f32]| y.iter().enumerate().all(|(i, &v)| v == a[i] + b[i]);
    println!("after_launch={}", if sum_ok(&y1, &a) { "a+b" } else { "wrong" });
    let a2: Vec<f32> = a.iter().map(|v| v * 3.0).collect();
    e.stream.memcpy_htod(&a2, &mut ga).unwrap();
    graph.launch().unwrap();
    let y2 = e.stream.clone_dtoh(&y).unwrap();
    println!("after_relaunch={}", if sum_ok(&y2, &a2) { "a2+b" } else { "wrong" });
}
