//! The datasets a run trains on, seen through one interface: a split of examples that yields
//! mini-batches (`TaskData`), plus what the tasks are (`TaskSetup`).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::folder::{self, FolderSet, Kind, Manifest};
use crate::data::fundus::{FundusConfig, FundusSet, Mask};
use crate::data::hrf_av::{load_hrf_av, HrfAvSet};
use crate::data::mnist::{default_mnist_dir, load_mnist, Split};
use crate::data::multimnist::{self, MultiMnist};
use crate::data::refuge::{load_refuge, load_refuge_release, RefugeSet, Release};
use crate::metrics::{MetricKind, Regions};
use crate::model::TaskSpec;
use crate::mtl::Batch;
use crate::Tensor;

/// Seeds of the fixed datasets: every run and training seed sees the same data.
pub const DATA_SEED_TRAIN: u64 = 1;
pub const DATA_SEED_TEST: u64 = 2;
/// Seed of the validation split (`split_validation`): a function of the data, not of the run.
pub const VAL_SEED: u64 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// Synthetic fundus images: optic cup/disc segmentation + glaucoma classification (REFUGE-style).
    Fundus,
    /// Synthetic fundus images: artery/vein segmentation + vessel segmentation (HRF-AV-style).
    FundusAv,
    /// Synthetic fundus images, three tasks: optic cup/disc segmentation, vessel segmentation and
    /// glaucoma classification.
    Fundus3,
    /// MultiMNIST: classify the upper-left and the lower-right digit.
    Multimnist,
    /// The user's own image set: `--data DIR` with a `tasks.json` manifest (`data::folder`).
    Folder,
}

/// A split shared by the views built on it (subsets, per-task sets).
pub type SharedData = Rc<dyn TaskData>;
/// The validation split `split_validation` returns.
pub type ValSplit = Box<dyn TaskData>;

/// One split of a dataset.
pub trait TaskData {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn batch(&self, idx: &[usize]) -> Batch;
    /// RGB bytes (H·W·3) and side of example `i`, for pictures; None for non-image-like data.
    fn rgb(&self, _i: usize) -> Option<(Vec<u8>, usize)> {
        None
    }
    /// Tasks with their own data sets ([`PerTask`]): task t's examples, whose batches' `labels[t]` are
    /// task t's labels. None when every example carries every task's label.
    fn task_sets(&self) -> Option<Vec<SharedData>> {
        None
    }
}

/// Tasks with their own data sets (partial labels, the paper's x_1, …, x_T): task t draws its
/// mini-batch from `sets[t]` only, so an image without task t's label never enters task t's loss.
///
/// An epoch is `len()` = the largest task's count of draws: batch position i gives task t its example
/// `i mod n_t`, so a shuffled epoch order visits every example of the largest task once and those of
/// the smaller ones evenly (±1) often, and a resumed run draws the same batches (no sampler state).
pub struct PerTask {
    sets: Vec<SharedData>,
}

impl PerTask {
    /// Fails on an empty task: it could never be trained or scored.
    pub fn new(sets: Vec<SharedData>, names: &[String]) -> Result<Self> {
        for (t, set) in sets.iter().enumerate() {
            anyhow::ensure!(!set.is_empty(), "task {:?} has no examples", names.get(t).map_or("?", |n| n.as_str()));
        }
        Ok(PerTask { sets })
    }
}

impl TaskData for PerTask {
    fn len(&self) -> usize {
        self.sets.iter().map(|s| s.len()).max().unwrap_or(0)
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let (mut xs, mut labels) = (vec![], vec![]);
        for (t, set) in self.sets.iter().enumerate() {
            let own: Vec<usize> = idx.iter().map(|&i| i % set.len()).collect();
            let mut b = set.batch(&own);
            xs.push(b.task_x.map_or(b.x, |mut x| x.swap_remove(t)));
            labels.push(std::mem::take(&mut b.labels[t]));
        }
        Batch::per_task(xs, labels)
    }
    fn rgb(&self, i: usize) -> Option<(Vec<u8>, usize)> {
        self.sets[0].rgb(i % self.sets[0].len())
    }
    fn task_sets(&self) -> Option<Vec<SharedData>> {
        Some(self.sets.clone())
    }
}

