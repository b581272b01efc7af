//! The training loop: data, model, method step, evaluation, and the run folder (`config.json`,
//! `metrics.jsonl`, `model.safetensors`, `summary.json`, `curves.svg`, for segmentation tasks
//! `predictions.png`, and the training checkpoints `ckpt/step-<N>.safetensors` that `--resume` goes on
//! from, see `resume`).

pub mod bench;
pub mod compare;
pub mod config;
pub mod data;
pub mod flatness;
pub mod graph;
pub mod pictures;
pub mod plot;
pub mod report;
pub mod resume;
mod run;

pub use config::{objective, LrSchedule, OptimizerKind, TrainConfig};
pub use report::{
    best_epoch, describe, eval_run, eval_run_on, evaluate, evaluate_pass, selection_score, EpochMetrics, EpochTime,
    Summary,
};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::backend::{dispatch, Backend};
use crate::checkpoint;
use crate::model::{Method, MultiTaskModel};
use crate::mtl::gradient_step::combined_step;
use crate::mtl::mtcool::mtcool_step;
use crate::mtl::{host_value, summed_step, Batch, Objective, StepOut};
use crate::optim::Optimizer;

/// Base width of the U-Net extractor (before `--width`).
pub const UNET_BASE: usize = 8;

/// Evaluation batch size (only memory depends on it, not the result).
pub const EVAL_BATCH: usize = 200;

/// Named metrics of one task.
pub type Metrics = BTreeMap<String, f64>;

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    checkpoint::write_atomic(path, (serde_json::to_string_pretty(value)? + "\n").as_bytes())
}

/// How a run is carried out, beyond what it computes (not part of `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Also checkpoint every N global steps (there is always one at each epoch end).
    pub checkpoint_every: Option<u32>,
    /// How many checkpoints `ckpt/` keeps (the newest).
    pub keep_checkpoints: usize,
    /// Skip a step whose loss or gradients are not finite (undoing its update) instead of stopping.
    pub skip_nonfinite: bool,
    /// Go on from the newest usable checkpoint in the run folder instead of starting over.
    pub resume: bool,
    /// Capture the step into a CUDA graph and replay it (`graph.rs`; GPU only, same results).
    pub graph: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { checkpoint_every: None, keep_checkpoints: 3, skip_nonfinite: false, resume: false, graph: false }
    }
}

impl RunOptions {
    pub fn validate(&self) -> Result<()> {
        if self.checkpoint_every == Some(0) {
            bail!("--checkpoint-every must be at least 1");
        }
        if self.keep_checkpoints == 0 {
            bail!("--keep-checkpoints must be at least 1");
        }
        if self.graph && self.skip_nonfinite {
            bail!("--graph cannot undo a step: --skip-nonfinite needs the uncaptured step (drop --graph)");
        }
        Ok(())
    }
}

/// Test hook: `MTCOOL_INJECT_NAN_AT_STEP=N` sets task 1's output bias to NaN just before global step N
/// (1-based, as in the non-finite messages), so that step's task-1 loss is NaN; `N:inf` sets it to +∞
/// instead, `N:task2` poisons task 2's output bias (its loss, in MT-CooL its own sub-step), and
/// `N:input` fills the step's input batch with NaN (the loss stays finite through the ReLUs, the
/// gradients do not).
pub const INJECT_NAN_ENV: &str = "MTCOOL_INJECT_NAN_AT_STEP";

/// What [`INJECT_NAN_ENV`] poisons.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Injection {
    Input,
    /// The last parameter of task `task`'s head set to `value`.
    Bias {
        task: usize,
        value: f32,
    },
}

/// The step and target of [`INJECT_NAN_ENV`], if set.
fn nan_injection() -> Option<(u32, Injection)> {
    let v = std::env::var(INJECT_NAN_ENV).ok()?;
    let v = v.trim();
    let (n, kind) = v.split_once(':').unwrap_or((v, ""));
    let kind = match kind {
        "" => Injection::Bias { task: 0, value: f32::NAN },
        "inf" => Injection::Bias { task: 0, value: f32::INFINITY },
        "task2" => Injection::Bias { task: 1, value: f32::NAN },
        "input" => Injection::Input,
        _ => return None,
    };
    Some((n.parse().ok()?, kind))
}

/// The order of the training examples in `epoch`: a function of (seed, epoch) only, so a resumed run
/// sees the same batches as an uninterrupted one.
pub fn epoch_order(seed: u64, epoch: u32, n: usize) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_da7a ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// Running sums over one epoch's steps.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EpochAcc {
    pub loss_sum: Vec<f64>,
    pub correct: Vec<usize>,
    /// Examples of the steps counted (skipped steps are not).
    pub seen: usize,
    pub items_seen: Vec<usize>,
    /// Seconds spent in this epoch before this process.
    pub seconds: f64,
    /// Where the epoch's time went so far (carried over a resume with the rest).
    #[serde(default)]
    pub time: report::EpochTime,
}

impl EpochAcc {
    /// Makes room for `n` tasks (a fresh epoch's sums start empty).
    pub fn fit(&mut self, n: usize) {
        self.loss_sum.resize(n, 0.0);
        self.correct.resize(n, 0);
        self.items_seen.resize(n, 0);
    }
}

