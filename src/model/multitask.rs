//! Two-task models: MultiLeNet (classification pairs) or U-Net (pixel- and image-level tasks) parts.
//! - Independent: two full nets (extractor + head each), nothing shared.
//! - Joint (hard parameter sharing): one shared extractor, two heads, trained on the summed loss.
//!   PCGrad, CAGrad, MGDA(-UB) and GradDrop use the same architecture and combine the tasks' gradients
//!   instead (`mtl::gradient_step`).
//! - MT-CooL: one extractor per task; each head sees the fusion M(F1(x), F2(x)) of both extractors
//!   (concat, add, or cross-task attention: [F_t, CrossAttention_t(F_t, F_other)]).
//! - MTAN: one shared extractor; each task reads it through its own attention masks (`attention.rs`).
//! - CTAN: one extractor per task; after the encoder stage and the bottleneck each task's features get
//!   a cross-task attention over the other's added (residual); trained on the summed loss.
//!
//! Parameter names follow PyTorch conventions (`task1.extractor.conv1.weight`, `shared.extractor...`,
//! `task2.head.fc2.bias`), so a checkpoint reads naturally from `safetensors.torch.load_file`.

use anyhow::Result;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::attention::{CrossAttention, MtanBridges, MtanTower};
use super::layers::{Level, ParamGroup, Read, StageState, STAGES};
use super::lenet::{LeNetExtractor, LeNetHead};
use super::unet::{PoolHead, SegHead, UNetExtractor};
use crate::params::{ParamId, ParamStore};
use crate::tape::{Tape, Var};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Independent,
    Joint,
    Mtcool,
    /// Joint, shared-extractor gradients combined by PCGrad (Yu et al. 2020)
    Pcgrad,
    /// Joint, shared-extractor gradients combined by CAGrad (Liu et al. 2021; --cagrad-c)
    Cagrad,
    /// Joint, tasks weighted by MGDA-UB (Sener & Koltun 2018; --mgda-norm)
    Mgda,
    /// Joint, shared-feature gradients combined by GradDrop (Chen et al. 2020; --graddrop-leak)
    Graddrop,
    /// Shared extractor with per-task attention masks (Liu et al. 2019), summed loss
    Mtan,
    /// Two extractors exchanging features by cross-task attention, summed loss
    Ctan,
}

impl Method {
    /// Whether the model has one extractor shared by both heads (Joint and the gradient-combination
    /// methods, which differ from Joint only in how they combine the two tasks' gradients).
    pub fn shares_extractor(self) -> bool {
        match self {
            Method::Joint | Method::Pcgrad | Method::Cagrad | Method::Mgda | Method::Graddrop => true,
            Method::Independent | Method::Mtcool | Method::Mtan | Method::Ctan => false,
        }
    }

    /// Whether the model has a single extractor (Joint, the combiners, MTAN).
    fn one_extractor(self) -> bool {
        self.shares_extractor() || self == Method::Mtan
    }
}

/// How MT-CooL fuses the two extractors' features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    Concat,
    Add,
    /// [F_t, CrossAttention_t(F_t, F_other)]: queries from the task's own features
    Attention,
}

/// Most tasks a model has (noise streams and checkpoint names are numbered per task).
pub const MAX_TASKS: usize = 16;

/// Task t + 1, as its index t.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskId(pub usize);

impl TaskId {
    /// Tasks 0, 1, …, n − 1.
    pub fn all(n: usize) -> impl Iterator<Item = TaskId> {
        (0..n).map(TaskId)
    }
    /// Every task of `n` but this one, in order.
    pub fn others(self, n: usize) -> impl Iterator<Item = TaskId> {
        (0..n).filter(move |&i| i != self.0).map(TaskId)
    }
}

/// The extractor family.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// MultiLeNet trunk, for 28×28 single-channel images (MultiMNIST).
    Lenet,
    /// The small U-Net of `unet.rs` with base width `base`.
    Unet { base: usize },
}

/// What one task predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskSpec {
    /// One label per image.
    Classify { classes: usize },
    /// One label per pixel.
    Segment { classes: usize },
}

