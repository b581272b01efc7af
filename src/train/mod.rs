//! The training loop: data, model, method step, evaluation, and the run folder (`config.json`,
//! `metrics.jsonl`, `model.safetensors`, `summary.json`, `curves.svg`, for segmentation tasks
//! `predictions.png`, and the training checkpoints `ckpt/step-<N>.safetensors` that `--resume` goes on
//! from, see `resume`).

pub mod bench;
pub mod compare;
pub mod config;
pub mod data;
pub mod pictures;
pub mod plot;
pub mod report;
pub mod resume;

pub use config::{objective, LrSchedule, OptimizerKind, TrainConfig};
pub use report::{describe, eval_run, evaluate, EpochMetrics, Summary};

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use self::data::TaskKind;
use crate::backend::{dispatch, Backend};
use crate::checkpoint;
use crate::model::{Method, MultiTaskModel, TaskId};
use crate::mtl::gradient_step::combined_step;
use crate::mtl::mtcool::mtcool_step;
use crate::mtl::{summed_step, Batch, Objective, StepStats};
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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { checkpoint_every: None, keep_checkpoints: 3, skip_nonfinite: false, resume: false }
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
        Ok(())
    }
}

/// Test hook: `MTCOOL_INJECT_NAN_AT_STEP=N` sets task 1's output bias to NaN just before global step N
/// (1-based, as in the non-finite messages), so that step's task-1 loss is NaN; `N:input` instead fills
/// the step's input batch with NaN (the loss stays finite through the ReLUs, the gradients do not).
pub const INJECT_NAN_ENV: &str = "MTCOOL_INJECT_NAN_AT_STEP";

/// The step and kind (`true`: input) of [`INJECT_NAN_ENV`], if set.
fn nan_injection() -> Option<(u32, bool)> {
    let v = std::env::var(INJECT_NAN_ENV).ok()?;
    let (n, input) = match v.trim().split_once(':') {
        Some((n, "input")) => (n, true),
        Some(_) => return None,
        None => (v.trim(), false),
    };
    Some((n.parse().ok()?, input))
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
    pub loss_sum: [f64; 2],
    pub correct: [usize; 2],
    /// Examples of the steps counted (skipped steps are not).
    pub seen: usize,
    pub items_seen: [usize; 2],
    /// Seconds spent in this epoch before this process.
    pub seconds: f64,
}

