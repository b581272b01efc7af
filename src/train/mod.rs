//! The training loop: data, model, method step, evaluation, and the run folder (`config.json`,
//! `metrics.jsonl`, `model.safetensors`, `summary.json`, `curves.svg`, for segmentation tasks
//! `predictions.png`, and the training checkpoints `ckpt/step-<N>.safetensors` that `--resume` goes on
//! from, see `resume`).

pub mod data;
pub mod pictures;
pub mod plot;
pub mod resume;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use self::data::{DataConfig, TaskData, TaskKind, TaskSetup};
use crate::checkpoint;
use crate::metrics::TaskMetrics;
use crate::model::{Arch, Fusion, Method, ModelConfig, MultiTaskModel, Read, TaskId, TaskSpec};
use crate::mtl::combiners::{MgdaNorm, CAGRAD_DEFAULT_C};
use crate::mtl::gradient_step::{combined_step, Combiner};
use crate::mtl::mtcool::{mtcool_step, Mode, MtCoolConfig};
use crate::mtl::{balanced_class_weights, summed_step, Objective, StepStats};
use crate::optim::{AdamConfig, Optimizer, SgdConfig};
use crate::tape::Tape;

/// Base width of the U-Net extractor (before `--width`).
pub const UNET_BASE: usize = 8;

/// Evaluation batch size (only memory depends on it, not the result).
pub const EVAL_BATCH: usize = 200;

/// Named metrics of one task.
pub type Metrics = BTreeMap<String, f64>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

/// Everything that defines a run (written to `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub data: DataConfig,
    pub method: Method,
    pub mode: Mode,
    pub epochs: u32,
    pub batch_size: usize,
    pub lr: f32,
    pub optimizer: OptimizerKind,
    pub momentum: f32,
    pub weight_decay: f32,
    pub b: f32,
    pub noise_samples: u32,
    pub inner_steps: u32,
    pub fusion: Fusion,
    pub width: f32,
    pub seed: u64,
    /// `--deterministic`, recorded: CPU runs are always bit-reproducible (see README, Reliability).
    #[serde(default)]
    pub deterministic: bool,
    /// CAGrad's c (`--cagrad-c`, method cagrad).
    #[serde(default = "default_cagrad_c")]
    pub cagrad_c: f32,
    /// MGDA-UB's gradient normalisation (`--mgda-norm`, method mgda).
    #[serde(default)]
    pub mgda_norm: MgdaNorm,
    /// GradDrop's leak (`--graddrop-leak`, method graddrop).
    #[serde(default)]
    pub graddrop_leak: f32,
}

fn default_cagrad_c() -> f32 {
    CAGRAD_DEFAULT_C
}

impl TrainConfig {
    /// Rejects values that make no sense, with one line naming the flag.
    pub fn validate(&self) -> Result<()> {
        let pos = |v: f32| v.is_finite() && v > 0.0;
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if !pos(self.lr) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !pos(self.b) {
            bail!("--b must be a positive number, got {}", self.b);
        }
        if !pos(self.width) || self.width > 64.0 {
            bail!("--width must be in (0, 64], got {}", self.width);
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            bail!("--momentum must be in [0, 1), got {}", self.momentum);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay must be ≥ 0, got {}", self.weight_decay);
        }
        if !(self.cagrad_c.is_finite() && (0.0..1.0).contains(&self.cagrad_c)) {
            bail!("--cagrad-c must be in [0, 1), got {}", self.cagrad_c);
        }
        if !(self.graddrop_leak.is_finite() && (0.0..=1.0).contains(&self.graddrop_leak)) {
            bail!("--graddrop-leak must be in [0, 1], got {}", self.graddrop_leak);
        }
        if self.noise_samples == 0 || self.inner_steps == 0 {
            bail!("--noise-samples and --inner-steps must be at least 1");
        }
        if self.data.limit_train == Some(0) || self.data.limit_test == Some(0) {
            bail!("--limit-train and --limit-test must be at least 1");
        }
        if self.data.task != TaskKind::Multimnist
            && (self.data.size < 16 || !self.data.size.is_multiple_of(4) || self.data.size > 1024)
        {
            bail!("--size must be a multiple of 4 in 16..=1024, got {}", self.data.size);
        }
        if self.data.task != TaskKind::Multimnist && self.data.data_dir.is_none() && self.data.size < 32 {
            bail!(
                "--size must be at least 32 for the synthetic fundus images (16 is allowed with --data), got {}",
                self.data.size
            );
        }
        Ok(())
    }

    pub fn model_config(&self) -> ModelConfig {
        let setup = data::setup(self.data.task);
        let arch = match self.data.task {
            TaskKind::Multimnist => Arch::Lenet,
            TaskKind::Fundus | TaskKind::FundusAv => Arch::Unet { base: UNET_BASE },
        };
        ModelConfig {
            arch,
            method: self.method,
            fusion: self.fusion,
            width: self.width,
            in_channels: setup.in_channels,
            tasks: setup.specs,
        }
    }