impl TaskSpec {
    pub fn classes(&self) -> usize {
        match *self {
            TaskSpec::Classify { classes } | TaskSpec::Segment { classes } => classes,
        }
    }
}

/// Everything needed to rebuild a model's structure (stored in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub method: Method,
    pub fusion: Fusion,
    /// Multiplier on hidden widths (channels, fc sizes).
    pub width: f32,
    pub in_channels: usize,
    /// The tasks, in order (at least two).
    pub tasks: Vec<TaskSpec>,
}

impl ModelConfig {
    /// The MultiMNIST model: MultiLeNet, two 10-way classifiers.
    pub fn multimnist(method: Method, fusion: Fusion, width: f32) -> Self {
        let cls = TaskSpec::Classify { classes: 10 };
        ModelConfig { arch: Arch::Lenet, method, fusion, width, in_channels: 1, tasks: vec![cls, cls] }
    }

    /// Rejects structures this code cannot build (used on checkpoint metadata before building).
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.width > 0.0 && self.width <= 64.0, "width {} out of (0, 64]", self.width);
        anyhow::ensure!((1..=64).contains(&self.in_channels), "in_channels {} out of 1..=64", self.in_channels);
        anyhow::ensure!((2..=MAX_TASKS).contains(&self.tasks.len()), "{} tasks (2..={MAX_TASKS})", self.tasks.len());
        for t in &self.tasks {
            anyhow::ensure!((1..=1 << 16).contains(&t.classes()), "task with {} classes", t.classes());
            if self.arch == Arch::Lenet {
                anyhow::ensure!(matches!(t, TaskSpec::Classify { .. }), "the LeNet extractor has no segmentation head");
                anyhow::ensure!(self.in_channels == 1, "the LeNet extractor takes 1 input channel");
            }
        }
        if let Arch::Unet { base } = self.arch {
            anyhow::ensure!((1..=512).contains(&base), "U-Net base width {base} out of 1..=512");
        }
        Ok(())
    }
}

enum Extractor {
    Lenet(LeNetExtractor),
    Unet(UNetExtractor),
}

impl Extractor {
    fn new(cfg: &ModelConfig, store: &mut ParamStore, prefix: &str, rng: &mut StdRng) -> Self {
        match cfg.arch {
            Arch::Lenet => Extractor::Lenet(LeNetExtractor::new(store, prefix, cfg.width, rng)),
            Arch::Unet { base } => {
                let level = |k: usize| ((k as f32 * base as f32 * cfg.width).round() as usize).max(1);
                Extractor::Unet(UNetExtractor::new(store, prefix, cfg.in_channels, [level(1), level(2), level(4)], rng))
            }
        }
    }
    fn group(&self) -> &ParamGroup {
        match self {
            Extractor::Lenet(e) => &e.group,
            Extractor::Unet(e) => &e.group,
        }
    }
    fn out_dim(&self) -> usize {
        match self {
            Extractor::Lenet(e) => e.out_dim,
            Extractor::Unet(e) => e.out_dim,
        }
    }
    /// Features of `x`: every stage in turn (LeNet [B, out_dim], U-Net [B, b, H, W]).
    fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var, read: Read) -> Result<Var> {
        let mut st = StageState::new(x);
        for i in 0..STAGES {
            self.stage(tape, store, i, &mut st, read)?;
        }
        Ok(st.h)
    }
    fn stage(&self, tape: &mut Tape, store: &ParamStore, i: usize, st: &mut StageState, read: Read) -> Result<()> {
        match self {
            Extractor::Lenet(e) => e.stage(tape, store, i, st, read),
            Extractor::Unet(e) => e.stage(tape, store, i, st, read),
        }
    }
    fn levels(&self) -> [Level; STAGES] {
        match self {
            Extractor::Lenet(e) => e.levels(),
            Extractor::Unet(e) => e.levels(),
        }
    }
}

