//! Two-task models on MultiLeNet parts.
//! - Independent: two full nets (extractor + head each), nothing shared.
//! - Joint (hard parameter sharing): one shared extractor, two heads, trained on the summed loss.
//! - MT-CooL: one extractor per task; each head sees the fusion M(F1(x), F2(x)) of both extractors.
//!
//! Parameter names follow PyTorch conventions (`task1.extractor.conv1.weight`, `shared.extractor...`,
//! `task2.head.fc2.bias`), so a checkpoint reads naturally from `safetensors.torch.load_file`.

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::layers::Read;
use super::lenet::{LeNetExtractor, LeNetHead};
use crate::params::{ParamId, ParamStore};
use crate::tape::{Tape, Var};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Independent,
    Joint,
    Mtcool,
}

/// How MT-CooL fuses the two extractors' features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    Concat,
    Add,
}

/// Task 1 or task 2, as an index 0 or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskId(pub usize);

impl TaskId {
    pub const BOTH: [TaskId; 2] = [TaskId(0), TaskId(1)];
    pub fn other(self) -> TaskId {
        TaskId(1 - self.0)
    }
}

/// Everything needed to rebuild a model's structure (stored in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub method: Method,
    pub fusion: Fusion,
    /// Multiplier on hidden widths (channels, fc sizes).
    pub width: f32,
    pub classes: [usize; 2],
}

pub struct MultiTaskModel {
    pub cfg: ModelConfig,
    pub store: ParamStore,
    /// One (joint) or two (independent, MT-CooL) extractors.
    extractors: Vec<LeNetExtractor>,
    heads: Vec<LeNetHead>,
}

impl MultiTaskModel {
    /// Builds the model with PyTorch-style initialisation drawn from `seed`.
    pub fn new(cfg: ModelConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = ParamStore::new();
        let extractors: Vec<LeNetExtractor> = match cfg.method {
            Method::Joint => vec![LeNetExtractor::new(&mut store, "shared.extractor", cfg.width, &mut rng)],
            Method::Independent | Method::Mtcool => (1..=2)
                .map(|t| LeNetExtractor::new(&mut store, &format!("task{t}.extractor"), cfg.width, &mut rng))
                .collect(),
        };
        let d = extractors[0].out_dim;
        let head_in = match (cfg.method, cfg.fusion) {
            (Method::Mtcool, Fusion::Concat) => 2 * d,
            _ => d,
        };
        let heads = (0..2)
            .map(|t| LeNetHead::new(&mut store, &format!("task{}.head", t + 1), head_in, cfg.width, cfg.classes[t], &mut rng))
            .collect();
        MultiTaskModel { cfg, store, extractors, heads }
    }

    /// θ of the extractor task `t` trains (the shared one for Joint).
    pub fn extractor_params(&self, t: TaskId) -> &[ParamId] {
        self.extractors[t.0.min(self.extractors.len() - 1)].group.ids()
    }
    /// φ: task `t`'s head.
    pub fn head_params(&self, t: TaskId) -> &[ParamId] {
        self.heads[t.0].group.ids()
    }
    pub fn all_params(&self) -> Vec<ParamId> {
        self.store.ids().collect()
    }
    pub fn param_count(&self) -> usize {
        self.store.count(&self.all_params())
    }

    /// Extractor features: one per extractor, each read as `reads[i]` asks.
    fn features(&self, tape: &mut Tape, x: Var, reads: [Read; 2]) -> Vec<Var> {
        self.extractors.iter().zip(reads).map(|(e, r)| e.forward(tape, &self.store, x, r)).collect()
    }

    /// What head `t` sees, given the extractor features.
    fn head_input(&self, tape: &mut Tape, feats: &[Var], t: TaskId) -> Var {
        match self.cfg.method {
            Method::Joint => feats[0],
            Method::Independent => feats[t.0],
            Method::Mtcool => match self.cfg.fusion {
                Fusion::Concat => tape.concat_channels(&[feats[0], feats[1]]),
                Fusion::Add => tape.add(feats[0], feats[1]),
            },
        }
    }

    /// Logits of both tasks, each extractor run once. `reads[i]` is how extractor i is read.
    pub fn forward_all(&self, tape: &mut Tape, x: Var, reads: [Read; 2]) -> [Var; 2] {
        let feats = self.features(tape, x, reads);
        TaskId::BOTH.map(|t| {
            let z = self.head_input(tape, &feats, t);
            self.heads[t.0].forward(tape, &self.store, z)
        })
    }

    /// Logits of task `t` only (MT-CooL's sub-step: the other head is not evaluated).
    pub fn forward_task(&self, tape: &mut Tape, x: Var, t: TaskId, reads: [Read; 2]) -> Var {
        let feats = self.features(tape, x, reads);
        let z = self.head_input(tape, &feats, t);
        self.heads[t.0].forward(tape, &self.store, z)
    }
}
