//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/`) and the stable
//! smoke test (`tests/fuzz_smoke.rs`): each feeds arbitrary bytes to one reader and says whether the
//! reader accepted them. Any `Err` is fine; a panic, an abort or an unbounded allocation is a bug.
#![allow(dead_code)] // each cargo-fuzz binary uses one of them

use mtcool::data::{hrf_av, mnist, refuge};
use mtcool::train::resume;

/// The MNIST IDX reader (raw or gzip), as images and as labels.
pub fn idx(data: &[u8]) -> bool {
    let images = mnist::parse_idx_images(data);
    if let Ok((pixels, n, rows, cols)) = &images {
        assert_eq!(pixels.len(), n * rows * cols);
    }
    let labels = mnist::parse_idx_labels(data);
    images.is_ok() || labels.is_ok()
}

/// One REFUGE / HRF-AV image or mask: decoding, then the per-pixel class maps the loaders compute.
pub fn image(data: &[u8]) -> bool {
    let Ok(img) = refuge::decode_image(data) else { return false };
    let grey = img.to_luma8();
    let classes: Vec<u8> = grey.as_raw().iter().map(|&v| refuge::grey_class(v)).collect();
    let cdr = refuge::vertical_cdr(&classes, grey.width() as usize);
    assert!((0.0..=1.0).contains(&cdr), "cup/disc ratio {cdr}");
    for p in img.to_rgb8().pixels() {
        hrf_av::av_class(p.0);
    }
    true
}

/// Model and training checkpoints: `checkpoint::from_bytes`, and `resume::from_bytes` under the run
/// config found in the file itself; whatever loads must serialise again.
pub fn checkpoint(data: &[u8]) -> bool {
    let mut parsed = false;
    if let Ok(model) = mtcool::checkpoint::from_bytes(data) {
        let again = mtcool::checkpoint::to_bytes(&model).expect("a loaded model serialises");
        mtcool::checkpoint::from_bytes(&again).expect("a re-serialised model loads");
        parsed = true;
    }
    let Ok(meta) = mtcool::checkpoint::metadata(data) else { return parsed };
    let cfg = meta
        .get("mtcool.train")
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|v| serde_json::from_value::<mtcool::train::TrainConfig>(v["config"].clone()).ok());
    if let Some(cfg) = cfg.filter(|c| c.validate().is_ok()) {
        for steps_per_epoch in [1, 3] {
            if let Ok((model, opt, pos)) = resume::from_bytes(data, &cfg, steps_per_epoch) {
                resume::to_bytes(&model, &opt, &cfg, &pos).expect("a loaded checkpoint serialises");
                parsed = true;
            }
        }
    }
    parsed
}
