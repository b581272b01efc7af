//! `mtcool bench`: training-step throughput on one fixed mini-batch.
//!
//! The model is built as `mtcool train` would build it; one batch of `batch_size` training examples
//! is stepped on `warmup + steps` times; each timed step's wall time is recorded and the median (with
//! the 10th and 90th percentiles) reported, with images/s = batch_size / median. The losses of the first
//! steps are recorded too: `bench/torch_ref.py` replays the same steps from the same initial weights
//! and batch (written by `--save DIR`) and checks it computes the same losses before timing itself.
//!
//! On a GPU the model, optimiser state and batch live on the device; each step is timed with a pair of
//! CUDA events (the step waits for its losses, so event and wall time agree closely), and the report
//! counts the driver allocations of the timed steps (the caching allocator makes them 0).

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::Serialize;

use super::{config::objective, data, train_step, TrainConfig};
use crate::backend::cuda::MemoryStats;
use crate::backend::Backend;
use crate::checkpoint;
use crate::model::MultiTaskModel;
use crate::mtl::{Batch, Objective};
use crate::optim::Optimizer;
use crate::profile::{self, OpStat};

/// Losses recorded for the PyTorch cross-check.
pub const CHECK_STEPS: usize = 3;

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub task: String,
    pub method: String,
    pub mode: Option<String>,
    pub batch_size: usize,
    pub lr: f32,
    /// MT-CooL's radius b (noise and box).
    pub b: f32,
    pub params: usize,
    pub threads: usize,
    pub warmup: usize,
    pub steps: usize,
    pub median_us: f64,
    pub p10_us: f64,
    pub p90_us: f64,
    pub images_per_s: f64,
    /// Both tasks' losses at each of the first `CHECK_STEPS` steps (from the initial weights).
    pub first_losses: Vec<Vec<f32>>,
    pub device: String,
    /// How steps were timed: "wall clock" (CPU) or "cuda events" (GPU).
    pub timer: String,
    /// Steps through a captured CUDA graph (`--graph`): how many of them were replays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_replays: Option<u64>,
    /// GPU runs: driver allocations during the timed steps, and the allocator's counts at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_driver_allocs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<MemoryStats>,
}

/// The `q`-quantile (nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// What a benchmark steps on: the model as `train` builds it, its optimiser, one batch, the objective,
/// and where they run.
struct Setup {
    backend: Backend,
    graph: Option<super::graph::GraphStep>,
    model: MultiTaskModel,
    opt: Optimizer,
    batch: Batch,
    obj: Objective,
}

fn setup(cfg: &TrainConfig, backend: &Backend) -> Result<Setup> {
    cfg.validate()?;
    let mut dcfg = cfg.data.clone();
    dcfg.limit_train = Some(cfg.batch_size);
    dcfg.limit_test = Some(1);
    let (train_set, _) = data::load(&dcfg)?;
    ensure!(
        train_set.len() >= cfg.batch_size,
        "the training set has {} examples, fewer than the batch size {}",
        train_set.len(),
        cfg.batch_size
    );
    let batch = train_set.batch(&(0..cfg.batch_size).collect::<Vec<_>>());
    let obj = objective(cfg, &data::setup(&cfg.data), train_set.as_ref());
    let (mut model, mut opt) = (MultiTaskModel::new(cfg.model_config(), cfg.seed), cfg.optimizer());
    model.store.to_backend(backend)?;
    opt.to_backend(backend)?;
    Ok(Setup { backend: backend.clone(), graph: None, model, opt, batch, obj })
}

fn f32_view(shape: Vec<usize>, data: &[f32]) -> Result<TensorView<'_>, safetensors::SafeTensorError> {
    TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(data))
}

fn check_counts(warmup: usize, steps: usize) -> Result<()> {
    ensure!((1..=100_000).contains(&steps), "--steps must be in 1..=100000, got {steps}");
    ensure!(warmup <= 100_000, "--warmup must be at most 100000, got {warmup}");
    Ok(())
}

