//! Training checkpoints and `--resume`. `ckpt/step-<N>.safetensors` in the run folder (N = global steps
//! done) holds the parameters (under their model names, so `checkpoint::load` reads it as a model), the
//! optimiser state (`optim.m.<param>`, `optim.v.<param>` for Adam, `optim.velocity.<param>` for SGD)
//! and, as JSON metadata under `mtcool.train`, the run's config, where the run stands ([`Position`]:
//! epoch, step within it, global step, the epoch's running sums, the metrics history) and Adam's
//! per-parameter step counts. Nothing else is needed to go on bit-exactly: each epoch's shuffle is a
//! function of (seed, epoch) and MT-CooL's noise of (seed, global step).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::{EpochAcc, EpochMetrics, TrainConfig};
use crate::checkpoint::{self, write_atomic, STATE_PREFIX};
use crate::model::MultiTaskModel;
use crate::optim::{AdamState, Optimizer, ParamState};

/// The checkpoint folder inside a run folder.
pub const CKPT_DIR: &str = "ckpt";
const STATE_KEY: &str = "mtcool.train";
const FORMAT_VERSION: u32 = 1;

/// Where a run stands between two steps, and what it has measured so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Position {
    /// The epoch to run next or to finish (1-based; `epochs + 1` once all are done).
    pub epoch: u32,
    /// Steps of `epoch` already done.
    pub step_in_epoch: u32,
    /// Steps done since the start of the run.
    pub global_step: u32,
    /// Running sums of `epoch` so far.
    pub acc: EpochAcc,
    /// One entry per finished epoch.
    pub history: Vec<EpochMetrics>,
    /// Steps skipped for a non-finite loss or gradient (`--skip-nonfinite`).
    pub skipped: u64,
    /// Training seconds spent before this process.
    pub seconds: f64,
}

impl Position {
    pub fn start() -> Self {
        Position { epoch: 1, ..Position::default() }
    }
}

#[derive(Serialize, Deserialize)]
struct TrainMeta {
    version: u32,
    config: TrainConfig,
    position: Position,
    /// Adam's step count of each parameter it has stepped.
    adam_steps: BTreeMap<String, u32>,
}

/// A checkpoint read back.
pub struct Restored {
    pub model: MultiTaskModel,
    pub opt: Optimizer,
    pub pos: Position,
    pub path: PathBuf,
}

pub fn ckpt_dir(run: &Path) -> PathBuf {
    run.join(CKPT_DIR)
}

fn ckpt_path(run: &Path, global_step: u32) -> PathBuf {
    ckpt_dir(run).join(format!("step-{global_step}.safetensors"))
}

/// Serialises a training checkpoint.
pub fn to_bytes(model: &MultiTaskModel, opt: &Optimizer, cfg: &TrainConfig, pos: &Position) -> Result<Vec<u8>> {
    let name = |id| model.store.get(id).name.as_str();
    let state = opt.export_state()?;
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = vec![];
    let mut adam_steps = BTreeMap::new();
    for (id, s) in &state {
        let (pname, shape) = (name(*id), model.store.value(*id).shape());
        let key = |kind: &str| format!("{STATE_PREFIX}{kind}.{pname}");
        match s {
            ParamState::Sgd { velocity } => tensors.push((key("velocity"), shape.to_vec(), velocity)),
            ParamState::Adam(a) => {
                tensors.push((key("m"), shape.to_vec(), &a.m));
                tensors.push((key("v"), shape.to_vec(), &a.v));
                adam_steps.insert(pname.to_string(), a.step);
            }
        }
    }
    let meta = TrainMeta { version: FORMAT_VERSION, config: cfg.clone(), position: pos.clone(), adam_steps };
    let inputs = serde_json::to_string(&crate::preprocess::Inputs::for_run(cfg))?;
    let header = [(STATE_KEY, serde_json::to_string(&meta)?), (crate::preprocess::INPUTS_KEY, inputs)];
    checkpoint::to_bytes_with(model, &tensors, &header)
}

