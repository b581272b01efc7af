//! The user's own multi-task image set (`--task folder --data DIR`): one documented layout for any mix
//! of segmentation and classification tasks, some of which may label only part of the images.
//!
//! ```text
//! DIR/tasks.json            the manifest (below)
//! DIR/images/               the images: .png .jpg .jpeg .bmp .tif .tiff (any letter case)
//! DIR/<masks>/              per segmentation task: one mask per image, same stem, .png .bmp .tif .tiff
//! DIR/<labels>.csv          per classification task: rows `file,label` (an optional header row)
//! ```
//!
//! With `DIR/train/` and `DIR/test/` each laid out like that (the manifest stays at `DIR/tasks.json`),
//! those are the splits; otherwise every 5th image is a test image. The manifest:
//!
//! ```json
//! {"channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
//!  "tasks": [
//!    {"name": "lesion", "kind": "segment", "masks": "masks/lesion",
//!     "classes": ["background", "lesion"], "values": [0, 255]},
//!    {"name": "diagnosis", "kind": "classify", "labels": "diagnosis.csv",
//!     "classes": ["normal", "disease"], "partial": true}]}
//! ```
//!
//! * `channels` 1 (grey) or 3 (RGB, the default); images are converted, resized bilinearly to the run's
//!   `--size` square, and normalised as `(byte/255 − mean[c]) / std[c]` (defaults 0.5 and 0.25).
//! * Mask encoding: a mask is read as 8-bit grey (colour masks as luma); pixel value `values[k]` is
//!   class k (`values` defaults to 0, 1, 2, …: the value is the class index). Any other value is an
//!   error, so save masks losslessly (not JPEG). Class 0 is the background; the others are scored
//!   (Dice and accuracy per class). Masks are resized by nearest neighbour.
//! * CSV labels: the file name or stem of an image, then a class name from `classes` or its index.
//! * `partial: true`: images without that task's mask or CSV row are allowed (they never enter the
//!   task's loss); otherwise each one is an error. A run whose tasks label different images trains each
//!   task on its own images (see `train::data::PerTask`).
//!
//! Every failure is a [`DataError`] naming the file; nothing panics on bad input.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

use super::refuge::{
    check_same_size, check_size, csv_pairs, denormalise_rgb, ext, fmt_err, list_files, normalise_chw, open_image,
    resize_nearest, stem,
};
use super::DataError;
use crate::model::multitask::MAX_TASKS;
use crate::Tensor;

/// The manifest's file name, at the top of the data folder.
pub const MANIFEST: &str = "tasks.json";
/// Image files the folder format and `mtcool predict` read.
pub const IMAGE_EXTS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];
const MASK_EXTS: &[&str] = &["png", "bmp", "tif", "tiff"];

/// `tasks.json`: the tasks and how images become tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default = "default_channels")]
    pub channels: usize,
    #[serde(default)]
    pub mean: Option<Vec<f32>>,
    #[serde(default)]
    pub std: Option<Vec<f32>>,
    pub tasks: Vec<TaskDef>,
}

fn default_channels() -> usize {
    3
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Segment,
    Classify,
}

/// One task of the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDef {
    pub name: String,
    pub kind: Kind,
    pub classes: Vec<String>,
    /// Segmentation: the mask folder, relative to the split folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masks: Option<String>,
    /// Segmentation: the grey value of each class (default: the class index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<u8>>,
    /// Classification: the CSV file, relative to the split folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
    #[serde(default)]
    pub partial: bool,
}

