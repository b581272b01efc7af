//! Model checkpoints as safetensors: one f32 tensor per parameter under its PyTorch-style name, and the
//! model's structure (`ModelConfig`, JSON) in the header metadata under `mtcool.model`, so a checkpoint
//! file alone is enough to rebuild and run the model (see `predict`). Training checkpoints
//! (`train::resume`) add optimiser tensors under the `optim.` prefix and more metadata; `from_bytes`
//! reads the model out of either. Writes are atomic: a temporary file in the same folder is written,
//! fsynced, then renamed over the target.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::model::multitask::{Arch, ModelConfig, MultiTaskModel};
use crate::preprocess::{Inputs, INPUTS_KEY, INPUTS_VERSION};

const CONFIG_KEY: &str = "mtcool.model";

/// Test hook: `MTCOOL_KILL_WHILE_WRITING=<file name>` kills the process (SIGKILL) half-way through
/// writing that file's temp file, as a power cut or an OOM kill would (tests/resume.rs).
pub const KILL_WHILE_WRITING_ENV: &str = "MTCOOL_KILL_WHILE_WRITING";

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    // The temp name is unique per process and call: two `compare` processes sharing an output folder
    // both rewrite results.json, and one fixed name let one rename the other's half-written file away.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.{}-{call}.tmp", name.to_string_lossy(), std::process::id()));
    let kill = std::env::var_os(KILL_WHILE_WRITING_ENV).is_some_and(|v| v == name);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        if kill {
            f.write_all(&bytes[..bytes.len() / 2])?;
            f.sync_all()?;
            // SAFETY: signals this very process; nothing after this line runs.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable where the platform allows it.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow!("cannot write {}: {e}", path.display())
    })
}

/// Tensors under this prefix are not model parameters (training checkpoints keep optimiser state there).
pub const STATE_PREFIX: &str = "optim.";

/// Serialises every parameter and the model config.
pub fn to_bytes(model: &MultiTaskModel) -> Result<Vec<u8>> {
    to_bytes_with(model, &[], &[])
}

/// `to_bytes` plus `extra` f32 tensors (name, shape, values; names must start with [`STATE_PREFIX`])
/// and `meta` header entries.
pub fn to_bytes_with(
    model: &MultiTaskModel,
    extra: &[(String, Vec<usize>, &[f32])],
    meta: &[(&str, String)],
) -> Result<Vec<u8>> {
    // GPU parameters are downloaded here: a checkpoint is always written from host copies.
    let host: Vec<_> = model.store.iter().map(|p| p.value.host()).collect::<Result<_>>()?;
    let params = model.store.iter().zip(&host).map(|(p, h)| (p.name.clone(), p.value.shape().to_vec(), h.data()));
    let views: Vec<(String, TensorView)> = params
        .chain(extra.iter().map(|(n, s, d)| (n.clone(), s.clone(), *d)))
        .map(|(name, shape, data)| Ok((name, TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(data))?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let mut header = HashMap::new();
    header.insert(CONFIG_KEY.to_string(), serde_json::to_string(&model.cfg)?);
    header.insert("format".to_string(), "pt".to_string());
    header.extend(meta.iter().map(|(k, v)| (k.to_string(), v.clone())));
    sorted_header(safetensors::serialize(views, Some(header))?)
}

/// Rewrites the JSON header with its keys sorted: safetensors writes the metadata map in `HashMap`
/// order, which differs between runs, and equal models must give byte-identical files.
fn sorted_header(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut top: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n])?;
    if let Some(meta) = top.get_mut("__metadata__") {
        let sorted: BTreeMap<String, String> = serde_json::from_value(meta.take())?;
        *meta = serde_json::to_value(sorted)?;
    }
    let mut json = serde_json::to_vec(&top)?;
    ensure!(json.len() <= n, "safetensors header grew when sorted");
    json.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&json);
    Ok(bytes)
}

pub fn save(model: &MultiTaskModel, path: &Path) -> Result<()> {
    write_atomic(path, &to_bytes(model)?)
}