/// What is wrong with a step's result, if anything is not finite: its loss, a gradient or a parameter.
/// On a GPU one reduction over every gradient and parameter decides; only a failure downloads them to
/// name the culprit. This is the one value a GPU step reads back every step.
fn nonfinite(s: &StepOut, model: &MultiTaskModel) -> Result<Option<String>> {
    if model.store.backend().is_cuda() {
        let mut all: Vec<&crate::Tensor> = s.loss.iter().collect();
        all.extend(model.store.iter().flat_map(|p| [&p.grad, &p.value]));
        if dispatch::all_finite(&all)? {
            return Ok(None);
        }
    }
    let loss: Vec<f32> = s.loss.iter().map(host_value).collect::<Result<_>>()?;
    if let Some(t) = loss.iter().position(|l| !l.is_finite()) {
        return Ok(Some(format!("non-finite loss ({}) in task {}", loss[t], t + 1)));
    }
    let task = |name: &str| match name.split('.').next().and_then(|p| p.strip_prefix("task")) {
        Some(n) => format!("task {n}"),
        None if loss.len() == 2 => "both tasks' shared extractor".to_string(),
        None => format!("all {} tasks' shared extractor", loss.len()),
    };
    for p in model.store.iter() {
        let bad = |t: &crate::Tensor| Ok::<_, anyhow::Error>(!t.host()?.all_finite());
        let what = if bad(&p.grad)? {
            "gradient"
        } else if bad(&p.value)? {
            "updated value"
        } else {
            continue;
        };
        return Ok(Some(format!("non-finite {what} of {} in {}", p.name, task(&p.name))));
    }
    Ok(None)
}

/// One optimisation step of `cfg.method` on `batch` (global step `step` keys the noise and shuffles).
pub fn train_step(
    cfg: &TrainConfig,
    model: &mut MultiTaskModel,
    opt: &mut Optimizer,
    batch: &Batch,
    objective: &Objective,
    step: u32,
) -> Result<StepOut> {
    match (cfg.method, cfg.combiner()) {
        (Method::Mtcool, _) => mtcool_step(model, opt, batch, objective, step, &cfg.mtcool_config()),
        (_, Some(combiner)) => combined_step(model, opt, batch, objective, &combiner, step),
        (_, None) => summed_step(model, opt, batch, objective),
    }
}

/// Trains as `cfg` says, writing the run folder `out`; `device` is the line describing where it runs.
pub fn train(cfg: &TrainConfig, out: &Path, device: &str) -> Result<Summary> {
    train_with(cfg, out, device, &RunOptions::default())
}

/// [`train`] with checkpointing, resuming and non-finite handling as `opts` say, on the CPU.
pub fn train_with(cfg: &TrainConfig, out: &Path, device: &str, opts: &RunOptions) -> Result<Summary> {
    train_on(cfg, out, device, opts, &Backend::Cpu)
}

/// [`train_with`] on `backend`: parameters, gradients and optimiser state live there for the whole run;
/// each batch is uploaded once per step, losses and correct counts come back per step, checkpoints are
/// written from host copies. Everything that can be checked (flags, data, a checkpoint to resume from)
/// is checked before anything is written. The phases are `run::Run`'s methods.
pub fn train_on(cfg: &TrainConfig, out: &Path, device: &str, opts: &RunOptions, backend: &Backend) -> Result<Summary> {
    let cfg = &cfg.resolved()?;
    let mut run = run::Run::open(cfg, out, device, opts, backend)?;
    while run.pos.epoch <= cfg.epochs {
        let epoch_start = Instant::now();
        let order = epoch_order(cfg.seed, run.pos.epoch, run.train_set.len());
        for chunk in order.chunks(cfg.batch_size).skip(run.pos.step_in_epoch as usize) {
            run.step(chunk, epoch_start)?;
        }
        run.end_epoch(epoch_start)?;
    }
    run.finish(device)
}

/// One epoch of `cfg` trained from scratch in a fresh temporary run folder (removed afterwards), for
/// `mtcool profile --epoch`: its `metrics.jsonl` line (with the time split) and its step count.
pub fn profile_epoch(cfg: &TrainConfig, device: &str, backend: &Backend) -> Result<(report::EpochMetrics, usize)> {
    let dir = std::env::temp_dir().join(format!("mtcool-profile-epoch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = TrainConfig { epochs: 1, ..cfg.clone() };
    let opts = RunOptions::default();
    let result = (|| {
        let mut run = run::Run::open(&cfg, &dir, device, &opts, backend)?;
        let steps = run.train_set.len().div_ceil(cfg.batch_size.max(1));
        let epoch_start = Instant::now();
        let order = epoch_order(cfg.seed, run.pos.epoch, run.train_set.len());
        for chunk in order.chunks(cfg.batch_size) {
            run.step(chunk, epoch_start)?;
        }
        run.end_epoch(epoch_start)?;
        run.finish(device)?;
        let text = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
        let line = text.lines().last().ok_or_else(|| anyhow::anyhow!("the profiled epoch wrote no metrics line"))?;
        Ok((serde_json::from_str(line)?, steps))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