/// Reads a training checkpoint of a run configured as `cfg` with `steps_per_epoch` steps per epoch,
/// checking that everything in it fits that run.
pub fn from_bytes(
    bytes: &[u8],
    cfg: &TrainConfig,
    steps_per_epoch: u32,
) -> Result<(MultiTaskModel, Optimizer, Position)> {
    let model = checkpoint::from_bytes(bytes)?;
    let meta_json = checkpoint::metadata(bytes)?
        .remove(STATE_KEY)
        .ok_or_else(|| anyhow!("no `{STATE_KEY}` metadata: a model file, not a training checkpoint"))?;
    let meta: TrainMeta = serde_json::from_str(&meta_json).map_err(|e| anyhow!("bad `{STATE_KEY}` metadata: {e}"))?;
    ensure!(meta.version == FORMAT_VERSION, "checkpoint format {} (this build reads {FORMAT_VERSION})", meta.version);
    ensure!(meta.config == *cfg, "written by a run configured differently from config.json");
    ensure!(model.cfg == cfg.model_config(), "its model does not match config.json");
    let p = &meta.position;
    let valid = p.epoch.checked_sub(1).is_some_and(|done| {
        done <= cfg.epochs
            && p.step_in_epoch < steps_per_epoch
            && (done < cfg.epochs || p.step_in_epoch == 0)
            && p.history.len() == done as usize
            && done as u64 * steps_per_epoch as u64 + p.step_in_epoch as u64 == p.global_step as u64
    });
    ensure!(
        valid,
        "inconsistent position (epoch {}, step {}, global step {})",
        p.epoch,
        p.step_in_epoch,
        p.global_step
    );
    ensure!(model.store.iter().all(|q| q.value.data().iter().all(|v| v.is_finite())), "non-finite parameters");

    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("corrupt safetensors: {e}"))?;
    let mut state = vec![];
    let mut state_tensors = 0;
    for id in model.all_params() {
        let (pname, shape) = (&model.store.get(id).name, model.store.value(id).shape());
        let key = |kind: &str| format!("{STATE_PREFIX}{kind}.{pname}");
        let present = |kind: &str| st.tensor(&key(kind)).is_ok();
        let read = |kind: &str| checkpoint::read_f32(&st, &key(kind), shape);
        let entry = match cfg.optimizer {
            super::OptimizerKind::Sgd if present("velocity") => Some(ParamState::Sgd { velocity: read("velocity")? }),
            super::OptimizerKind::Adam if present("m") => {
                let step = *meta.adam_steps.get(pname).ok_or_else(|| anyhow!("no Adam step count for {pname}"))?;
                Some(ParamState::Adam(AdamState { m: read("m")?, v: read("v")?, step }))
            }
            _ => None,
        };
        if let Some(e) = entry {
            state_tensors += if matches!(e, ParamState::Adam(_)) { 2 } else { 1 };
            state.push((id, e));
        }
    }
    let total_state = st.names().iter().filter(|n| n.starts_with(STATE_PREFIX)).count();
    ensure!(
        total_state == state_tensors,
        "{total_state} optimiser tensors, of which only {state_tensors} fit a {:?} optimiser",
        cfg.optimizer
    );
    let mut opt = cfg.optimizer();
    opt.import_state(state)?;
    Ok((model, opt, meta.position))
}

/// Writes the checkpoint of `pos.global_step` atomically, then deletes all but the newest `keep`.
/// Refuses non-finite parameters, so a good checkpoint is never replaced by a poisoned one.
pub fn save(
    run: &Path,
    model: &MultiTaskModel,
    opt: &Optimizer,
    cfg: &TrainConfig,
    pos: &Position,
    keep: usize,
) -> Result<PathBuf> {
    for p in model.store.iter() {
        if !p.value.host()?.all_finite() {
            bail!("refusing to checkpoint non-finite parameter {}", p.name);
        }
    }
    let dir = ckpt_dir(run);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = ckpt_path(run, pos.global_step);
    // Room is made before the write (down to keep − 1), so that a run killed at any moment leaves
    // at most `keep`; with keep = 1 the old one goes only once the new one is written, so that a
    // checkpoint always exists.
    prune(run, keep.saturating_sub(1).max(1))?;
    write_atomic(&path, &to_bytes(model, opt, cfg, pos)?)?;
    prune(run, keep)?;
    Ok(path)
}

/// Removes all but the newest `keep` checkpoints of `run`.
fn prune(run: &Path, keep: usize) -> Result<()> {
    for (_, old) in list(run).into_iter().skip(keep) {
        fs::remove_file(&old).with_context(|| format!("cannot remove old checkpoint {}", old.display()))?;
    }
    Ok(())
}

/// The checkpoints of `run`, newest first.
pub fn list(run: &Path) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = fs::read_dir(ckpt_dir(run)) else { return vec![] };
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("step-")?.strip_suffix(".safetensors")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.0));
    found
}

/// The newest checkpoint of `run` that reads back and fits `cfg`, with a warning line for each newer
/// one that did not. Reads only: the run folder is left as it is.
pub fn latest(run: &Path, cfg: &TrainConfig, steps_per_epoch: u32) -> Result<(Restored, Vec<String>)> {
    let all = list(run);
    if all.is_empty() {
        bail!(
            "{} holds no checkpoint to resume from (none was written before the run stopped)",
            ckpt_dir(run).display()
        );
    }
    let mut failures = vec![];
    for (_, path) in all {
        let read = fs::read(&path).map_err(anyhow::Error::from).and_then(|b| from_bytes(&b, cfg, steps_per_epoch));
        match read {
            Ok((model, opt, pos)) => {
                let warnings = failures.iter().map(|f| format!("{f}; falling back to {}", path.display())).collect();
                return Ok((Restored { model, opt, pos, path }, warnings));
            }
            Err(e) => failures.push(format!("checkpoint {} is unusable: {e:#}", path.display())),
        }
    }
    bail!("no usable checkpoint in {}: {}", ckpt_dir(run).display(), failures.join("; "))
}

/// Deletes temporary files left by interrupted atomic writes (`.<name>.tmp`) in the run and ckpt folders.
pub fn clean_temp(run: &Path) {
    for dir in [run.to_path_buf(), ckpt_dir(run)] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Removes the checkpoints of an earlier run in the same folder (a fresh run starts over).
pub fn clear(run: &Path) -> Result<()> {
    let dir = ckpt_dir(run);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(anyhow!("cannot clear {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// The config of the run folder `run` (for `--resume`).
pub fn read_config(run: &Path) -> Result<TrainConfig> {
    let path = run.join("config.json");
    if !run.is_dir() {
        bail!("--resume {}: no such folder", run.display());
    }
    let text = fs::read_to_string(&path)
        .map_err(|e| anyhow!("--resume {}: not a run folder (cannot read config.json: {e})", run.display()))?;
    let cfg: TrainConfig =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a valid run config: {e}", path.display()))?;
    cfg.validate().with_context(|| format!("{}", path.display()))?;
    Ok(cfg)
}
