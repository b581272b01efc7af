//! The training loop: data, model, method step, evaluation, and the run folder (`config.json`,
//! `metrics.jsonl`, `model.safetensors`, `summary.json`, `curves.svg`, and for segmentation tasks
//! `predictions.png`).

pub mod data;
pub mod plot;
pub mod pictures;

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
        if self.noise_samples == 0 || self.inner_steps == 0 {
            bail!("--noise-samples and --inner-steps must be at least 1");
        }
        if self.data.limit_train == Some(0) || self.data.limit_test == Some(0) {
            bail!("--limit-train and --limit-test must be at least 1");
        }
        if self.data.task != TaskKind::Multimnist && (self.data.size < 16 || self.data.size % 4 != 0 || self.data.size > 1024) {
            bail!("--size must be a multiple of 4 in 16..=1024, got {}", self.data.size);
        }
        Ok(())
    }

    pub fn model_config(&self) -> ModelConfig {
        let setup = data::setup(self.data.task);
        let arch = match self.data.task {
            TaskKind::Multimnist => Arch::Lenet,
            TaskKind::Fundus | TaskKind::FundusAv => Arch::Unet { base: UNET_BASE },
        };
        ModelConfig { arch, method: self.method, fusion: self.fusion, width: self.width, in_channels: setup.in_channels, tasks: setup.specs }
    }

    pub fn mtcool_config(&self) -> MtCoolConfig {
        MtCoolConfig { mode: self.mode, b: self.b, noise_samples: self.noise_samples, inner_steps: self.inner_steps, seed: self.seed }
    }

    pub fn optimizer(&self) -> Optimizer {
        match self.optimizer {
            OptimizerKind::Adam => Optimizer::adam(AdamConfig { weight_decay: self.weight_decay, ..AdamConfig::with_lr(self.lr) }),
            OptimizerKind::Sgd => Optimizer::sgd(SgdConfig { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay }),
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub train_loss: [f64; 2],
    /// Accuracy of the training batches' own predictions (pixel accuracy for segmentation).
    pub train_acc: [f64; 2],
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
    pub metrics: [Metrics; 2],
    pub param_count: usize,
    pub epochs: u32,
    pub seed: u64,
    pub seconds: f64,
    pub device: String,
    pub test_examples: usize,
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

/// Trains as `cfg` says, writing the run folder `out`; `device` is the line describing where it runs.
pub fn train(cfg: &TrainConfig, out: &Path, device: &str) -> Result<Summary> {
    cfg.validate()?;
    let (train_set, test_set) = data::load(&cfg.data)?;
    let setup = data::setup(cfg.data.task);
    fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    write_json(&out.join("config.json"), cfg)?;
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics_file = fs::File::create(&metrics_path).with_context(|| format!("cannot write {}", metrics_path.display()))?;

    let mut model = MultiTaskModel::new(cfg.model_config(), cfg.seed);
    let mut opt = cfg.optimizer();
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

    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed_da7a);
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
    let bar = indicatif::ProgressBar::new(cfg.epochs as u64 * steps_per_epoch as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let mut history: Vec<EpochMetrics> = vec![];
    let mut step: u32 = 0;
    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let mut order: Vec<usize> = (0..train_set.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen, mut items_seen) = ([0f64; 2], [0usize; 2], 0usize, [0usize; 2]);
        for chunk in order.chunks(cfg.batch_size) {
            let batch = train_set.batch(chunk);
            let items = [0, 1].map(|t| batch.labels[t].len());
            let s: StepStats = match cfg.method {
                Method::Mtcool => mtcool_step(&mut model, &mut opt, &batch, &objective, step, &mt_cfg),
                Method::Independent | Method::Joint => summed_step(&mut model, &mut opt, &batch, &objective),
            };
            if let Some(t) = s.loss.iter().position(|l| !l.is_finite()) {
                bar.abandon();
                bail!("non-finite loss at epoch {epoch}, step {step}, task {}: stopping (the last checkpoint, if any, is kept)", t + 1);
            }
            for t in 0..2 {
                loss_sum[t] += s.loss[t] as f64 * chunk.len() as f64;
                correct[t] += s.correct[t];
                items_seen[t] += items[t];
            }
            seen += chunk.len();
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} loss {:.3}/{:.3} acc {:.3}/{:.3}",
                loss_sum[0] / seen as f64,
                loss_sum[1] / seen as f64,
                correct[0] as f64 / items_seen[0] as f64,
                correct[1] as f64 / items_seen[1] as f64
            ));
        }
        let test = evaluate(&model, test_set.as_ref(), &setup, EVAL_BATCH);
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum.map(|l| l / seen as f64),
            train_acc: [0, 1].map(|t| correct[t] as f64 / items_seen[t] as f64),
            test,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.sync_data()?;
        checkpoint::save(&model, &out.join("model.safetensors"))?;
        bar.suspend(|| {
            eprintln!("epoch {epoch} ({:.1}s): {}: {}; {}: {}", m.seconds, setup.names[0], describe(&m.test[0]), setup.names[1], describe(&m.test[1]))
        });
        history.push(m);
    }
    bar.finish_and_clear();
    let summary = Summary {
        task: cfg.data.task,
        method: cfg.method,
        mode: (cfg.method == Method::Mtcool).then_some(cfg.mode),
        metrics: history.last().map(|m| m.test.clone()).unwrap_or_default(),
        param_count,
        epochs: cfg.epochs,
        seed: cfg.seed,
        seconds: start.elapsed().as_secs_f64(),
        device: device.to_string(),
        test_examples: test_set.len(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    checkpoint::write_atomic(&out.join("curves.svg"), plot::curves_svg(&history).as_bytes())?;
    if cfg.data.task != TaskKind::Multimnist {
        pictures::write_predictions(&model, test_set.as_ref(), cfg.data.task, &out.join("predictions.png"))?;
    }
    Ok(summary)
}

/// Re-evaluates a finished run from its folder: reloads `model.safetensors`, rebuilds the test split
/// from `config.json` (with `data_dir` overriding where MNIST lives, if given).
pub fn eval_run(run: &Path, data_dir: Option<PathBuf>) -> Result<(Summary, [Metrics; 2])> {
    let read = |name: &str| -> Result<String> {
        let p = run.join(name);
        fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mut cfg: TrainConfig = serde_json::from_str(&read("config.json")?).context("config.json is not a valid run config")?;
    let summary: Summary = serde_json::from_str(&read("summary.json")?).context("summary.json is not a valid summary")?;
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
