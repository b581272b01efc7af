//! What a run reports: `metrics.jsonl` lines, `summary.json`, evaluation of a model on a test split,
//! and re-evaluation of a finished run folder (`mtcool eval`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::data::{self, TaskData, TaskKind, TaskSetup};
use super::{Metrics, TrainConfig, EVAL_BATCH};
use crate::backend::Backend;
use crate::checkpoint;
use crate::metrics::TaskMetrics;
use crate::model::{Method, MultiTaskModel, Read, TaskId};
use crate::mtl::mtcool::Mode;
use crate::mtl::{host_value, Objective};
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
    impl NanNull for Vec<f64> {
        type Raw = Vec<Option<f64>>;
        fn from_raw(raw: Self::Raw) -> Self {
            raw.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect()
        }
    }
    impl NanNull for Vec<super::Metrics> {
        type Raw = Vec<BTreeMap<String, Option<f64>>>;
        fn from_raw(raw: Self::Raw) -> Self {
            raw.into_iter().map(|m| m.into_iter().map(|(k, v)| (k, v.unwrap_or(f64::NAN))).collect()).collect()
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
    pub train_loss: Vec<f64>,
    /// Accuracy of the training batches' own predictions (pixel accuracy for segmentation).
    #[serde(with = "nan_as_null")]
    pub train_acc: Vec<f64>,
    #[serde(with = "nan_as_null")]
    pub test: Vec<Metrics>,
    /// Metrics on the validation split (`--val-fraction`), which picks the best epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val: Option<Vec<Metrics>>,
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
    pub metrics: Vec<Metrics>,
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
    /// With a validation split: the epoch whose validation score (`selection_score`) was best, its
    /// test metrics (of the weights kept in model-best.safetensors) and its validation metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_metrics: Option<Vec<Metrics>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_metrics: Option<Vec<Metrics>>,
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
) -> Result<Vec<Metrics>> {
    let clean = vec![Read::Train; setup.n_tasks()];
    Ok(evaluate_pass(model, data, setup, batch_size, &clean)?.iter().map(|a| a.finish()).collect())
}

/// One evaluation pass over `data` with extractor i read as `reads[i]` (a `Read::Frozen` with noise
/// perturbs it, as the flatness probe does), each task's predictions and its unweighted training loss
/// (cross-entropy, plus soft Dice for segmentation; the mean over `batch_size` batches) accumulated.
pub fn evaluate_pass(
    model: &MultiTaskModel,
    data: &dyn TaskData,
    setup: &TaskSetup,
    batch_size: usize,
    reads: &[Read],
) -> Result<Vec<TaskMetrics>> {
    let backend = model.store.backend();
    let objective = Objective::unweighted(&setup.specs);
    let mut acc: Vec<TaskMetrics> =
        (0..setup.n_tasks()).map(|t| TaskMetrics::new(setup.metrics[t].clone(), setup.specs[t].classes())).collect();
    // The passes: every task on the shared split, or (per-task data) each task on its own examples only.
    let all: Vec<TaskId> = TaskId::all(setup.n_tasks()).collect();
    let own = data.task_sets();
    let passes: Vec<(&dyn TaskData, &[TaskId])> = match &own {
        None => vec![(data, &all)],
        Some(sets) => sets.iter().zip(&all).map(|(s, t)| (s.as_ref(), std::slice::from_ref(t))).collect(),
    };
    for (split, tasks) in passes {
        let idx: Vec<usize> = (0..split.len()).collect();
        for chunk in idx.chunks(batch_size.max(1)) {
            let batch = split.batch(chunk);
            let placed = batch.place(&backend, &objective)?;
            let mut tape = Tape::new();
            tape.set_grad_enabled(false);
            let x = tape.constant(placed.x.into_owned());
            let logits = match own {
                Some(_) => vec![model.forward_task(&mut tape, x, tasks[0], reads)?],
                None => model.forward_all(&mut tape, x, reads)?,
            };
            for (&t, &l) in tasks.iter().zip(&logits) {
                let loss = objective.loss(&mut tape, t, l, &placed.targets[t.0])?;
                acc[t.0].add_loss(host_value(tape.value(loss))? as f64, chunk.len());
                acc[t.0].update(&*tape.value(l).host()?, &batch.labels[t.0]);
            }
        }
    }
    Ok(acc)
}

/// What picks the best epoch on the validation split: the mean over the tasks of each task's main
/// metric — AUROC for a binary classification task (threshold-free), accuracy for other
/// classification tasks, the mean Dice over the regions of a segmentation task. NaN if one is missing.
pub fn selection_score(val: &[Metrics], setup: &TaskSetup) -> f64 {
    let main = |t: usize| -> f64 {
        let m = &val[t];
        match setup.specs[t] {
            crate::model::TaskSpec::Classify { classes: 2 } => m.get("auroc").copied().unwrap_or(f64::NAN),
            crate::model::TaskSpec::Classify { .. } => m.get("acc").copied().unwrap_or(f64::NAN),
            crate::model::TaskSpec::Segment { .. } => mean_dice(m),
        }
    };
    let n = setup.n_tasks();
    (0..n).map(main).sum::<f64>() / n as f64
}

/// The mean of a segmentation task's per-region Dice (`dice_*`) metrics; NaN if it has none.
pub fn mean_dice(m: &Metrics) -> f64 {
    let dice: Vec<f64> = m.iter().filter(|(k, _)| k.starts_with("dice_")).map(|(_, v)| *v).collect();
    dice.iter().sum::<f64>() / dice.len() as f64
}

/// The epoch with the best validation score in `history` (the earliest on ties), if any was scored.
pub fn best_epoch<'a>(history: &'a [EpochMetrics], setup: &TaskSetup) -> Option<&'a EpochMetrics> {
    let mut best: Option<(&EpochMetrics, f64)> = None;
    for m in history {
        let Some(val) = &m.val else { continue };
        let score = selection_score(val, setup);
        if !score.is_nan() && best.is_none_or(|(_, b)| score > b) {
            best = Some((m, score));
        }
    }
    best.map(|(m, _)| m)
}