/// Runs the benchmark; with `save`, writes `model.safetensors` (initial weights), `batch.safetensors`
/// (x, labels1, labels2 as f32) and `bench.json` there.
pub fn run(
    cfg: &TrainConfig,
    warmup: usize,
    steps: usize,
    device: &str,
    save: Option<&Path>,
    backend: &Backend,
    graph: bool,
) -> Result<BenchReport> {
    check_counts(warmup, steps)?;
    if graph {
        super::graph::check(cfg, backend)?;
        ensure!(
            warmup as u32 > super::graph::WARMUP,
            "--graph needs --warmup of at least {} (the eager steps and the capture are not timed)",
            super::graph::WARMUP + 1
        );
    }
    let mut su = setup(cfg, backend)?;
    su.graph = match (graph, backend) {
        (true, Backend::Cuda(gpu)) => Some(super::graph::GraphStep::new(gpu.clone())),
        _ => None,
    };
    if let Some(dir) = save {
        let batch = &su.batch;
        std::fs::create_dir_all(dir)?;
        checkpoint::save(&su.model, &dir.join("model.safetensors"))?;
        let labels: Vec<Vec<f32>> = batch.labels.iter().map(|l| l.iter().map(|&v| v as f32).collect()).collect();
        let mut views = vec![
            ("x".to_string(), f32_view(batch.x.shape().to_vec(), batch.x.data())?),
            ("labels1".to_string(), f32_view(vec![labels[0].len()], &labels[0])?),
            ("labels2".to_string(), f32_view(vec![labels[1].len()], &labels[1])?),
        ];
        // Class weights of a weighted cross-entropy (fundus glaucoma), so the reference can use them.
        for (t, w) in su.obj.class_weights.iter().enumerate() {
            if let Some(w) = w {
                views.push((format!("class_weights{}", t + 1), f32_view(vec![w.len()], w)?));
            }
        }
        checkpoint::write_atomic(&dir.join("batch.safetensors"), &safetensors::serialize(views, None)?)?;
    }
    let report = timed_steps(cfg, &mut su, warmup, steps, device)?;
    if let Some(dir) = save {
        super::write_json(&dir.join("bench.json"), &report)?;
    }
    Ok(report)
}

