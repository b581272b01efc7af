//! What defines a run (`config.json`): the training configuration, its validation, and what it
//! implies (model structure, MT-CooL step settings, optimiser, objective).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::data::{self, DataConfig, TaskData, TaskKind, TaskSetup};
use super::{EVAL_BATCH, UNET_BASE};
use crate::model::{Arch, Fusion, Method, ModelConfig, TaskId, TaskSpec};
use crate::mtl::combiners::{MgdaNorm, CAGRAD_DEFAULT_C};
use crate::mtl::gradient_step::Combiner;
use crate::mtl::mtcool::{Mode, MtCoolConfig};
use crate::mtl::{balanced_class_weights, Objective};
use crate::optim::{AdamConfig, Optimizer, SgdConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    Sgd,
}

/// How the learning rate changes over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// `--lr` throughout.
    #[default]
    Constant,
    /// Cosine decay from `--lr` at the first step to 0 after the last: lr·½(1 + cos(π·step/steps)).
    Cosine,
    /// Step decay: lr·γ^⌊(epoch − 1)/every⌋ with γ = `--lr-decay`, every = `--lr-decay-every` epochs
    /// (the MGDA code's ×0.85 every 10 epochs by default).
    Step,
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
    /// Absent in config.json files written before schedules existed: constant.
    #[serde(default)]
    pub lr_schedule: LrSchedule,
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
    /// Step decay's factor γ and period in epochs (`--lr-schedule step`).
    #[serde(default = "default_lr_decay")]
    pub lr_decay: f32,
    #[serde(default = "default_lr_decay_every")]
    pub lr_decay_every: u32,
    /// Fraction of the training examples held out as the validation split (0: none). The split is a
    /// function of the data alone (`data::VAL_SEED`), the same for every method and training seed.
    #[serde(default)]
    pub val_fraction: f32,
    /// `--match-params`: `width` was chosen so that the model has Joint's parameter count (recorded;
    /// `width` holds the chosen value).
    #[serde(default)]
    pub match_params: bool,
}

fn default_lr_decay() -> f32 {
    0.85
}

fn default_lr_decay_every() -> u32 {
    10
}

/// How close `--match-params` must get to Joint's parameter count.
pub const MATCH_TOLERANCE: f64 = 0.02;

fn default_cagrad_c() -> f32 {
    CAGRAD_DEFAULT_C
}

impl TrainConfig {
    /// The learning rate of global step `step` (0-based) of a run of `epochs` epochs of
    /// `steps_per_epoch` steps.
    pub fn lr_at(&self, step: u32, steps_per_epoch: u32, epochs: u32) -> f32 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let t = step as f64 / (steps_per_epoch * epochs).max(1) as f64;
                (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
            LrSchedule::Step => {
                let decays = step / steps_per_epoch.max(1) / self.lr_decay_every.max(1);
                (self.lr as f64 * (self.lr_decay as f64).powi(decays as i32)) as f32
            }
        }
    }

    /// This config made concrete: a folder task's manifest read into it, and `--match-params` carried
    /// out (`width` set to `matched_width`'s, reported on stderr).
    pub fn resolved(&self) -> Result<TrainConfig> {
        let mut cfg = self.with_manifest()?;
        if cfg.match_params {
            let (width, n, joint) = cfg.matched_width()?;
            eprintln!(
                "--match-params: width {width} gives {n} parameters, Joint has {joint} ({:+.2} %)",
                100.0 * (n as f64 - joint as f64) / joint as f64
            );
            cfg.width = width;
        }
        Ok(cfg)
    }

    /// This config with a folder task's manifest read into it (itself for the built-in tasks).
    pub fn with_manifest(&self) -> Result<TrainConfig> {
        let mut cfg = self.clone();
        if cfg.data.task == TaskKind::Folder && cfg.data.folder.is_none() {
            let dir = cfg.data.data_dir.as_deref().ok_or_else(|| anyhow::anyhow!("--task folder needs --data DIR"))?;
            cfg.data.folder = Some(crate::data::folder::Manifest::read(dir)?);
        }
        Ok(cfg)
    }

    /// The width at which this model's parameter count is closest to Joint's at the default width
    /// (1.0) on the same task, with both counts; an error if no width gets within MATCH_TOLERANCE.
    /// Widths are searched on a 0.005 grid over (0, 4] (channel counts are rounded, so the count is a
    /// step function of the width).
    pub fn matched_width(&self) -> Result<(f32, usize, usize)> {
        let count = |method: Method, width: f32| {
            crate::model::MultiTaskModel::new(TrainConfig { method, width, ..self.clone() }.model_config(), 0)
                .param_count()
        };
        let joint = count(Method::Joint, 1.0);
        let mut best = (1.0f32, usize::MAX);
        for i in 1..=800 {
            let w = i as f32 * 0.005;
            let n = count(self.method, w);
            if n.abs_diff(joint) < best.1.abs_diff(joint) {
                best = (w, n);
            }
            if n > 2 * joint {
                break;
            }
        }
        let off = (best.1 as f64 - joint as f64) / joint as f64;
        if off.abs() > MATCH_TOLERANCE {
            bail!(
                "--match-params: no width brings {:?} within {:.0} % of Joint's {joint} parameters (closest: width {} with {})",
                self.method,
                100.0 * MATCH_TOLERANCE,
                best.0,
                best.1
            );
        }
        Ok((best.0, best.1, joint))
    }

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
        if !(self.val_fraction.is_finite() && (0.0..0.9).contains(&self.val_fraction)) {
            bail!("--val-fraction must be in [0, 0.9), got {}", self.val_fraction);
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0 && self.lr_decay <= 1.0) {
            bail!("--lr-decay must be in (0, 1], got {}", self.lr_decay);
        }
        if self.lr_decay_every == 0 {
            bail!("--lr-decay-every must be at least 1");
        }
        if self.data.limit_train == Some(0) || self.data.limit_test == Some(0) {
            bail!("--limit-train and --limit-test must be at least 1");
        }
        if self.data.task != TaskKind::Multimnist
            && (self.data.size < 16 || !self.data.size.is_multiple_of(4) || self.data.size > 1024)
        {
            bail!("--size must be a multiple of 4 in 16..=1024, got {}", self.data.size);
        }
        if self.data.task == TaskKind::Folder && self.data.data_dir.is_none() {
            bail!("--task folder needs --data DIR (a folder with tasks.json, images/ and the labels)");
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
        let setup = data::setup(&self.data);
        let arch = match self.data.task {
            TaskKind::Multimnist => Arch::Lenet,
            TaskKind::Fundus | TaskKind::FundusAv | TaskKind::Fundus3 | TaskKind::Folder => {
                Arch::Unet { base: UNET_BASE }
            }
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
            Method::Independent | Method::Joint | Method::Mtcool | Method::Mtan | Method::Ctan => None,
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

/// The training objective: binary classification tasks get inverse-frequency class weights from the
/// training labels (glaucoma is ~10 % positive); everything else is unweighted.
pub fn objective(cfg: &TrainConfig, setup: &TaskSetup, train: &dyn TaskData) -> Objective {
    let mut obj = Objective::unweighted(&setup.specs);
    if cfg.data.task == TaskKind::Multimnist {
        return obj;
    }
    for t in TaskId::all(setup.n_tasks()) {
        if let TaskSpec::Classify { classes: 2 } = setup.specs[t.0] {
            let labels = data::task_labels(train, t.0, EVAL_BATCH);
            obj.class_weights[t.0] = Some(balanced_class_weights(&labels, 2));
        }
    }
    obj
}
