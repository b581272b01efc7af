//! Model checkpoints as safetensors: one f32 tensor per parameter under its PyTorch-style name, and the
//! model's structure (`ModelConfig`, JSON) in the header metadata under `mtcool.model`, so a checkpoint
//! file alone is enough to rebuild and run the model (see `predict`). Writes are atomic: a temporary file
//! in the same folder is written, fsynced, then renamed over the target.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::model::multitask::{ModelConfig, MultiTaskModel};

const CONFIG_KEY: &str = "mtcool.model";

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
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

/// Serialises every parameter and the model config.
pub fn to_bytes(model: &MultiTaskModel) -> Result<Vec<u8>> {
    let views: Vec<(String, TensorView)> = model
        .store
        .iter()
        .map(|p| {
            let bytes: &[u8] = bytemuck::cast_slice(p.value.data());
            Ok((p.name.clone(), TensorView::new(Dtype::F32, p.value.shape().to_vec(), bytes)?))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let mut meta = HashMap::new();
    meta.insert(CONFIG_KEY.to_string(), serde_json::to_string(&model.cfg)?);
    meta.insert("format".to_string(), "pt".to_string());
    Ok(safetensors::serialize(views, Some(meta))?)
}

pub fn save(model: &MultiTaskModel, path: &Path) -> Result<()> {
    write_atomic(path, &to_bytes(model)?)
}

/// Rebuilds a model from a checkpoint, checking every tensor's presence, dtype and shape.
pub fn load(path: &Path) -> Result<MultiTaskModel> {
    let bytes = fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("checkpoint {}", path.display()))
}

pub fn from_bytes(bytes: &[u8]) -> Result<MultiTaskModel> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("not a safetensors file: {e}"))?;
    let cfg_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| anyhow!("no `{CONFIG_KEY}` metadata: not written by mtcool"))?;
    let cfg: ModelConfig = serde_json::from_str(cfg_json).map_err(|e| anyhow!("bad `{CONFIG_KEY}` metadata: {e}"))?;
    cfg.validate().map_err(|e| anyhow!("implausible model config in metadata ({e}): {cfg_json}"))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("corrupt safetensors: {e}"))?;
    let mut model = MultiTaskModel::new(cfg, 0);
    let expected = model.store.len();
    if st.len() != expected {
        bail!("has {} tensors, the model needs {expected}", st.len());
    }
    for id in model.all_params() {
        let p = model.store.get_mut(id);
        let view = st.tensor(&p.name).map_err(|_| anyhow!("missing tensor {}", p.name))?;
        if view.dtype() != Dtype::F32 {
            bail!("tensor {} has dtype {:?}, expected F32", p.name, view.dtype());
        }
        if view.shape() != p.value.shape() {
            bail!("tensor {} has shape {:?}, expected {:?}", p.name, view.shape(), p.value.shape());
        }
        let dst = p.value.data_mut();
        for (d, chunk) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
            *d = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
    }
    Ok(model)
}