/// Steps `warmup + steps` times (global steps 0, 1, …) and reports the timed ones.
fn timed_steps(cfg: &TrainConfig, su: &mut Setup, warmup: usize, steps: usize, device: &str) -> Result<BenchReport> {
    let mut first_losses = vec![];
    let mut times = vec![];
    let mut allocs_before_timed = 0;
    for step in 0..warmup + steps {
        let mut one = || match &mut su.graph {
            Some(g) => g.step(cfg, &mut su.model, &mut su.opt, &su.batch, &su.obj, step as u32),
            None => train_step(cfg, &mut su.model, &mut su.opt, &su.batch, &su.obj, step as u32),
        };
        if step == warmup {
            allocs_before_timed = driver_allocs(&su.backend);
        }
        let (s, us) = match &su.backend {
            Backend::Cuda(gpu) => gpu.time_us(one)?,
            Backend::Cpu => {
                let start = Instant::now();
                let s = one()?;
                (s, start.elapsed().as_secs_f64() * 1e6)
            }
        };
        let s = s.host()?;
        ensure!(s.loss.iter().all(|l| l.is_finite()), "non-finite loss {:?} at benchmark step {}", s.loss, step + 1);
        if first_losses.len() < CHECK_STEPS {
            first_losses.push(s.loss);
        }
        if step >= warmup {
            times.push(us);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = quantile(&times, 0.5);
    Ok(BenchReport {
        task: format!("{:?}", cfg.data.task).to_lowercase(),
        method: format!("{:?}", cfg.method).to_lowercase(),
        mode: (cfg.method == crate::model::Method::Mtcool).then(|| format!("{:?}", cfg.mode).to_lowercase()),
        batch_size: cfg.batch_size,
        lr: cfg.lr,
        b: cfg.b,
        params: su.model.param_count(),
        threads: crate::backend::cpu::gemm::num_threads(),
        warmup,
        steps,
        median_us: median,
        p10_us: quantile(&times, 0.1),
        p90_us: quantile(&times, 0.9),
        images_per_s: cfg.batch_size as f64 / (median * 1e-6),
        first_losses,
        device: device.to_string(),
        timer: if su.backend.is_cuda() { "cuda events" } else { "wall clock" }.to_string(),
        graph_replays: su.graph.as_ref().map(|g| g.replays),
        timed_driver_allocs: su.backend.is_cuda().then(|| driver_allocs(&su.backend) - allocs_before_timed),
        gpu_memory: match &su.backend {
            Backend::Cuda(gpu) => Some(gpu.memory_stats()),
            Backend::Cpu => None,
        },
    })
}

fn driver_allocs(backend: &Backend) -> u64 {
    match backend {
        Backend::Cuda(gpu) => gpu.memory_stats().driver_allocs,
        Backend::Cpu => 0,
    }
}

/// This machine's measured peaks, the yardsticks of `mtcool profile`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Peaks {
    /// Large buffer copy, counting bytes read + written.
    pub copy_gb_s: f64,
    /// SGEMM on sgemm_n³: `gemm::sgemm` with all threads, or the GPU's sgemm kernel.
    pub sgemm_gflop_s: f64,
    pub sgemm_n: usize,
    /// CPU: the FMA peak of the kernels' ISA on all threads (a loop of independent vector FMAs), the
    /// ceiling FLOP rates are quoted against; with it, the ISA's name. GPU: none (SGEMM is used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fma_gflop_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isa: Option<&'static str>,
}

impl Peaks {
    /// GFLOP/s of `flops` (matrix work) or else GB/s of `bytes` done in `secs`, and that as a % of the
    /// matching peak (the FMA peak on a CPU, SGEMM on a GPU, for FLOPs; copy bandwidth for bytes).
    fn rates(&self, flops: f64, bytes: f64, secs: f64) -> (Option<f64>, Option<f64>, Option<f64>) {
        let gflop_s = (flops > 0.0).then(|| flops / secs / 1e9);
        let gb_s = (flops == 0.0 && bytes > 0.0).then(|| bytes / secs / 1e9);
        let flop_peak = self.fma_gflop_s.filter(|&p| p > 0.0).unwrap_or(self.sgemm_gflop_s);
        let peak_pct = gflop_s.map(|g| 100.0 * g / flop_peak).or(gb_s.map(|g| 100.0 * g / self.copy_gb_s));
        (gflop_s, gb_s, peak_pct)
    }
}

/// Best of a few runs of a 256 MiB copy and a 1024³ SGEMM, and the FMA peak.
pub fn measure_peaks() -> Peaks {
    let n = 64 << 20; // floats: 256 MiB
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    let copy_gb_s = 2.0 * 4.0 * n as f64 / best / 1e9;
    let m = 1024;
    let (a, b) = (vec![0.5f32; m * m], vec![0.25f32; m * m]);
    let mut c = vec![0.0f32; m * m];
    let mut best = f64::INFINITY;
    let mut fma = 0f64;
    // SGEMM and the FMA loop alternate, the best of each kept: on a shared VM a core is sometimes
    // taken away for a while, and a ratio of two numbers measured apart would show it. Each SGEMM
    // turn is three calls: the first after the FMA loop also wakes the parked pool workers.
    for _ in 0..6 {
        fma = fma.max(crate::backend::cpu::gemm::fma_peak(crate::backend::cpu::gemm::num_threads(), 0.03));
        for _ in 0..3 {
            let t = Instant::now();
            crate::backend::cpu::gemm::sgemm(false, false, m, m, m, 1.0, &a, m, &b, m, 0.0, &mut c, m);
            best = best.min(t.elapsed().as_secs_f64());
            std::hint::black_box(&c);
        }
    }
    Peaks {
        copy_gb_s,
        sgemm_gflop_s: 2.0 * (m * m * m) as f64 / best / 1e9,
        sgemm_n: m,
        fma_gflop_s: Some(fma),
        isa: Some(crate::backend::cpu::gemm::isa().name()),
    }
}

/// The GPU's peaks, timed with CUDA events: best of a few device-to-device copies of 256 MiB and
/// 1024³ runs of the sgemm kernel (an emulated device: 16 MiB and 128³, it runs on the CPU).
pub fn measure_gpu_peaks(gpu: &crate::backend::cuda::Gpu) -> Result<Peaks> {
    let emulated = gpu.info().emulated;
    let n = if emulated { 4 << 20 } else { 64 << 20 };
    let src = gpu.zeros(&[n])?;
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let (_, us) = gpu.time_us(|| gpu.copy_reshaped(&src, &[n]))?;
        best = best.min(us);
    }
    let copy_gb_s = 2.0 * 4.0 * n as f64 / (best * 1e-6) / 1e9;
    let m = if emulated { 128 } else { 1024 };
    let a = gpu.upload(&crate::Tensor::full(&[m, m], 0.5))?;
    let b = gpu.upload(&crate::Tensor::full(&[m, m], 0.25))?;
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let (_, us) = gpu.time_us(|| gpu.sgemm(&a, false, &b, false, None, false))?;
        best = best.min(us);
    }
    let sgemm_gflop_s = 2.0 * (m * m * m) as f64 / (best * 1e-6) / 1e9;
    Ok(Peaks { copy_gb_s, sgemm_gflop_s, sgemm_n: m, fma_gflop_s: None, isa: None })
}