    /// The gradient-combination rule of the pcgrad / cagrad / mgda (MGDA-UB) / graddrop methods.
    pub fn combiner(&self) -> Option<Combiner> {
        match self.method {
            Method::Pcgrad => Some(Combiner::Pcgrad { seed: self.seed }),
            Method::Cagrad => Some(Combiner::Cagrad { c: self.cagrad_c }),
            Method::Mgda => Some(Combiner::Mgda { norm: self.mgda_norm, upper_bound: true }),
            Method::Graddrop => Some(Combiner::Graddrop { leak: self.graddrop_leak, seed: self.seed }),
            Method::Independent | Method::Joint | Method::Mtcool => None,
        }
    }

    pub fn mtcool_config(&self) -> MtCoolConfig {
        MtCoolConfig {
            mode: self.mode,
            b: self.b,
            noise_samples: self.noise_samples,
            inner_steps: self.inner_steps,
            seed: self.seed,
        }
    }

    pub fn optimizer(&self) -> Optimizer {
        match self.optimizer {
            OptimizerKind::Adam => {
                Optimizer::adam(AdamConfig { weight_decay: self.weight_decay, ..AdamConfig::with_lr(self.lr) })
            }
            OptimizerKind::Sgd => {
                Optimizer::sgd(SgdConfig { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay })
            }
        }
    }
}

/// JSON has no NaN: serde_json writes it as `null`; this reads `null` back as NaN (a metric can be
/// undefined, e.g. AUROC on a test split with one class), so run files round-trip.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub trait NanNull: Sized {
        type Raw: for<'de> Deserialize<'de>;
        fn from_raw(raw: Self::Raw) -> Self;
    }
    impl NanNull for [f64; 2] {
        type Raw = [Option<f64>; 2];
        fn from_raw(raw: Self::Raw) -> Self {
            raw.map(|v| v.unwrap_or(f64::NAN))
        }
    }
    impl NanNull for [super::Metrics; 2] {
        type Raw = [BTreeMap<String, Option<f64>>; 2];
        fn from_raw(raw: Self::Raw) -> Self {
            raw.map(|m| m.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect())
        }
    }
    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
    pub fn deserialize<'de, T: NanNull, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        T::Raw::deserialize(d).map(T::from_raw)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    #[serde(with = "nan_as_null")]
    pub train_loss: [f64; 2],
    /// Accuracy of the training batches' own predictions (pixel accuracy for segmentation).
    #[serde(with = "nan_as_null")]
    pub train_acc: [f64; 2],
    #[serde(with = "nan_as_null")]
    pub test: [Metrics; 2],
    pub seconds: f64,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub task: TaskKind,
    pub method: Method,
    pub mode: Option<Mode>,
    /// Test metrics of each task after the last epoch.
    #[serde(with = "nan_as_null")]
    pub metrics: [Metrics; 2],
    pub param_count: usize,
    pub epochs: u32,
    pub seed: u64,
    pub seconds: f64,
    pub device: String,
    pub test_examples: usize,
    /// Steps skipped for a non-finite loss or gradient (`--skip-nonfinite`).
    #[serde(default)]
    pub skipped_steps: u64,
}

/// Test metrics of both tasks (clean weights, no gradient).
pub fn evaluate(model: &MultiTaskModel, data: &dyn TaskData, setup: &TaskSetup, batch_size: usize) -> [Metrics; 2] {
    let mut acc = [0, 1].map(|t| TaskMetrics::new(setup.metrics[t].clone(), setup.specs[t].classes()));
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = data.batch(chunk);
        let mut tape = Tape::new();
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.x);
        let logits = model.forward_all(&mut tape, x, [Read::Train, Read::Train]);
        for t in TaskId::BOTH {
            acc[t.0].update(tape.value(logits[t.0]), &batch.labels[t.0]);
        }
    }
    acc.map(|a| a.finish())
}

/// The training objective: binary classification tasks get inverse-frequency class weights from the
/// training labels (glaucoma is ~10 % positive); everything else is unweighted.
pub fn objective(cfg: &TrainConfig, setup: &TaskSetup, train: &dyn TaskData) -> Objective {
    let mut obj = Objective::unweighted(setup.specs);
    if cfg.data.task == TaskKind::Multimnist {
        return obj;
    }
    for t in TaskId::BOTH {
        if let TaskSpec::Classify { classes: 2 } = setup.specs[t.0] {
            let all: Vec<usize> = (0..train.len()).collect();
            let labels: Vec<u32> = all.chunks(EVAL_BATCH).flat_map(|c| train.batch(c).labels[t.0].clone()).collect();
            obj.class_weights[t.0] = Some(balanced_class_weights(&labels, 2));
        }
    }
    obj
}