/// How many examples a split has: "n", or with per-task data each task's count ("n1+n2+…").
pub fn describe_count(data: &dyn TaskData) -> String {
    match data.task_sets() {
        Some(sets) => sets.iter().map(|s| s.len().to_string()).collect::<Vec<_>>().join("+"),
        None => data.len().to_string(),
    }
}

/// Task `t`'s training labels, over its own examples (every example without per-task data).
pub fn task_labels(data: &dyn TaskData, t: usize, chunk: usize) -> Vec<u32> {
    let own = data.task_sets().map(|s| s[t].clone());
    let data: &dyn TaskData = own.as_deref().unwrap_or(data);
    let all: Vec<usize> = (0..data.len()).collect();
    all.chunks(chunk.max(1)).flat_map(|c| data.batch(c).labels[t].clone()).collect()
}

/// The built-in partial-label demonstration (`--disjoint-labels`): `data` with its examples dealt to
/// the T tasks in turn (example i is task (i mod T)'s only), so no image carries two tasks' labels.
pub fn deal_to_tasks(data: Box<dyn TaskData>, names: &[String]) -> Result<Box<dyn TaskData>> {
    let n_tasks = names.len();
    anyhow::ensure!(
        data.len() >= n_tasks,
        "--disjoint-labels deals the examples to the {n_tasks} tasks, but the split has only {}",
        data.len()
    );
    let inner: SharedData = Rc::from(data);
    let sets = (0..n_tasks)
        .map(|t| {
            let idx = (t..inner.len()).step_by(n_tasks).collect();
            Rc::new(Subset { inner: inner.clone(), idx }) as SharedData
        })
        .collect();
    Ok(Box::new(PerTask::new(sets, names)?))
}

impl TaskData for MultiMnist {
    fn len(&self) -> usize {
        MultiMnist::len(self)
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let (x, left, right) = MultiMnist::batch(self, idx);
        Batch::new(x, vec![left, right])
    }
}

/// What the fundus task pairs need from a set of fundus images: the synthetic set, or a REFUGE or
/// HRF-AV folder (same conventions: images [B, 3, H, W], label maps in (n, h, w) order).
pub trait FundusSource {
    fn count(&self) -> usize;
    fn side(&self) -> usize;
    fn images(&self, idx: &[usize]) -> Tensor;
    fn masks(&self, which: Mask, idx: &[usize]) -> Vec<u32>;
    /// Glaucoma labels (REFUGE-style sets only).
    fn glaucoma(&self, idx: &[usize]) -> Vec<u32>;
    fn rgb_bytes(&self, i: usize) -> Vec<u8>;
}

/// The `FundusSource` methods every fundus set provides under the same inherent names.
macro_rules! same_fundus_api {
    () => {
        fn count(&self) -> usize {
            self.len()
        }
        fn side(&self) -> usize {
            self.size
        }
        fn images(&self, idx: &[usize]) -> Tensor {
            self.image_batch(idx)
        }
        fn masks(&self, which: Mask, idx: &[usize]) -> Vec<u32> {
            self.mask_batch(which, idx)
        }
        fn rgb_bytes(&self, i: usize) -> Vec<u8> {
            self.raw_rgb(i)
        }
    };
}

impl FundusSource for FundusSet {
    same_fundus_api!();
    fn glaucoma(&self, idx: &[usize]) -> Vec<u32> {
        idx.iter().map(|&i| self.glaucoma[i] as u32).collect()
    }
}

impl FundusSource for RefugeSet {
    same_fundus_api!();
    fn glaucoma(&self, idx: &[usize]) -> Vec<u32> {
        self.glaucoma_batch(idx)
    }
}

impl FundusSource for HrfAvSet {
    same_fundus_api!();
    fn glaucoma(&self, _idx: &[usize]) -> Vec<u32> {
        unreachable!("HRF-AV has no glaucoma labels; load() pairs it with fundus-av only")
    }
}