/// [`save`] with the preprocessing record (`mtcool.inputs`, see `preprocess::Inputs`) in the header.
pub fn save_with_inputs(model: &MultiTaskModel, inputs: &Inputs, path: &Path) -> Result<()> {
    write_atomic(path, &to_bytes_with(model, &[], &[(INPUTS_KEY, serde_json::to_string(inputs)?)])?)
}

/// The preprocessing record of a checkpoint, if it has one (checkpoints written before it existed
/// do not).
pub fn inputs(bytes: &[u8]) -> Result<Option<Inputs>> {
    match metadata(bytes)?.get(INPUTS_KEY) {
        None => Ok(None),
        Some(json) => {
            let i: Inputs = serde_json::from_str(json).map_err(|e| anyhow!("bad `{INPUTS_KEY}` metadata: {e}"))?;
            ensure!(
                i.version == INPUTS_VERSION,
                "`{INPUTS_KEY}` version {} (this mtcool reads {INPUTS_VERSION})",
                i.version
            );
            Ok(Some(i))
        }
    }
}

/// Rebuilds a model from a checkpoint, checking every tensor's presence, dtype and shape.
pub fn load(path: &Path) -> Result<MultiTaskModel> {
    let bytes = fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("checkpoint {}", path.display()))
}

/// The header metadata of a safetensors file (empty if it has none).
pub fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// A lower bound on the parameter bytes of `cfg` (its largest weight), so that a damaged header cannot
/// make us build a model far bigger than the file.
fn min_param_bytes(cfg: &ModelConfig) -> u64 {
    let scaled = |base: f32| ((base * cfg.width).round() as u64).max(1);
    4 * match cfg.arch {
        Arch::Lenet => scaled(20.0) * 16 * scaled(50.0),
        Arch::Unet { base } => 144 * scaled(base as f32).pow(2),
    }
}

pub fn from_bytes(bytes: &[u8]) -> Result<MultiTaskModel> {
    let meta = metadata(bytes)?;
    let cfg_json = meta.get(CONFIG_KEY).ok_or_else(|| anyhow!("no `{CONFIG_KEY}` metadata: not written by mtcool"))?;
    let cfg: ModelConfig = serde_json::from_str(cfg_json).map_err(|e| anyhow!("bad `{CONFIG_KEY}` metadata: {e}"))?;
    cfg.validate().map_err(|e| anyhow!("implausible model config in metadata ({e}): {cfg_json}"))?;
    if min_param_bytes(&cfg) > bytes.len() as u64 {
        bail!("metadata describes a model of at least {} bytes, the file has {}", min_param_bytes(&cfg), bytes.len());
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("corrupt safetensors: {e}"))?;
    let mut model = MultiTaskModel::new(cfg, 0);
    let expected = model.store.len();
    let found = st.names().iter().filter(|n| !n.starts_with(STATE_PREFIX)).count();
    if found != expected {
        bail!("has {found} parameter tensors, the model needs {expected}");
    }
    for id in model.all_params() {
        let p = model.store.get_mut(id);
        let values = read_f32(&st, &p.name, p.value.shape())?;
        p.value.data_mut().copy_from_slice(&values);
    }
    Ok(model)
}

/// Tensor `name` of `st`, which must exist, be F32 and have shape `shape`.
pub fn read_f32(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = st.tensor(name).map_err(|_| anyhow!("missing tensor {name}"))?;
    if view.dtype() != Dtype::F32 {
        bail!("tensor {name} has dtype {:?}, expected F32", view.dtype());
    }
    if view.shape() != shape {
        bail!("tensor {name} has shape {:?}, expected {shape:?}", view.shape());
    }
    Ok(view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::write_atomic;

    /// Writers racing on one path (two `compare` processes sharing a folder) each succeed, and the file
    /// ends whole: one of the contents written, never a mix or an error.
    #[test]
    fn concurrent_atomic_writes_to_one_path_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        write_atomic(&path, &vec![i; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(bytes.iter().all(|&b| b == bytes[0]));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "temp files left behind: {left:?}");
    }
}