/// "name value, name value" for a log line.
pub fn describe(m: &Metrics) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

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
fn nonfinite(s: &StepStats, model: &MultiTaskModel) -> Option<String> {
    if let Some(t) = s.loss.iter().position(|l| !l.is_finite()) {
        return Some(format!("non-finite loss ({}) in task {}", s.loss[t], t + 1));
    }
    let task = |name: &str| match name.split('.').next() {
        Some("task1") => "task 1".to_string(),
        Some("task2") => "task 2".to_string(),
        _ => "both tasks' shared extractor".to_string(),
    };
    let bad = |t: &crate::Tensor| t.data().iter().any(|v| !v.is_finite());
    model.store.iter().find_map(|p| {
        let what = if bad(&p.grad) {
            "gradient"
        } else if bad(&p.value) {
            "updated value"
        } else {
            return None;
        };
        Some(format!("non-finite {what} of {} in {}", p.name, task(&p.name)))
    })
}

/// Trains as `cfg` says, writing the run folder `out`; `device` is the line describing where it runs.
pub fn train(cfg: &TrainConfig, out: &Path, device: &str) -> Result<Summary> {
    train_with(cfg, out, device, &RunOptions::default())
}

/// [`train`] with checkpointing, resuming and non-finite handling as `opts` say. Everything that can be
/// checked (flags, data, a checkpoint to resume from) is checked before anything is written.
pub fn train_with(cfg: &TrainConfig, out: &Path, device: &str, opts: &RunOptions) -> Result<Summary> {
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
    // metrics.jsonl holds the finished epochs so far (a resumed run drops lines written after its checkpoint).
    let metrics_path = out.join("metrics.jsonl");
    let lines: String = pos.history.iter().map(|m| Ok(serde_json::to_string(m)? + "\n")).collect::<Result<_>>()?;
    checkpoint::write_atomic(&metrics_path, lines.as_bytes())?;
    let mut metrics_file = fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot write {}", metrics_path.display()))?;

    let mt_cfg = cfg.mtcool_config();
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
                    model.store.get_mut(bias).value.data_mut().fill(f32::NAN);
                }
                _ => {}
            }
            let s: StepStats = match cfg.method {
                Method::Mtcool => mtcool_step(&mut model, &mut opt, &batch, &objective, pos.global_step, &mt_cfg),
                Method::Independent | Method::Joint => summed_step(&mut model, &mut opt, &batch, &objective),
                Method::Pcgrad | Method::Cagrad | Method::Mgda | Method::Graddrop => {
                    let combiner = cfg.combiner().expect("a gradient-combination method");
                    combined_step(&mut model, &mut opt, &batch, &objective, &combiner, pos.global_step)
                }
            };
            if let Some(bad) = nonfinite(&s, &model) {
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
        let test = evaluate(&model, test_set.as_ref(), &setup, EVAL_BATCH);
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
    };
    write_json(&out.join("summary.json"), &summary)?;
    checkpoint::write_atomic(&out.join("curves.svg"), plot::curves_svg(&pos.history).as_bytes())?;
    if cfg.data.task != TaskKind::Multimnist {
        pictures::write_predictions(&model, test_set.as_ref(), cfg.data.task, &out.join("predictions.png"))?;
    }
    Ok(summary)
}

/// Re-evaluates a finished run from its folder: reloads `model.safetensors`, rebuilds the test split
/// from `config.json` (with `data_dir` overriding where MNIST lives, if given).
pub fn eval_run(run: &Path, data_dir: Option<PathBuf>) -> Result<(Summary, [Metrics; 2])> {
    if !run.is_dir() {
        bail!("--run {}: no such folder", run.display());
    }
    if !run.join("config.json").is_file() {
        bail!("--run {}: not a run folder (no config.json)", run.display());
    }
    let read = |name: &str| -> Result<String> {
        let p = run.join(name);
        fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let invalid = |name: &str, what: &str| format!("{} is not a valid {what}", run.join(name).display());
    let mut cfg: TrainConfig =
        serde_json::from_str(&read("config.json")?).with_context(|| invalid("config.json", "run config"))?;
    let summary: Summary =
        serde_json::from_str(&read("summary.json")?).with_context(|| invalid("summary.json", "summary"))?;
    if data_dir.is_some() {
        cfg.data.data_dir = data_dir;
    }
    let model = checkpoint::load(&run.join("model.safetensors"))?;
    if model.cfg != cfg.model_config() {
        bail!("model.safetensors does not match config.json in {}", run.display());
    }
    let (_, test) = data::load(&DataConfig { limit_train: Some(1), ..cfg.data.clone() })?;
    Ok((summary, evaluate(&model, test.as_ref(), &data::setup(cfg.data.task), EVAL_BATCH)))
}