/// A fundus set (or the `subset` of it that forms one split) with the labels its task pair uses.
pub struct FundusTasks<S: FundusSource> {
    pub set: Arc<S>,
    pub subset: Vec<usize>,
    pub pair: TaskKind,
}

impl<S: FundusSource> FundusTasks<S> {
    pub fn all(set: S, pair: TaskKind) -> Self {
        let subset = (0..set.count()).collect();
        FundusTasks { set: Arc::new(set), subset, pair }
    }
}

impl<S: FundusSource> TaskData for FundusTasks<S> {
    fn len(&self) -> usize {
        self.subset.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let idx: Vec<usize> = idx.iter().map(|&i| self.subset[i]).collect();
        let labels = match self.pair {
            TaskKind::FundusAv => vec![self.set.masks(Mask::ArteryVein, &idx), self.set.masks(Mask::Vessel, &idx)],
            TaskKind::Fundus3 => {
                vec![self.set.masks(Mask::CupDisc, &idx), self.set.masks(Mask::Vessel, &idx), self.set.glaucoma(&idx)]
            }
            _ => vec![self.set.masks(Mask::CupDisc, &idx), self.set.glaucoma(&idx)],
        };
        Batch::new(self.set.images(&idx), labels)
    }
    fn rgb(&self, i: usize) -> Option<(Vec<u8>, usize)> {
        Some((self.set.rgb_bytes(self.subset[i]), self.set.side()))
    }
}

/// Some examples of another split, by index (the validation split and what is left for training).
pub struct Subset {
    inner: SharedData,
    idx: Vec<usize>,
}

impl Subset {
    /// The examples of the underlying split this subset holds, in order.
    pub fn indices(&self) -> &[usize] {
        &self.idx
    }
}

impl TaskData for Subset {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        self.inner.batch(&idx.iter().map(|&i| self.idx[i]).collect::<Vec<_>>())
    }
    fn rgb(&self, i: usize) -> Option<(Vec<u8>, usize)> {
        self.inner.rgb(self.idx[i])
    }
}