/// "name value, name value" for a log line.
pub fn describe(m: &Metrics) -> String {
    m.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

/// Re-evaluates a finished run from its folder: reloads `model.safetensors`, rebuilds the test split
/// from `config.json` (with `data_dir` overriding where MNIST lives, if given).
pub fn eval_run(run: &Path, data_dir: Option<PathBuf>) -> Result<(Summary, Vec<Metrics>)> {
    eval_run_on(run, data_dir, &Backend::Cpu)
}

/// [`eval_run`] with the model on `backend`.
pub fn eval_run_on(run: &Path, data_dir: Option<PathBuf>, backend: &Backend) -> Result<(Summary, Vec<Metrics>)> {
    eval_run_model(run, data_dir, backend, false)
}

/// [`eval_run_on`] of `model.safetensors`, or with `best` of `model-best.safetensors` (the best
/// validation epoch's weights). A binary task is also scored at the decision threshold summary.json
/// records for those weights (chosen on the validation split during training).
pub fn eval_run_model(
    run: &Path,
    data_dir: Option<PathBuf>,
    backend: &Backend,
    best: bool,
) -> Result<(Summary, Vec<Metrics>)> {
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
    let (file, recorded) = if best {
        let Some(m) = &summary.best_metrics else {
            bail!("--best: {} was trained without a validation split (--val-fraction)", run.display());
        };
        ("model-best.safetensors", m)
    } else {
        ("model.safetensors", &summary.metrics)
    };
    let mut model = checkpoint::load(&run.join(file))?;
    model.store.to_backend(backend)?;
    if model.cfg != cfg.model_config() {
        bail!("{file} does not match config.json in {}", run.display());
    }
    let test = data::load_test(&cfg.data)?;
    let setup = data::setup(&cfg.data);
    let pass = evaluate_pass(&model, test.as_ref(), &setup, EVAL_BATCH, &vec![Read::Train; setup.n_tasks()])?;
    let metrics = pass
        .iter()
        .enumerate()
        .map(|(t, p)| p.finish_at(recorded.get(t).and_then(|m| m.get("threshold")).copied()))
        .collect();
    Ok((summary, metrics))
}