impl Manifest {
    /// Reads and checks `DIR/tasks.json`.
    pub fn read(dir: &Path) -> Result<Manifest, DataError> {
        let path = dir.join(MANIFEST);
        if !dir.is_dir() {
            return Err(fmt_err(dir, "data folder not found"));
        }
        let text = std::fs::read(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => fmt_err(&path, "manifest not found (see the README's \"Your own data\")"),
            _ => DataError::Io { path: path.clone(), err },
        })?;
        let m: Manifest =
            serde_json::from_slice(&text).map_err(|e| fmt_err(&path, format!("invalid manifest: {e}")))?;
        m.check().map_err(|msg| fmt_err(&path, msg))?;
        Ok(m)
    }

    fn check(&self) -> Result<(), String> {
        let n = self.tasks.len();
        if !(2..=MAX_TASKS).contains(&n) {
            return Err(format!("{n} tasks; a multi-task run needs 2 to {MAX_TASKS}"));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(format!("channels must be 1 or 3, got {}", self.channels));
        }
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            if let Some(v) = v {
                if v.len() != self.channels || v.iter().any(|x| !x.is_finite()) {
                    return Err(format!("{what} needs {} finite numbers, got {v:?}", self.channels));
                }
            }
        }
        if self.std.as_ref().is_some_and(|s| s.iter().any(|&x| x <= 0.0)) {
            return Err("std must be positive".into());
        }
        let mut names = HashSet::new();
        for t in &self.tasks {
            let name = &t.name;
            if name.trim().is_empty() || !names.insert(name.as_str()) {
                return Err(format!("task names must be non-empty and distinct ({name:?})"));
            }
            let classes: HashSet<&String> = t.classes.iter().collect();
            if t.classes.len() < 2 || t.classes.len() > 256 || classes.len() != t.classes.len() {
                return Err(format!("task {name:?}: 2 to 256 distinct class names needed"));
            }
            match t.kind {
                Kind::Segment => {
                    if t.masks.is_none() || t.labels.is_some() {
                        return Err(format!(
                            "segmentation task {name:?} names its \"masks\" folder (and no \"labels\")"
                        ));
                    }
                    if let Some(v) = &t.values {
                        let distinct: HashSet<&u8> = v.iter().collect();
                        if v.len() != t.classes.len() || distinct.len() != v.len() {
                            return Err(format!("task {name:?}: \"values\" needs one distinct grey value per class"));
                        }
                    }
                }
                Kind::Classify => {
                    if t.labels.is_none() || t.masks.is_some() || t.values.is_some() {
                        return Err(format!("classification task {name:?} names its \"labels\" CSV (and no masks)"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The normalisation constants, per channel.
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        let c = self.channels;
        (self.mean.clone().unwrap_or(vec![0.5; c]), self.std.clone().unwrap_or(vec![0.25; c]))
    }
}

/// One task's labels over a split: whether image i has one, and its value(s) (a class per pixel of the
/// resized mask, or one class), zeros where it has none.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskLabels {
    pub has: Vec<bool>,
    pub values: Vec<u8>,
    /// Labels per image: size² for segmentation, 1 for classification.
    pub per_image: usize,
}

/// A loaded split: `len()` images with each task's labels where present.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderSet {
    pub size: usize,
    pub channels: usize,
    /// n·C·size·size, normalised.
    pub images: Vec<f32>,
    pub tasks: Vec<TaskLabels>,
    pub names: Vec<String>,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl FolderSet {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The images at `idx` as `[B, C, size, size]`. Panics on an out-of-range index (a caller bug).
    pub fn image_batch(&self, idx: &[usize]) -> Tensor {
        let sz = self.channels * self.size * self.size;
        let data = idx.iter().flat_map(|&i| self.images[i * sz..(i + 1) * sz].iter().copied()).collect();
        Tensor::new(&[idx.len(), self.channels, self.size, self.size], data).expect("shape agrees by construction")
    }

    /// Task `t`'s labels at `idx` (zeros for images without one).
    pub fn labels(&self, t: usize, idx: &[usize]) -> Vec<u32> {
        let l = &self.tasks[t];
        idx.iter().flat_map(|&i| l.values[i * l.per_image..(i + 1) * l.per_image].iter().map(|&v| v as u32)).collect()
    }

    /// Image `i` as interleaved 8-bit RGB (grey repeated), the normalisation inverted.
    pub fn raw_rgb(&self, i: usize) -> Vec<u8> {
        let (c, px) = (self.channels, self.size * self.size);
        denormalise_rgb(&self.images[i * c * px..(i + 1) * c * px], c, &self.mean, &self.std)
    }
}

/// Loads the split folder `root` (holding `images/` and the manifest's mask folders and CSVs).
pub fn load_folder(root: &Path, manifest: &Manifest, size: usize) -> Result<FolderSet, DataError> {
    check_size(root, size)?;
    let img_dir = root.join("images");
    if !img_dir.is_dir() {
        return Err(fmt_err(&img_dir, "folder not found (the images go in images/)"));
    }
    let images = list_files(&img_dir, IMAGE_EXTS)?;
    if images.is_empty() {
        return Err(fmt_err(&img_dir, "no images (.png/.jpg/.jpeg/.bmp/.tif/.tiff) in this folder"));
    }
    let stems: Vec<String> = images.iter().map(|p| stem(p)).collect();
    let mut seen = HashMap::new();
    for (s, p) in stems.iter().zip(&images) {
        if let Some(other) = seen.insert(s.as_str(), p) {
            return Err(fmt_err(p, format!("two images share the name {s:?} (also {})", other.display())));
        }
    }
    let (mean, std) = manifest.mean_std();
    let c = manifest.channels;
    let px = size * size;
    let mut set = FolderSet {
        size,
        channels: c,
        images: Vec::with_capacity(images.len() * c * px),
        tasks: manifest
            .tasks
            .iter()
            .map(|t| {
                let per_image = if t.kind == Kind::Segment { px } else { 1 };
                TaskLabels { has: vec![false; images.len()], values: vec![0; images.len() * per_image], per_image }
            })
            .collect(),
        names: stems.clone(),
        mean: mean.clone(),
        std: std.clone(),
    };
    // Classification labels first: a bad CSV fails before any image is decoded.
    for (t, def) in manifest.tasks.iter().enumerate() {
        if def.kind == Kind::Classify {
            let csv = root.join(def.labels.as_deref().expect("checked"));
            let rows = read_csv(&csv, def, &seen)?;
            for (i, s) in stems.iter().enumerate() {
                match rows.get(s.as_str()) {
                    Some(&class) => (set.tasks[t].has[i], set.tasks[t].values[i]) = (true, class),
                    None if def.partial => {}
                    None => {
                        let msg = format!(
                            "no row for this image in {} (task {:?}; mark the task \"partial\": true if some images \
                             have no label)",
                            csv.display(),
                            def.name
                        );
                        return Err(fmt_err(&images[i], msg));
                    }
                }
            }
        }
    }
    let mask_index: Vec<Option<HashMap<String, PathBuf>>> = manifest
        .tasks
        .iter()
        .map(|def| match def.kind {
            Kind::Classify => Ok(None),
            Kind::Segment => {
                let dir = root.join(def.masks.as_deref().expect("checked"));
                if !dir.is_dir() {
                    return Err(fmt_err(&dir, format!("mask folder of task {:?} not found", def.name)));
                }
                // The first extension in MASK_EXTS order wins when one stem has several.
                let rank = |p: &Path| MASK_EXTS.iter().position(|e| *e == ext(p));
                let mut index: HashMap<String, PathBuf> = HashMap::new();
                for p in list_files(&dir, MASK_EXTS)? {
                    let keep = index.get(&stem(&p)).is_some_and(|q| rank(q) <= rank(&p));
                    if !keep {
                        index.insert(stem(&p), p);
                    }
                }
                Ok(Some(index))
            }
        })
        .collect::<Result<_, DataError>>()?;
    for (i, path) in images.iter().enumerate() {
        let img = open_image(path)?;
        let dims = (img.width(), img.height());
        let pixels: Vec<u8> = match c {
            1 => image::imageops::resize(&img.to_luma8(), size as u32, size as u32, FilterType::Triangle).into_raw(),
            _ => image::imageops::resize(&img.to_rgb8(), size as u32, size as u32, FilterType::Triangle).into_raw(),
        };
        set.images.extend(normalise_chw(&pixels, c, &mean, &std));
        for (t, def) in manifest.tasks.iter().enumerate() {
            let Some(index) = &mask_index[t] else { continue };
            let Some(mask_path) = index.get(&stems[i]) else {
                if def.partial {
                    continue;
                }
                let dir = root.join(def.masks.as_deref().expect("checked"));
                let msg = format!(
                    "no mask {}.png/.bmp/.tif in {} (task {:?}; mark the task \"partial\": true if some images \
                     have no mask)",
                    stems[i],
                    dir.display(),
                    def.name
                );
                return Err(fmt_err(path, msg));
            };
            let mask = open_image(mask_path)?.to_luma8();
            check_same_size(mask_path, mask.dimensions(), path, dims)?;
            let classes = mask_classes(mask.as_raw(), def).map_err(|msg| fmt_err(mask_path, msg))?;
            let resized = resize_nearest(&classes, dims.0 as usize, dims.1 as usize, size);
            set.tasks[t].has[i] = true;
            set.tasks[t].values[i * px..(i + 1) * px].copy_from_slice(&resized);
        }
    }
    for (t, def) in manifest.tasks.iter().enumerate() {
        if !set.tasks[t].has.iter().any(|&h| h) {
            return Err(fmt_err(root, format!("task {:?} has no labelled image here (empty task)", def.name)));
        }
    }
    Ok(set)
}

/// A mask's grey values as classes (`values[k]` → k; by default the value is the class).
fn mask_classes(grey: &[u8], def: &TaskDef) -> Result<Vec<u8>, String> {
    let mut lut: [Option<u8>; 256] = [None; 256];
    match &def.values {
        Some(v) => v.iter().enumerate().for_each(|(k, &g)| lut[g as usize] = Some(k as u8)),
        None => (0..def.classes.len()).for_each(|k| lut[k] = Some(k as u8)),
    }
    let mut out = Vec::with_capacity(grey.len());
    for &g in grey {
        let Some(k) = lut[g as usize] else {
            let allowed = match &def.values {
                Some(v) => format!("values {v:?}"),
                None => format!("0..{}", def.classes.len() - 1),
            };
            return Err(format!("unknown label: pixel value {g} is not a class of task {:?} ({allowed})", def.name));
        };
        out.push(k);
    }
    Ok(out)
}

/// A task's CSV: image stem → class. `images` maps the split's image stems to their paths.
fn read_csv(path: &Path, def: &TaskDef, images: &HashMap<&str, &PathBuf>) -> Result<HashMap<String, u8>, DataError> {
    if !path.is_file() {
        return Err(fmt_err(path, format!("label file of task {:?} not found", def.name)));
    }
    let class_of = |label: &str| -> Option<u8> {
        let by_index = || label.parse::<usize>().ok().filter(|&k| k < def.classes.len());
        def.classes.iter().position(|c| c == label).or_else(by_index).map(|k| k as u8)
    };
    let mut rows = HashMap::new();
    for row in csv_pairs(path, "file,label")? {
        let (file, label) = (&row.key, &row.value);
        let Some(class) = class_of(label) else {
            if row.first {
                continue;
            }
            let msg = format!(
                "line {}: unknown label {label:?} (task {:?} has classes {} or their indices 0..{})",
                row.line,
                def.name,
                def.classes.join(", "),
                def.classes.len() - 1
            );
            return Err(fmt_err(path, msg));
        };
        let key = stem(Path::new(file));
        if !images.contains_key(key.as_str()) {
            return Err(fmt_err(path, format!("line {}: no image {file:?} in images/", row.line)));
        }
        if rows.insert(key, class).is_some() {
            return Err(fmt_err(path, format!("line {}: image {file:?} is listed twice", row.line)));
        }
    }
    Ok(rows)
}