/// The validation split of n training examples: round(fraction·n) of them (at least 1, leaving at
/// least 1) drawn by VAL_SEED, as (what is left for training, the validation examples), each sorted.
pub fn validation_indices(n: usize, fraction: f32) -> (Vec<usize>, Vec<usize>) {
    let n_val = ((fraction as f64 * n as f64).round() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(VAL_SEED ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let (mut val, mut rest) = (order[..n_val.min(n)].to_vec(), order[n_val.min(n)..].to_vec());
    val.sort_unstable();
    rest.sort_unstable();
    (rest, val)
}

/// The training split less its validation examples (`validation_indices`), and the validation split.
/// Fraction 0 returns the training split itself, untouched.
/// With per-task data each task's own examples are split (by the same rule), so every task keeps
/// validation examples of its own.
pub fn split_validation(train: Box<dyn TaskData>, fraction: f32) -> Result<(Box<dyn TaskData>, Option<ValSplit>)> {
    if fraction <= 0.0 {
        return Ok((train, None));
    }
    if let Some(sets) = train.task_sets() {
        let (mut rests, mut vals) = (vec![], vec![]);
        for (t, set) in sets.into_iter().enumerate() {
            let n = set.len();
            anyhow::ensure!(n >= 2, "--val-fraction needs at least 2 training examples per task, task {t} has {n}");
            let (rest, val) = validation_indices(n, fraction);
            rests.push(Rc::new(Subset { inner: set.clone(), idx: rest }) as SharedData);
            vals.push(Rc::new(Subset { inner: set, idx: val }) as SharedData);
        }
        return Ok((Box::new(PerTask { sets: rests }), Some(Box::new(PerTask { sets: vals }))));
    }
    let n = train.len();
    anyhow::ensure!(n >= 2, "--val-fraction needs at least 2 training examples, the training split has {n}");
    let (rest, val) = validation_indices(n, fraction);
    let inner: SharedData = Rc::from(train);
    Ok((Box::new(Subset { inner: inner.clone(), idx: rest }), Some(Box::new(Subset { inner, idx: val }))))
}

/// The train and test splits of a data folder: DIR/train and DIR/test when both exist, else every 5th
/// example of DIR is test. `view` makes a split of some examples of a loaded set.
fn split_dir<S>(
    dir: &Path,
    load: impl Fn(&Path) -> Result<S>,
    count: impl Fn(&S) -> usize,
    view: impl Fn(Arc<S>, Vec<usize>) -> Result<Box<dyn TaskData>>,
) -> Result<(Box<dyn TaskData>, Box<dyn TaskData>)> {
    let (train, test) = (dir.join("train"), dir.join("test"));
    let all = |set: S| {
        let n = count(&set);
        view(Arc::new(set), (0..n).collect())
    };
    if train.is_dir() && test.is_dir() {
        return Ok((all(load(&train)?)?, all(load(&test)?)?));
    }
    let set = Arc::new(load(dir)?);
    anyhow::ensure!(count(&set) >= 2, "{}: need at least 2 examples to split into train and test", dir.display());
    let (test_idx, train_idx): (Vec<usize>, Vec<usize>) = (0..count(&set)).partition(|i| i % 5 == 4);
    Ok((view(set.clone(), train_idx)?, view(set, test_idx)?))
}

/// [`split_dir`] for a fundus set read by `load`, labelled for the task pair `pair`.
fn folder_splits<S: FundusSource + 'static>(
    dir: &Path,
    pair: TaskKind,
    load: impl Fn(&Path) -> Result<S, crate::data::DataError>,
) -> Result<(Box<dyn TaskData>, Box<dyn TaskData>)> {
    let view = |set, subset| Ok(Box::new(FundusTasks { set, subset, pair }) as Box<dyn TaskData>);
    split_dir(dir, |d| Ok(load(d)?), S::count, view)
}

/// [`split_dir`] for a user's folder (`data::folder`).
fn folder_task_splits(dir: &Path, m: &Manifest, size: usize) -> Result<(Box<dyn TaskData>, Box<dyn TaskData>)> {
    split_dir(dir, |d| Ok(folder::load_folder(d, m, size)?), FolderSet::len, |set, subset| folder_data(set, subset, m))
}

/// The images `subset` of a folder set: one shared split when each of them has every task's label,
/// else a [`PerTask`] split where task t gets the images that have its label.
fn folder_data(set: Arc<FolderSet>, subset: Vec<usize>, m: &Manifest) -> Result<Box<dyn TaskData>> {
    let labelled = |t: usize| -> Vec<usize> { subset.iter().copied().filter(|&i| set.tasks[t].has[i]).collect() };
    let per_task: Vec<Vec<usize>> = (0..m.tasks.len()).map(labelled).collect();
    if per_task.iter().all(|s| s.len() == subset.len()) {
        return Ok(Box::new(FolderTasks { set, subset }));
    }
    let names: Vec<String> = m.tasks.iter().map(|t| t.name.clone()).collect();
    let sets =
        per_task.into_iter().map(|subset| Rc::new(FolderTasks { set: set.clone(), subset }) as SharedData).collect();
    Ok(Box::new(PerTask::new(sets, &names)?))
}

/// Some images of a user's folder set with every task's labels (zeros where an image has none: a
/// [`PerTask`] split reads task t's labels only from the images that have them).
pub struct FolderTasks {
    set: Arc<FolderSet>,
    subset: Vec<usize>,
}

impl TaskData for FolderTasks {
    fn len(&self) -> usize {
        self.subset.len()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        let idx: Vec<usize> = idx.iter().map(|&i| self.subset[i]).collect();
        let labels = (0..self.set.tasks.len()).map(|t| self.set.labels(t, &idx)).collect();
        Batch::new(self.set.image_batch(&idx), labels)
    }
    fn rgb(&self, i: usize) -> Option<(Vec<u8>, usize)> {
        Some((self.set.raw_rgb(self.subset[i]), self.set.size))
    }
}

/// What the tasks of a `TaskKind` are.
pub struct TaskSetup {
    pub specs: Vec<TaskSpec>,
    pub metrics: Vec<MetricKind>,
    pub names: Vec<String>,
    pub in_channels: usize,
}

impl TaskSetup {
    pub fn n_tasks(&self) -> usize {
        self.specs.len()
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

/// What the tasks of a run are: a built-in kind's, or those its folder manifest names.
pub fn setup(data: &DataConfig) -> TaskSetup {
    match (&data.task, &data.folder) {
        (TaskKind::Folder, Some(m)) => manifest_setup(m),
        (kind, _) => builtin_setup(*kind),
    }
}

fn manifest_setup(m: &Manifest) -> TaskSetup {
    let specs = m.tasks.iter().map(|t| match t.kind {
        Kind::Segment => TaskSpec::Segment { classes: t.classes.len() },
        Kind::Classify => TaskSpec::Classify { classes: t.classes.len() },
    });
    let metrics = m.tasks.iter().map(|t| match t.kind {
        Kind::Segment => MetricKind::Segment(Regions::PerClass(t.classes[1..].to_vec())),
        Kind::Classify => MetricKind::Classify,
    });
    TaskSetup {
        specs: specs.collect(),
        metrics: metrics.collect(),
        names: m.tasks.iter().map(|t| t.name.clone()).collect(),
        in_channels: m.channels,
    }
}

/// What the tasks of a built-in `TaskKind` are (none for `Folder`, whose manifest says).
pub fn builtin_setup(kind: TaskKind) -> TaskSetup {
    match kind {
        TaskKind::Folder => TaskSetup { specs: vec![], metrics: vec![], names: vec![], in_channels: 3 },
        TaskKind::Multimnist => TaskSetup {
            specs: vec![TaskSpec::Classify { classes: 10 }; 2],
            metrics: vec![MetricKind::Classify, MetricKind::Classify],
            names: names(&["left digit", "right digit"]),
            in_channels: 1,
        },
        TaskKind::Fundus => TaskSetup {
            specs: vec![TaskSpec::Segment { classes: 3 }, TaskSpec::Classify { classes: 2 }],
            metrics: vec![MetricKind::Segment(Regions::nested(&["disc", "cup"])), MetricKind::Classify],
            names: names(&["cup/disc segmentation", "glaucoma"]),
            in_channels: 3,
        },
        TaskKind::Fundus3 => TaskSetup {
            specs: vec![
                TaskSpec::Segment { classes: 3 },
                TaskSpec::Segment { classes: 2 },
                TaskSpec::Classify { classes: 2 },
            ],
            metrics: vec![
                MetricKind::Segment(Regions::nested(&["disc", "cup"])),
                MetricKind::Segment(Regions::per_class(&["vessel"])),
                MetricKind::Classify,
            ],
            names: names(&["cup/disc segmentation", "vessel segmentation", "glaucoma"]),
            in_channels: 3,
        },
        TaskKind::FundusAv => TaskSetup {
            specs: vec![TaskSpec::Segment { classes: 3 }, TaskSpec::Segment { classes: 2 }],
            metrics: vec![
                MetricKind::Segment(Regions::per_class(&["artery", "vein"])),
                MetricKind::Segment(Regions::per_class(&["vessel"])),
            ],
            names: names(&["artery/vein segmentation", "vessel segmentation"]),
            in_channels: 3,
        },
    }
}

/// Where the data comes from and how much of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub task: TaskKind,
    /// MNIST folder (multimnist; default ../shared/data/mnist), or a REFUGE-layout folder (fundus) or
    /// HRF-AV-layout folder (fundus-av) instead of the built-in synthetic images.
    pub data_dir: Option<PathBuf>,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Side of the fundus images (synthetic, or real ones resized on load).
    pub size: usize,
    /// The partial-label demonstration: every split's examples dealt to the tasks in turn, each task
    /// training and scored on its own share only ([`deal_to_tasks`]).
    #[serde(default)]
    pub disjoint_labels: bool,
    /// `--task folder`: the data folder's manifest, read once when the run starts and kept in
    /// config.json (so eval and resume build the same tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<Manifest>,
}

/// Default sizes of the synthetic sets (before --limit-*).
pub const SYNTH_TRAIN: usize = 1000;
pub const SYNTH_TEST: usize = 200;

/// Loads (or generates) the train and test splits.
pub fn load(cfg: &DataConfig) -> Result<(Box<dyn TaskData>, Box<dyn TaskData>)> {
    let (train, test) = load_shared(cfg)?;
    if !cfg.disjoint_labels {
        return Ok((train, test));
    }
    let names = setup(cfg).names;
    Ok((deal_to_tasks(train, &names)?, deal_to_tasks(test, &names)?))
}

/// The test split alone (the training split is built as small as it can be and dropped).
pub fn load_test(cfg: &DataConfig) -> Result<Box<dyn TaskData>> {
    let (_, test) = load_shared(&DataConfig { limit_train: Some(1), ..cfg.clone() })?;
    match cfg.disjoint_labels {
        true => deal_to_tasks(test, &setup(cfg).names),
        false => Ok(test),
    }
}

fn load_shared(cfg: &DataConfig) -> Result<(Box<dyn TaskData>, Box<dyn TaskData>)> {
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
        TaskKind::Fundus if cfg.data_dir.as_deref().is_some_and(Release::present) => {
            // The organisers' layout: Training400 trains; Test400 tests when present, else every 5th.
            let dir = cfg.data_dir.as_deref().expect("checked");
            let train = load_refuge_release(dir, Release::Training, cfg.size)?;
            if dir.join("Test400").is_dir() {
                let test = load_refuge_release(dir, Release::Test, cfg.size)?;
                (
                    Box::new(FundusTasks::all(train, TaskKind::Fundus)) as Box<dyn TaskData>,
                    Box::new(FundusTasks::all(test, TaskKind::Fundus)) as Box<dyn TaskData>,
                )
            } else {
                folder_splits(dir, TaskKind::Fundus, |_| Ok(train.clone()))?
            }
        }
        TaskKind::Fundus if cfg.data_dir.is_some() => {
            let dir = cfg.data_dir.as_deref().expect("checked");
            folder_splits(dir, TaskKind::Fundus, |d| load_refuge(d, cfg.size))?
        }
        TaskKind::FundusAv if cfg.data_dir.is_some() => {
            let dir = cfg.data_dir.as_deref().expect("checked");
            folder_splits(dir, TaskKind::FundusAv, |d| load_hrf_av(d, cfg.size))?
        }
        TaskKind::Folder => {
            let (Some(dir), Some(m)) = (cfg.data_dir.as_deref(), cfg.folder.as_ref()) else {
                anyhow::bail!("--task folder needs --data DIR (a folder with {})", folder::MANIFEST)
            };
            folder_task_splits(dir, m, cfg.size)?
        }
        TaskKind::Fundus3 if cfg.data_dir.is_some() => {
            anyhow::bail!("--task fundus3 has synthetic data only (no real data set has all three labels): drop --data")
        }
        pair @ (TaskKind::Fundus | TaskKind::FundusAv | TaskKind::Fundus3) => {
            // Training labels carry the generator's label noise; the test split is scored against the
            // true condition (vCDR above threshold), as a clinical reference standard would be.
            let make = |n: usize, seed: u64, label_noise: f32| {
                let set = FundusSet::generate(&FundusConfig {
                    size: cfg.size,
                    n,
                    seed,
                    label_noise,
                    ..FundusConfig::default()
                });
                Box::new(FundusTasks::all(set, pair)) as Box<dyn TaskData>
            };
            let noise = FundusConfig::default().label_noise;
            (
                make(cfg.limit_train.unwrap_or(SYNTH_TRAIN), DATA_SEED_TRAIN, noise),
                make(cfg.limit_test.unwrap_or(SYNTH_TEST), DATA_SEED_TEST, 0.0),
            )
        }
    })
}
