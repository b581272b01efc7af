//! What a run reports: `metrics.jsonl` lines, `summary.json`, evaluation of a model on a test split,
//! and re-evaluation of a finished run folder (`mtcool eval`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::data::{self, DataConfig, TaskData, TaskKind, TaskSetup};
use super::{Metrics, TrainConfig, EVAL_BATCH};
use crate::backend::Backend;
use crate::checkpoint;
use crate::metrics::TaskMetrics;
use crate::model::{Method, MultiTaskModel, Read, TaskId};
use crate::mtl::mtcool::Mode;
use crate::tape::Tape;

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
    /// Where those seconds went.
    #[serde(default)]
    pub time: EpochTime,
}

/// Where an epoch's wall time went, in seconds (the rest of `seconds` is the loop itself: shuffling,
/// progress bar, bookkeeping). The epoch's end-of-epoch checkpoint is written after its metrics line,
/// so it is not counted here; step checkpoints (`--checkpoint-every`) and model.safetensors are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochTime {
    /// Building the mini-batches from the data set.
    pub data: f64,
    /// The optimisation steps, with their non-finite checks.
    pub steps: f64,
    /// Reading back the steps' losses and correct counts (a GPU's downloads).
    pub stats: f64,
    /// Evaluating the test set.
    pub eval: f64,
    /// Writing step checkpoints and model.safetensors.
    pub checkpoints: f64,
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
    /// GPU runs: the caching allocator's byte counts at the end (peak and live bytes, driver allocations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<crate::backend::cuda::MemoryStats>,
    /// `--graph` runs: steps run by replaying the captured graph (the others ran eagerly: the warm-up
    /// and batches of another size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_replays: Option<u64>,
}

/// Test metrics of both tasks (clean weights, no gradient), run where the model lives (each batch's
/// logits downloaded for the metrics).
pub fn evaluate(
    model: &MultiTaskModel,
    data: &dyn TaskData,
    setup: &TaskSetup,
    batch_size: usize,
) -> Result<[Metrics; 2]> {
    let backend = model.store.backend();
    let mut acc = [0, 1].map(|t| TaskMetrics::new(setup.metrics[t].clone(), setup.specs[t].classes()));
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = data.batch(chunk);
        let mut tape = Tape::new();
        tape.set_grad_enabled(false);
        let x = tape.constant(batch.x.to_backend(&backend)?);
        let logits = model.forward_all(&mut tape, x, [Read::Train, Read::Train])?;
        for t in TaskId::BOTH {
            acc[t.0].update(&*tape.value(logits[t.0]).host()?, &batch.labels[t.0]);
        }
    }
    Ok(acc.map(|a| a.finish()))
}

/// "name value, name value" for a log line.
pub fn describe(m: &Metrics) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

/// Re-evaluates a finished run from its folder: reloads `model.safetensors`, rebuilds the test split
/// from `config.json` (with `data_dir` overriding where MNIST lives, if given).
pub fn eval_run(run: &Path, data_dir: Option<PathBuf>) -> Result<(Summary, [Metrics; 2])> {
    eval_run_on(run, data_dir, &Backend::Cpu)
}

/// [`eval_run`] with the model on `backend`.
pub fn eval_run_on(run: &Path, data_dir: Option<PathBuf>, backend: &Backend) -> Result<(Summary, [Metrics; 2])> {
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
    let mut model = checkpoint::load(&run.join("model.safetensors"))?;
    model.store.to_backend(backend)?;
    if model.cfg != cfg.model_config() {
        bail!("model.safetensors does not match config.json in {}", run.display());
    }
    let (_, test) = data::load(&DataConfig { limit_train: Some(1), ..cfg.data.clone() })?;
    Ok((summary, evaluate(&model, test.as_ref(), &data::setup(cfg.data.task), EVAL_BATCH)?))
}
