//! The training loop for MultiMNIST: data, model, method step, evaluation, and the run folder
//! (`config.json`, `metrics.jsonl`, `model.safetensors`, `summary.json`, `curves.svg`).

pub mod plot;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::data::mnist::{load_mnist, Split};
use crate::data::multimnist::{self, MultiMnist};
use crate::model::multitask::ModelConfig;
use crate::model::{Fusion, Method, MultiTaskModel, Read, TaskId};
use crate::mtl::mtcool::{mtcool_step, Mode, MtCoolConfig};
use crate::mtl::{count_correct, summed_step, Batch, StepStats};
use crate::optim::{AdamConfig, Optimizer, SgdConfig};
use crate::tape::Tape;

/// Seeds of the MultiMNIST pairings: fixed, so every run and seed sees the same dataset.
pub const DATA_SEED_TRAIN: u64 = 1;
pub const DATA_SEED_TEST: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// MultiMNIST: classify the upper-left and the lower-right digit.
    Multimnist,
}

/// Everything that defines a run (written to `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub task: TaskKind,
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
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub data_dir: PathBuf,
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
        if self.limit_train == Some(0) || self.limit_test == Some(0) {
            bail!("--limit-train and --limit-test must be at least 1");
        }
        Ok(())
    }

    pub fn model_config(&self) -> ModelConfig {
        ModelConfig { method: self.method, fusion: self.fusion, width: self.width, classes: [10, 10] }
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
    pub train_acc: [f64; 2],
    pub test_acc: [f64; 2],
    pub seconds: f64,
}

/// `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub task: TaskKind,
    pub method: Method,
    pub mode: Option<Mode>,
    pub test_acc: [f64; 2],
    pub param_count: usize,
    pub epochs: u32,
    pub seed: u64,
    pub seconds: f64,
    pub device: String,
    pub test_examples: usize,
}

/// Loads MultiMNIST train and test sets as the config asks.
pub fn load_data(cfg: &TrainConfig) -> Result<(MultiMnist, MultiMnist)> {
    let train = load_mnist(&cfg.data_dir, Split::Train)?;
    let test = load_mnist(&cfg.data_dir, Split::Test)?;
    Ok((
        multimnist::build(&train, DATA_SEED_TRAIN, cfg.limit_train),
        multimnist::build(&test, DATA_SEED_TEST, cfg.limit_test),
    ))
}

/// Test accuracy of both tasks (clean weights, no gradient).
pub fn evaluate(model: &MultiTaskModel, data: &MultiMnist, batch_size: usize) -> [f64; 2] {
    let mut correct = [0usize; 2];
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let (x, left, right) = data.batch(chunk);
        let mut tape = Tape::new();
        tape.set_grad_enabled(false);
        let x = tape.constant(x);
        let logits = model.forward_all(&mut tape, x, [Read::Train, Read::Train]);
        for (t, labels) in TaskId::BOTH.iter().zip([&left, &right]) {
            correct[t.0] += count_correct(tape.value(logits[t.0]), labels);
        }
    }
    correct.map(|c| c as f64 / data.len().max(1) as f64)
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    checkpoint::write_atomic(path, (serde_json::to_string_pretty(value)? + "\n").as_bytes())
}

/// Trains as `cfg` says, writing the run folder `out`; `device` is the line describing where it runs.
pub fn train(cfg: &TrainConfig, out: &Path, device: &str) -> Result<Summary> {
    cfg.validate()?;
    let (train_set, test_set) = load_data(cfg)?;
    fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    write_json(&out.join("config.json"), cfg)?;
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics_file = fs::File::create(&metrics_path).with_context(|| format!("cannot write {}", metrics_path.display()))?;

    let mut model = MultiTaskModel::new(cfg.model_config(), cfg.seed);
    let mut opt = cfg.optimizer();
    let mt_cfg = cfg.mtcool_config();
    let param_count = model.param_count();
    eprintln!(
        "{device}; {:?} on MultiMNIST ({} train / {} test); {param_count} parameters",
        cfg.method,
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
        let (mut loss_sum, mut correct, mut seen) = ([0f64; 2], [0usize; 2], 0usize);
        for chunk in order.chunks(cfg.batch_size) {
            let (x, left, right) = train_set.batch(chunk);
            let batch = Batch { x, labels: [left, right] };
            let s: StepStats = match cfg.method {
                Method::Mtcool => mtcool_step(&mut model, &mut opt, &batch, step, &mt_cfg),
                Method::Independent | Method::Joint => summed_step(&mut model, &mut opt, &batch),
            };
            if let Some(t) = s.loss.iter().position(|l| !l.is_finite()) {
                bar.abandon();
                bail!("non-finite loss at epoch {epoch}, step {step}, task {}: stopping (the last checkpoint, if any, is kept)", t + 1);
            }
            for t in 0..2 {
                loss_sum[t] += s.loss[t] as f64 * chunk.len() as f64;
                correct[t] += s.correct[t];
            }
            seen += chunk.len();
            step += 1;
            bar.inc(1);
            bar.set_message(format!(
                "epoch {epoch} loss {:.3}/{:.3} acc {:.3}/{:.3}",
                loss_sum[0] / seen as f64,
                loss_sum[1] / seen as f64,
                correct[0] as f64 / seen as f64,
                correct[1] as f64 / seen as f64
            ));
        }
        let test_acc = evaluate(&model, &test_set, 500);
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum.map(|l| l / seen as f64),
            train_acc: correct.map(|c| c as f64 / seen as f64),
            test_acc,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)?;
        metrics_file.sync_data()?;
        checkpoint::save(&model, &out.join("model.safetensors"))?;
        bar.suspend(|| eprintln!("epoch {epoch}: test accuracy task1 {:.4} task2 {:.4} ({:.1}s)", test_acc[0], test_acc[1], m.seconds));
        history.push(m);
    }
    bar.finish_and_clear();
    let summary = Summary {
        task: cfg.task,
        method: cfg.method,
        mode: (cfg.method == Method::Mtcool).then_some(cfg.mode),
        test_acc: history.last().map(|m| m.test_acc).unwrap_or_default(),
        param_count,
        epochs: cfg.epochs,
        seed: cfg.seed,
        seconds: start.elapsed().as_secs_f64(),
        device: device.to_string(),
        test_examples: test_set.len(),
    };
    write_json(&out.join("summary.json"), &summary)?;
    checkpoint::write_atomic(&out.join("curves.svg"), plot::curves_svg(&history).as_bytes())?;
    Ok(summary)
}

/// Re-evaluates a finished run from its folder: reloads `model.safetensors`, rebuilds the test set
/// from `config.json` (with `data_dir` overriding where MNIST lives, if given).
pub fn eval_run(run: &Path, data_dir: Option<PathBuf>) -> Result<(Summary, [f64; 2])> {
    let read = |name: &str| -> Result<String> {
        let p = run.join(name);
        fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let mut cfg: TrainConfig = serde_json::from_str(&read("config.json")?).context("config.json is not a valid run config")?;
    let summary: Summary = serde_json::from_str(&read("summary.json")?).context("summary.json is not a valid summary")?;
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    let model = checkpoint::load(&run.join("model.safetensors"))?;
    if model.cfg != cfg.model_config() {
        bail!("model.safetensors does not match config.json in {}", run.display());
    }
    let test = multimnist::build(&load_mnist(&cfg.data_dir, Split::Test)?, DATA_SEED_TEST, cfg.limit_test);
    Ok((summary, evaluate(&model, &test, 500)))
}
