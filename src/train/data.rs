//! The datasets a run trains on, seen through one interface: a split of examples that yields
//! mini-batches (`TaskData`), plus what the tasks are (`TaskSetup`).

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::data::fundus::{FundusConfig, FundusSet, Mask};
use crate::data::mnist::{default_mnist_dir, load_mnist, Split};
use crate::data::multimnist::{self, MultiMnist};
use crate::metrics::{MetricKind, Regions};
use crate::model::TaskSpec;
use crate::mtl::Batch;
use crate::Tensor;

/// Seeds of the fixed datasets: every run and training seed sees the same data.
pub const DATA_SEED_TRAIN: u64 = 1;
pub const DATA_SEED_TEST: u64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Synthetic fundus images: optic cup/disc segmentation + glaucoma classification (REFUGE-style).
    Fundus,
    /// Synthetic fundus images: artery/vein segmentation + vessel segmentation (HRF-AV-style).
    FundusAv,
    /// MultiMNIST: classify the upper-left and the lower-right digit.
    Multimnist,
}

/// One split of a dataset.
pub trait TaskData {
    fn len(&self) -> usize;
    fn batch(&self, idx: &[usize]) -> Batch;
    /// RGB bytes (H·W·3) and side of example `i`, for pictures; None for non-image-like data.
    fn rgb(&self, _i: usize) -> Option<(Vec<u8>, usize)> {
        None
    }
}

impl TaskData for MultiMnist {
    fn len(&self) -> usize {
        MultiMnist::len(self)
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let (x, left, right) = MultiMnist::batch(self, idx);
        Batch { x, labels: [left, right] }
    }
}

/// A synthetic fundus set with the two label maps/labels its task pair uses.
pub struct FundusTasks {
    pub set: FundusSet,
    pub pair: TaskKind,
}

impl TaskData for FundusTasks {
    fn len(&self) -> usize {
        self.set.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let x: Tensor = self.set.image_batch(idx);
        let labels = match self.pair {
            TaskKind::FundusAv => [self.set.mask_batch(Mask::ArteryVein, idx), self.set.mask_batch(Mask::Vessel, idx)],
            _ => [self.set.mask_batch(Mask::CupDisc, idx), idx.iter().map(|&i| self.set.glaucoma[i] as u32).collect()],
        };
        Batch { x, labels }
    }
    fn rgb(&self, i: usize) -> Option<(Vec<u8>, usize)> {
        Some((self.set.raw_rgb(i), self.set.size))
    }
}

/// What the two tasks of a `TaskKind` are.
pub struct TaskSetup {
    pub specs: [TaskSpec; 2],
    pub metrics: [MetricKind; 2],
    pub names: [&'static str; 2],
    pub in_channels: usize,
}

pub fn setup(kind: TaskKind) -> TaskSetup {
    match kind {
        TaskKind::Multimnist => TaskSetup {
            specs: [TaskSpec::Classify { classes: 10 }; 2],
            metrics: [MetricKind::Classify, MetricKind::Classify],
            names: ["left digit", "right digit"],
            in_channels: 1,
        },
        TaskKind::Fundus => TaskSetup {
            specs: [TaskSpec::Segment { classes: 3 }, TaskSpec::Classify { classes: 2 }],
            metrics: [MetricKind::Segment(Regions::Nested(vec!["disc", "cup"])), MetricKind::Classify],
            names: ["cup/disc segmentation", "glaucoma"],
            in_channels: 3,
        },
        TaskKind::FundusAv => TaskSetup {
            specs: [TaskSpec::Segment { classes: 3 }, TaskSpec::Segment { classes: 2 }],
            metrics: [
                MetricKind::Segment(Regions::PerClass(vec!["artery", "vein"])),
                MetricKind::Segment(Regions::PerClass(vec!["vessel"])),
            ],
            names: ["artery/vein segmentation", "vessel segmentation"],
            in_channels: 3,
        },
    }
}

/// Where the data comes from and how much of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub task: TaskKind,
    /// MNIST folder (MultiMNIST); ignored by the synthetic tasks.
    pub data_dir: Option<PathBuf>,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Side of the synthetic fundus images.
    pub size: usize,
}

/// Default sizes of the synthetic sets (before --limit-*).
pub const SYNTH_TRAIN: usize = 1000;
pub const SYNTH_TEST: usize = 200;

/// Loads (or generates) the train and test splits.
pub fn load(cfg: &DataConfig) -> Result<(Box<dyn TaskData>, Box<dyn TaskData>)> {
    Ok(match cfg.task {
        TaskKind::Multimnist => {
            let dir = cfg.data_dir.clone().unwrap_or_else(default_mnist_dir);
            let train = load_mnist(&dir, Split::Train)?;
            let test = load_mnist(&dir, Split::Test)?;
            (
                Box::new(multimnist::build(&train, DATA_SEED_TRAIN, cfg.limit_train)),
                Box::new(multimnist::build(&test, DATA_SEED_TEST, cfg.limit_test)),
            )
        }
        pair @ (TaskKind::Fundus | TaskKind::FundusAv) => {
            let make = |n: usize, seed: u64| {
                let set = FundusSet::generate(&FundusConfig { size: cfg.size, n, seed, ..FundusConfig::default() });
                Box::new(FundusTasks { set, pair }) as Box<dyn TaskData>
            };
            (
                make(cfg.limit_train.unwrap_or(SYNTH_TRAIN), DATA_SEED_TRAIN),
                make(cfg.limit_test.unwrap_or(SYNTH_TEST), DATA_SEED_TEST),
            )
        }
    })
}