/// One kernel's share of the profiled steps (GPU runs), per step.
#[derive(Clone, Debug, Serialize)]
pub struct KernelRow {
    pub kernel: String,
    pub calls: f64,
    pub us: f64,
    /// Of all kernels' time.
    pub share: f64,
    /// Rates where the kernel's wrapper states its work (FLOPs for the matrix kernels, else bytes read
    /// and written), and that as a % of the matching measured peak.
    pub gflop_s: Option<f64>,
    pub gb_s: Option<f64>,
    pub peak_pct: Option<f64>,
}

/// One row of the profile: totals per step.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileRow {
    pub phase: String,
    pub op: String,
    pub calls: f64,
    pub us: f64,
    pub share: f64,
    pub gflop_s: Option<f64>,
    pub gb_s: Option<f64>,
    /// Of the matching peak: the FMA peak (CPU) or SGEMM (GPU) for FLOP-counted ops, copy bandwidth
    /// for the rest.
    pub peak_pct: Option<f64>,
    /// CPU with several threads: the same op's µs per step on one thread, and that over `us`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub us_one_thread: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_speedup: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    pub bench: BenchReport,
    pub peaks: Peaks,
    /// Wall time per step, and the part no op was charged with (gaps between ops).
    pub step_us: f64,
    pub unattributed_us: f64,
    pub rows: Vec<ProfileRow>,
    /// CPU with several threads: µs per profiled step on one thread (`MTCOOL_THREADS=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_us_one_thread: Option<f64>,
    /// GPU runs: per kernel, from a pair of CUDA events around each launch (largest first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelRow>,
}

