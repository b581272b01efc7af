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
}

fn default_cagrad_c() -> f32 {
    CAGRAD_DEFAULT_C
}

impl TrainConfig {
    /// The learning rate of global step `step` (0-based) of a run of `steps` steps.
    pub fn lr_at(&self, step: u32, steps: u32) -> f32 {
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => {
                let t = step as f64 / steps.max(1) as f64;
                (self.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
            }
        }
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