/// The cross-task modules of a model, besides extractors and heads.
enum Mixer {
    None,
    /// MTAN: shared bridges, one tower per task.
    Mtan(MtanBridges, Vec<MtanTower>),
    /// CTAN: after each of the first STAGES − 1 stages, one cross attention per task.
    Ctan(Vec<Vec<CrossAttention>>),
    /// MT-CooL's attention fusion, per task.
    Fusion(Vec<CrossAttention>),
}

enum Head {
    Mlp(LeNetHead),
    Seg(SegHead),
    Pool(PoolHead),
}

impl Head {
    fn new(
        cfg: &ModelConfig,
        store: &mut ParamStore,
        prefix: &str,
        in_dim: usize,
        spec: TaskSpec,
        rng: &mut StdRng,
    ) -> Self {
        match (cfg.arch, spec) {
            (Arch::Lenet, TaskSpec::Classify { classes }) => {
                Head::Mlp(LeNetHead::new(store, prefix, in_dim, cfg.width, classes, rng))
            }
            (Arch::Unet { .. }, TaskSpec::Segment { classes }) => {
                Head::Seg(SegHead::new(store, prefix, in_dim, classes, rng))
            }
            (Arch::Unet { .. }, TaskSpec::Classify { classes }) => {
                let hidden = ((32.0 * cfg.width).round() as usize).max(1);
                Head::Pool(PoolHead::new(store, prefix, in_dim, hidden, classes, rng))
            }
            (Arch::Lenet, TaskSpec::Segment { .. }) => unreachable!("rejected by ModelConfig::validate"),
        }
    }
    fn group(&self) -> &ParamGroup {
        match self {
            Head::Mlp(h) => &h.group,
            Head::Seg(h) => &h.group,
            Head::Pool(h) => &h.group,
        }
    }
    fn forward(&self, tape: &mut Tape, store: &ParamStore, z: Var) -> Result<Var> {
        match self {
            Head::Mlp(h) => h.forward(tape, store, z),
            Head::Seg(h) => h.forward(tape, store, z),
            Head::Pool(h) => h.forward(tape, store, z),
        }
    }
}

pub struct MultiTaskModel {
    pub cfg: ModelConfig,
    pub store: ParamStore,
    /// One (joint) or one per task (independent, MT-CooL, CTAN) extractor.
    extractors: Vec<Extractor>,
    heads: Vec<Head>,
    mixer: Mixer,
    /// Task t's own parameters besides its extractor: its head and its attention modules.
    task_ids: Vec<Vec<ParamId>>,
    /// The groups holding each task's attention modules.
    task_groups: Vec<ParamGroup>,
}