/// Per-op profile, per step, largest first: `warmup` + `steps` unprofiled steps (the benchmark in the
/// report), then `steps` profiled ones.
pub fn profile(
    cfg: &TrainConfig,
    warmup: usize,
    steps: usize,
    device: &str,
    backend: &Backend,
) -> Result<ProfileReport> {
    check_counts(warmup, steps)?;
    ensure!(steps <= 10_000, "--steps must be in 1..=10000 for a profile, got {steps}");
    let peaks = match backend {
        Backend::Cpu => measure_peaks(),
        Backend::Cuda(gpu) => measure_gpu_peaks(gpu)?,
    };
    let mut su = setup(cfg, backend)?;
    // The unprofiled benchmark doubles as the warm-up of the profiled steps, which continue from it.
    let bench = timed_steps(cfg, &mut su, warmup, steps, device)?;
    if let Backend::Cuda(gpu) = backend {
        // Each op is charged with its kernels' time: wait for them before every clock reading.
        let g = gpu.clone();
        profile::set_barrier(Some(Box::new(move || {
            let _ = g.synchronize(); // a fault resurfaces at the next checked call
        })));
        gpu.start_kernel_timing();
    }
    let mut next_step = warmup + steps;
    let mut profiled = |su: &mut Setup| -> (Result<()>, f64, _) {
        profile::start();
        let t = Instant::now();
        let mut run = || -> Result<()> {
            for step in next_step..next_step + steps {
                train_step(cfg, &mut su.model, &mut su.opt, &su.batch, &su.obj, step as u32)?;
            }
            if let Backend::Cuda(gpu) = backend {
                gpu.synchronize()?;
            }
            Ok(())
        };
        let ran = run();
        next_step += steps;
        (ran, t.elapsed().as_secs_f64(), profile::stop())
    };
    let (ran, total, stats) = profiled(&mut su);
    // The same steps again on one thread (CPU, several threads): what the threads buy per op.
    let threads = crate::backend::cpu::gemm::num_threads();
    let one_thread = if matches!(backend, Backend::Cpu) && threads > 1 && ran.is_ok() {
        let saved = std::env::var("MTCOOL_THREADS").ok();
        std::env::set_var("MTCOOL_THREADS", "1");
        let (ran1, total1, stats1) = profiled(&mut su);
        match saved {
            Some(v) => std::env::set_var("MTCOOL_THREADS", v),
            None => std::env::remove_var("MTCOOL_THREADS"),
        }
        ran1?;
        Some((total1, stats1))
    } else {
        None
    };
    profile::set_barrier(None);
    let kernels = match backend {
        Backend::Cuda(gpu) => kernel_rows(gpu.stop_kernel_timing()?, steps as f64, &peaks),
        Backend::Cpu => vec![],
    };
    ran?;
    let per = steps as f64;
    let step_us = total / per * 1e6;
    let charged: f64 = stats.values().map(|s| s.seconds).sum();
    let mut rows: Vec<ProfileRow> = stats
        .into_iter()
        .map(|((phase, op), s): ((&str, &str), OpStat)| {
            let (gflop_s, gb_s, peak_pct) = peaks.rates(s.flops, s.bytes, s.seconds);
            let one = one_thread.as_ref().and_then(|(_, st)| st.get(&(phase, op))).map(|o| o.seconds / per * 1e6);
            ProfileRow {
                us_one_thread: one,
                thread_speedup: one.map(|o| o / (s.seconds / per * 1e6).max(1e-9)),
                phase: phase.to_string(),
                op: op.to_string(),
                calls: s.calls as f64 / per,
                us: s.seconds / per * 1e6,
                share: 100.0 * s.seconds / total,
                gflop_s,
                gb_s,
                peak_pct,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.us.total_cmp(&a.us));
    let step_us_one_thread = one_thread.map(|(t, _)| t / per * 1e6);
    let unattributed_us = (total - charged).max(0.0) / per * 1e6;
    Ok(ProfileReport { bench, peaks, step_us, unattributed_us, rows, step_us_one_thread, kernels })
}

/// Per-kernel totals per step of timed launches (kernel, µs, FLOPs, bytes), largest first, with the
/// rates of the kernels whose wrappers state their work, against the device's measured peaks.
fn kernel_rows(launches: Vec<(&'static str, f64, f64, f64)>, steps: f64, peaks: &Peaks) -> Vec<KernelRow> {
    #[derive(Default)]
    struct Sum {
        calls: u64,
        us: f64,
        flops: f64,
        bytes: f64,
    }
    let mut by: std::collections::BTreeMap<&str, Sum> = Default::default();
    for (name, us, flops, bytes) in &launches {
        let e = by.entry(name).or_default();
        e.calls += 1;
        e.us += us;
        e.flops += flops;
        e.bytes += bytes;
    }
    let total: f64 = by.values().map(|v| v.us).sum::<f64>().max(1e-12);
    let mut rows: Vec<KernelRow> = by
        .into_iter()
        .map(|(k, s)| {
            let (gflop_s, gb_s, peak_pct) = peaks.rates(s.flops, s.bytes, (s.us * 1e-6).max(1e-12));
            KernelRow {
                kernel: k.to_string(),
                calls: s.calls as f64 / steps,
                us: s.us / steps,
                share: 100.0 * s.us / total,
                gflop_s,
                gb_s,
                peak_pct,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.us.total_cmp(&a.us));
    rows
}