/// What is wrong with a step's result, if anything is not finite: its loss, a gradient or a parameter.
/// On a GPU one reduction over every gradient and parameter decides; only a failure downloads them to
/// name the culprit.
fn nonfinite(s: &StepStats, model: &MultiTaskModel) -> Result<Option<String>> {
    if let Some(t) = s.loss.iter().position(|l| !l.is_finite()) {
        return Ok(Some(format!("non-finite loss ({}) in task {}", s.loss[t], t + 1)));
    }
    if model.store.backend().is_cuda() {
        let all: Vec<&crate::Tensor> = model.store.iter().flat_map(|p| [&p.grad, &p.value]).collect();
        if dispatch::all_finite(&all)? {
            return Ok(None);
        }
    }
    let task = |name: &str| match name.split('.').next() {
        Some("task1") => "task 1".to_string(),
        Some("task2") => "task 2".to_string(),
        _ => "both tasks' shared extractor".to_string(),
    };
    for p in model.store.iter() {
        let bad = |t: &crate::Tensor| Ok::<_, anyhow::Error>(!t.to_host()?.all_finite());
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
) -> Result<StepStats> {
    match cfg.method {
        Method::Mtcool => mtcool_step(model, opt, batch, objective, step, &cfg.mtcool_config()),
        Method::Independent | Method::Joint | Method::Mtan | Method::Ctan => summed_step(model, opt, batch, objective),
        Method::Pcgrad | Method::Cagrad | Method::Mgda | Method::Graddrop => {
            let combiner = cfg.combiner().expect("a gradient-combination method");
            combined_step(model, opt, batch, objective, &combiner, step)
        }
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
/// is checked before anything is written.
pub fn train_on(cfg: &TrainConfig, out: &Path, device: &str, opts: &RunOptions, backend: &Backend) -> Result<Summary> {
    cfg.validate()?;
    opts.validate()?;
    let (train_set, test_set) = data::load(&cfg.data)?;
    let setup = data::setup(cfg.data.task);
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size) as u32;
    let (mut model, mut opt, mut pos, mut last_ckpt) = if opts.resume {
        let (r, warnings) = resume::latest(out, cfg, steps_per_epoch)?;
        warnings.iter().for_each(|w| eprintln!("warning: {w}"));
        resume::clean_temp(out);
        eprintln!(
            "resuming from {} (epoch {}, step {} of {}, global step {})",
            r.path.display(),
            r.pos.epoch,
            r.pos.step_in_epoch,
            steps_per_epoch,
            r.pos.global_step
        );
        (r.model, r.opt, r.pos, Some(r.path))
    } else {
        fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
        resume::clear(out)?;
        write_json(&out.join("config.json"), cfg)?;
        (MultiTaskModel::new(cfg.model_config(), cfg.seed), cfg.optimizer(), resume::Position::start(), None)
    };
    model.store.to_backend(backend)?;
    opt.to_backend(backend)?;
    // metrics.jsonl holds the finished epochs so far (a resumed run drops lines written after its checkpoint).
    let metrics_path = out.join("metrics.jsonl");
    let lines: String = pos.history.iter().map(|m| Ok(serde_json::to_string(m)? + "\n")).collect::<Result<_>>()?;
    checkpoint::write_atomic(&metrics_path, lines.as_bytes())?;
    let mut metrics_file = fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot write {}", metrics_path.display()))?;

    let objective = objective(cfg, &setup, train_set.as_ref());
    let param_count = model.param_count();
    eprintln!(
        "{device}; {:?} on {:?} ({} train / {} test); {param_count} parameters",
        cfg.method,
        cfg.data.task,
        train_set.len(),
        test_set.len()
    );
    let inject_nan = nan_injection();
    let bar = indicatif::ProgressBar::new(cfg.epochs as u64 * steps_per_epoch as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(pos.global_step as u64);
    let start = Instant::now();
    while pos.epoch <= cfg.epochs {
        let epoch = pos.epoch;
        let epoch_start = Instant::now();
        let order = epoch_order(cfg.seed, epoch, train_set.len());
        for chunk in order.chunks(cfg.batch_size).skip(pos.step_in_epoch as usize) {
            let mut batch = train_set.batch(chunk);
            let items = [0, 1].map(|t| batch.labels[t].len());
            let backup = opts
                .skip_nonfinite
                .then(|| (model.store.iter().map(|p| p.value.clone()).collect::<Vec<_>>(), opt.clone()));
            match inject_nan {
                Some((n, true)) if n == pos.global_step + 1 => batch.x.data_mut().fill(f32::NAN),
                Some((n, false)) if n == pos.global_step + 1 => {
                    let bias = *model.head_params(TaskId(0)).last().expect("a head has parameters");
                    let nan = crate::Tensor::full(model.store.value(bias).shape(), f32::NAN);
                    model.store.set_value(bias, &nan)?;
                }
                _ => {}
            }
            opt.set_lr(cfg.lr_at(pos.global_step, cfg.epochs * steps_per_epoch));
            let s = train_step(cfg, &mut model, &mut opt, &batch, &objective, pos.global_step)?;
            if let Some(bad) = nonfinite(&s, &model)? {
                let at = format!(
                    "{bad} at epoch {epoch}, step {} of {steps_per_epoch} (global step {})",
                    pos.step_in_epoch + 1,
                    pos.global_step + 1
                );
                let Some((values, old_opt)) = backup else {
                    bar.abandon();
                    let kept = match &last_ckpt {
                        Some(p) => format!("the last good checkpoint {} is kept (resume with --resume)", p.display()),
                        None => "no checkpoint had been written yet".to_string(),
                    };
                    bail!("{at}: stopping; {kept}; --skip-nonfinite skips such steps instead");
                };
                for (id, v) in model.all_params().into_iter().zip(values) {
                    model.store.get_mut(id).value = v;
                }
                opt = old_opt;
                pos.skipped += 1;
                bar.suspend(|| {
                    eprintln!("warning: {at}: step skipped, parameters unchanged ({} skipped so far)", pos.skipped)
                });
            } else {
                let a = &mut pos.acc;
                for (t, n) in items.into_iter().enumerate() {
                    a.loss_sum[t] += s.loss[t] as f64 * chunk.len() as f64;
                    a.correct[t] += s.correct[t];
                    a.items_seen[t] += n;
                }
                pos.acc.seen += chunk.len();
            }
            pos.step_in_epoch += 1;
            pos.global_step += 1;
            bar.inc(1);
            let a = &pos.acc;
            let ratio = |x: f64, n: usize| x / n.max(1) as f64;
            bar.set_message(format!(
                "epoch {epoch} loss {:.3}/{:.3} acc {:.3}/{:.3}",
                ratio(a.loss_sum[0], a.seen),
                ratio(a.loss_sum[1], a.seen),
                ratio(a.correct[0] as f64, a.items_seen[0]),
                ratio(a.correct[1] as f64, a.items_seen[1])
            ));
            let due = opts.checkpoint_every.is_some_and(|n| pos.global_step % n == 0);
            if due && pos.step_in_epoch < steps_per_epoch {
                let mut at = pos.clone();
                at.acc.seconds += epoch_start.elapsed().as_secs_f64();
                at.seconds += start.elapsed().as_secs_f64();
                last_ckpt = Some(resume::save(out, &model, &opt, cfg, &at, opts.keep_checkpoints)?);
            }
        }
        let test = evaluate(&model, test_set.as_ref(), &setup, EVAL_BATCH)?;
        let a = &pos.acc;
        let m = EpochMetrics {
            epoch,
            train_loss: a.loss_sum.map(|l| l / a.seen as f64),
            train_acc: [0, 1].map(|t| a.correct[t] as f64 / a.items_seen[t] as f64),
            test,
            seconds: a.seconds + epoch_start.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.sync_data()?;
        checkpoint::save(&model, &out.join("model.safetensors"))?;
        bar.suspend(|| {
            eprintln!(
                "epoch {epoch} ({:.1}s): {}: {}; {}: {}",
                m.seconds,
                setup.names[0],
                describe(&m.test[0]),
                setup.names[1],
                describe(&m.test[1])
            )
        });
        pos.history.push(m);
        pos.epoch += 1;
        pos.step_in_epoch = 0;
        pos.acc = EpochAcc::default();
        let mut at = pos.clone();
        at.seconds += start.elapsed().as_secs_f64();
        last_ckpt = Some(resume::save(out, &model, &opt, cfg, &at, opts.keep_checkpoints)?);
    }
    bar.finish_and_clear();
    checkpoint::save(&model, &out.join("model.safetensors"))?;
    let summary = Summary {
        task: cfg.data.task,
        method: cfg.method,
        mode: (cfg.method == Method::Mtcool).then_some(cfg.mode),
        metrics: pos.history.last().map(|m| m.test.clone()).unwrap_or_default(),
        param_count,
        epochs: cfg.epochs,
        seed: cfg.seed,
        seconds: pos.seconds + start.elapsed().as_secs_f64(),
        device: device.to_string(),
        test_examples: test_set.len(),
        skipped_steps: pos.skipped,
        gpu_memory: match backend {
            Backend::Cuda(gpu) => Some(gpu.memory_stats()),
            Backend::Cpu => None,
        },
    };
    write_json(&out.join("summary.json"), &summary)?;
    checkpoint::write_atomic(&out.join("curves.svg"), plot::curves_svg(&pos.history).as_bytes())?;
    if cfg.data.task != TaskKind::Multimnist {
        pictures::write_predictions(&model, test_set.as_ref(), cfg.data.task, &out.join("predictions.png"))?;
    }
    Ok(summary)
}