impl MultiTaskModel {
    /// Builds the model with PyTorch-style initialisation drawn from `seed`. Panics on a config that
    /// `ModelConfig::validate` rejects (checkpoint loading validates first).
    pub fn new(cfg: ModelConfig, seed: u64) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("invalid model config: {e}");
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut store = ParamStore::new();
        let n = cfg.tasks.len();
        let extractors: Vec<Extractor> = if cfg.method.one_extractor() {
            vec![Extractor::new(&cfg, &mut store, "shared.extractor", &mut rng)]
        } else {
            (1..=n).map(|t| Extractor::new(&cfg, &mut store, &format!("task{t}.extractor"), &mut rng)).collect()
        };
        let levels = extractors[0].levels();
        let mut task_groups = vec![ParamGroup::default(); n];
        // One cross attention per task (task t's named by name(t + 1)), over the other n − 1 tasks.
        fn attention(
            store: &mut ParamStore,
            groups: &mut [ParamGroup],
            rng: &mut StdRng,
            name: &dyn Fn(usize) -> String,
            level: Level,
        ) -> Vec<CrossAttention> {
            let others = groups.len() - 1;
            let mut out = vec![];
            for (t, g) in groups.iter_mut().enumerate() {
                out.push(CrossAttention::new(store, g, &name(t + 1), level, others, rng));
            }
            out
        }
        let mixer = match (cfg.method, cfg.fusion) {
            (Method::Mtan, _) => {
                let bridges = MtanBridges::new(&mut store, "shared.attention", &levels, &mut rng);
                let towers = (1..=n)
                    .map(|t| MtanTower::new(&mut store, &format!("task{t}.attention"), &levels, &mut rng))
                    .collect();
                Mixer::Mtan(bridges, towers)
            }
            (Method::Ctan, _) => Mixer::Ctan(
                (0..STAGES - 1)
                    .map(|j| {
                        attention(&mut store, &mut task_groups, &mut rng, &|t| format!("task{t}.cross{j}"), levels[j])
                    })
                    .collect(),
            ),
            (Method::Mtcool, Fusion::Attention) => {
                let last = levels[STAGES - 1];
                Mixer::Fusion(attention(&mut store, &mut task_groups, &mut rng, &|t| format!("task{t}.fusion"), last))
            }
            _ => Mixer::None,
        };
        let d = extractors[0].out_dim();
        let head_in = match (cfg.method, cfg.fusion) {
            (Method::Mtcool, Fusion::Concat) => n * d,
            (Method::Mtcool, Fusion::Attention) => 2 * d,
            _ => d,
        };
        let heads: Vec<Head> = (0..n)
            .map(|t| Head::new(&cfg, &mut store, &format!("task{}.head", t + 1), head_in, cfg.tasks[t], &mut rng))
            .collect();
        let task_ids = (0..n).map(|t| {
            let mut ids = heads[t].group().ids().to_vec();
            ids.extend_from_slice(task_groups[t].ids());
            if let Mixer::Mtan(_, towers) = &mixer {
                ids.extend_from_slice(towers[t].group.ids());
            }
            ids
        });
        let task_ids = task_ids.collect();
        MultiTaskModel { cfg, store, extractors, heads, mixer, task_ids, task_groups }
    }

    /// θ of the extractor task `t` trains (the shared one for Joint).
    pub fn extractor_params(&self, t: TaskId) -> &[ParamId] {
        self.extractors[t.0.min(self.extractors.len() - 1)].group().ids()
    }
    /// φ: task `t`'s head, with its attention modules (MTAN gates, CTAN and fusion attention).
    pub fn head_params(&self, t: TaskId) -> &[ParamId] {
        &self.task_ids[t.0]
    }
    pub fn all_params(&self) -> Vec<ParamId> {
        self.store.ids().collect()
    }
    pub fn param_count(&self) -> usize {
        self.store.count(&self.all_params())
    }

    /// How many tasks the model has.
    pub fn n_tasks(&self) -> usize {
        self.cfg.tasks.len()
    }

    /// Extractor features: one per extractor (per task for MTAN and CTAN), extractor i read as
    /// `reads[i]` asks (`reads` has one entry per extractor).
    fn features(&self, tape: &mut Tape, x: Var, reads: &[Read]) -> Result<Vec<Var>> {
        let store = &self.store;
        anyhow::ensure!(
            reads.len() >= self.extractors.len(),
            "{} reads for {} extractors",
            reads.len(),
            self.extractors.len()
        );
        match &self.mixer {
            Mixer::Mtan(bridges, towers) => {
                let mut st = StageState::new(x);
                let mut levels = vec![];
                for i in 0..STAGES {
                    self.extractors[0].stage(tape, store, i, &mut st, reads[0])?;
                    levels.push(st.h);
                }
                towers.iter().map(|tw| tw.forward(tape, store, bridges, &levels)).collect()
            }
            Mixer::Ctan(cross) => {
                let mut st: Vec<StageState> = self.extractors.iter().map(|_| StageState::new(x)).collect();
                for i in 0..STAGES {
                    for (e, (s, &r)) in self.extractors.iter().zip(st.iter_mut().zip(reads)) {
                        e.stage(tape, store, i, s, r)?;
                    }
                    if let Some(per_task) = cross.get(i) {
                        let h: Vec<Var> = st.iter().map(|s| s.h).collect();
                        for (t, attn) in per_task.iter().enumerate() {
                            let others: Vec<Var> = TaskId(t).others(h.len()).map(|o| h[o.0]).collect();
                            let a = attn.forward(tape, store, &self.task_groups[t], h[t], &others)?;
                            st[t].h = tape.add(h[t], a)?;
                        }
                    }
                }
                Ok(st.iter().map(|s| s.h).collect())
            }
            _ => self.extractors.iter().zip(reads).map(|(e, &r)| e.forward(tape, store, x, r)).collect(),
        }
    }

    /// What head `t` sees, given the extractor features.
    fn head_input(&self, tape: &mut Tape, feats: &[Var], t: TaskId) -> Result<Var> {
        let method = self.cfg.method;
        Ok(match method {
            Method::Mtcool => match (&self.mixer, self.cfg.fusion) {
                (Mixer::Fusion(cross), _) => {
                    let own = feats[t.0];
                    let others: Vec<Var> = t.others(feats.len()).map(|o| feats[o.0]).collect();
                    let a = cross[t.0].forward(tape, &self.store, &self.task_groups[t.0], own, &others)?;
                    tape.concat_channels(&[own, a])?
                }
                (_, Fusion::Add) => {
                    let mut sum = feats[0];
                    for &f in &feats[1..] {
                        sum = tape.add(sum, f)?;
                    }
                    sum
                }
                // [F_1, …, F_T] for every head, in task order.
                _ => tape.concat_channels(feats)?,
            },
            _ if method.shares_extractor() => feats[0],
            // Independent, MTAN and CTAN: each head reads its own task's features.
            _ => feats[t.0],
        })
    }

    /// Logits of every task, each extractor run once. `reads[i]` is how extractor i is read.
    pub fn forward_all(&self, tape: &mut Tape, x: Var, reads: &[Read]) -> Result<Vec<Var>> {
        let feats = self.features(tape, x, reads)?;
        let per_task = matches!(self.cfg.method, Method::Independent | Method::Mtan | Method::Ctan)
            || matches!(self.mixer, Mixer::Fusion(_));
        // Otherwise every head reads the same (shared or fused) features. Every head input is built
        // before any head runs: the tape order (and so the order gradients are summed) of two tasks.
        let z = self.head_input(tape, &feats, TaskId(0))?;
        let mut zs = vec![z];
        for t in 1..self.n_tasks() {
            zs.push(if per_task { self.head_input(tape, &feats, TaskId(t))? } else { z });
        }
        self.heads.iter().zip(zs).map(|(h, z)| h.forward(tape, &self.store, z)).collect()
    }

    /// The shared features Z = F(x; θ_s) of a model with one shared extractor (`Method::shares_extractor`);
    /// `forward_heads(z)` then gives what `forward_all` gives. Panics for the two-extractor methods.
    pub fn forward_features(&self, tape: &mut Tape, x: Var, read: Read) -> Result<Var> {
        assert!(self.cfg.method.shares_extractor(), "{:?} has no shared features", self.cfg.method);
        self.extractors[0].forward(tape, &self.store, x, read)
    }

    /// Logits of every head on the shared features `z` (see `forward_features`).
    pub fn forward_heads(&self, tape: &mut Tape, z: Var) -> Result<Vec<Var>> {
        assert!(self.cfg.method.shares_extractor(), "{:?} has no shared features", self.cfg.method);
        self.heads.iter().map(|h| h.forward(tape, &self.store, z)).collect()
    }

    /// Logits of head `t` on the shared features `z` (see `forward_features`).
    pub fn forward_head(&self, tape: &mut Tape, z: Var, t: TaskId) -> Result<Var> {
        assert!(self.cfg.method.shares_extractor(), "{:?} has no shared features", self.cfg.method);
        self.heads[t.0].forward(tape, &self.store, z)
    }

    /// Logits of task `t` only (MT-CooL's sub-step: the other head is not evaluated).
    pub fn forward_task(&self, tape: &mut Tape, x: Var, t: TaskId, reads: &[Read]) -> Result<Var> {
        let feats = self.features(tape, x, reads)?;
        let z = self.head_input(tape, &feats, t)?;
        self.heads[t.0].forward(tape, &self.store, z)
    }
}
