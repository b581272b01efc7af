//! REFUGE (Orlando et al., "REFUGE Challenge", MedIA 2020): optic disc / cup segmentation and glaucoma
//! classification on fundus photographs, read from a folder the user already has (the data set is not
//! redistributable).
//!
//! Two layouts are read. The organisers' own (the challenge download unpacked: `Training400/`,
//! `Annotation-Training400/`, `Test400/`, `REFUGE-Test-GT/`; see [`Release`] and
//! [`load_refuge_release`]), and this simpler one under `root`:
//! * `Images/` — fundus photographs (`.jpg`, `.jpeg` or `.png`, any letter case), either directly in
//!   `Images/` or in `Images/Glaucoma/` and `Images/Non-Glaucoma/` (the training-release layout, which
//!   also gives the glaucoma label, 1 and 0);
//! * `Masks/` or `Disc_Cup_Masks/` — one mask per image with the same stem (`.bmp` or `.png`), looked for
//!   first in the subfolder named like the image's (`Masks/Glaucoma/…`), then in the folder itself; grey
//!   values 0 = cup, 128 = disc rim, 255 = background (the REFUGE convention; colour masks are read as
//!   luma). Each grey value is mapped to the nearest of {0, 128, 255} so lossy re-saves still load;
//! * `labels.csv` — needed only for images directly in `Images/`: rows `image,label` (image by file name
//!   or stem, label 0 or 1; an optional header row, blank lines and `#` comments are skipped).
//!
//! Output — the conventions of the synthetic [`FundusSet`](super::fundus::FundusSet), shared with
//! [`super::hrf_av`]: images resized to `size × size` (bilinear, `FilterType::Triangle`, which widens its
//! support when shrinking), normalised per channel as `(byte/255 − MEAN[c]) / STD[c]` with the synthetic
//! set's fixed constants [`fundus::MEAN`] / [`fundus::STD`] (fixed, so train and test folders and the
//! synthetic data all get one transform; they were measured on fundus-like images with black corners, as
//! real photographs have), stored n·3·H·W. Label maps are computed at full resolution and resized by
//! nearest neighbour, `src = floor((dst + 0.5) · in / out)`, stored n·H·W as u8 with the synthetic set's
//! classes. Images come in file-name order: `Glaucoma/`, `Non-Glaucoma/`, then loose ones. Every failure
//! is a [`DataError`] naming the file or folder; nothing panics on bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, RgbImage};

use super::fundus::{self, Mask};
use super::DataError;
use crate::Tensor;

pub use super::fundus::{CUP, DISC_RIM};
/// Background class of the cup/disc map (1 = [`DISC_RIM`], 2 = [`CUP`]).
pub const BACKGROUND: u8 = 0;
/// The largest `size` accepted.
pub const MAX_SIZE: usize = 4096;

pub(crate) const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "tif", "tiff"];
const MASK_EXTS: &[&str] = &["bmp", "png"];
/// Class subfolders of the training release, indexed by glaucoma label.
const CLASS_DIRS: [&str; 2] = ["Non-Glaucoma", "Glaucoma"];

/// A loaded REFUGE folder: `len()` images of `size × size` with a cup/disc map and a glaucoma label each.
#[derive(Clone, Debug, PartialEq)]
pub struct RefugeSet {
    pub size: usize,
    /// n·3·size·size, normalised with [`fundus::MEAN`] / [`fundus::STD`].
    pub images: Vec<f32>,
    /// n·size·size classes: [`BACKGROUND`], [`DISC_RIM`], [`CUP`] (see [`Mask::CupDisc`]).
    pub cup_disc: Vec<u8>,
    /// n labels: 1 = glaucoma, 0 = not.
    pub glaucoma: Vec<u8>,
    /// n vertical cup-to-disc ratios from the full-resolution mask (cup rows / disc rows; 0 if no disc).
    pub vcdr: Vec<f32>,
    /// The image file names (stems), in load order.
    pub names: Vec<String>,
}

impl RefugeSet {
    pub fn len(&self) -> usize {
        self.glaucoma.len()
    }

    pub fn is_empty(&self) -> bool {
        self.glaucoma.is_empty()
    }

    /// The images at `idx` as `[B, 3, size, size]`. Panics on an out-of-range index (a caller bug).
    pub fn image_batch(&self, idx: &[usize]) -> Tensor {
        image_batch(&self.images, idx, self.size)
    }

    /// The `H·W` cup/disc map of image `i`. Panics unless `which` is [`Mask::CupDisc`] (a caller bug).
    pub fn mask(&self, which: Mask, i: usize) -> &[u8] {
        assert_eq!(which, Mask::CupDisc, "REFUGE has only the cup/disc mask");
        &self.cup_disc[i * self.size * self.size..(i + 1) * self.size * self.size]
    }

    /// The cup/disc maps at `idx`, B·H·W classes in (n, h, w) order (as [`RefugeSet::mask`]).
    pub fn mask_batch(&self, which: Mask, idx: &[usize]) -> Vec<u32> {
        idx.iter().flat_map(|&i| self.mask(which, i).iter().map(|&v| v as u32)).collect()
    }

    /// The glaucoma labels at `idx`.
    pub fn glaucoma_batch(&self, idx: &[usize]) -> Vec<u32> {
        idx.iter().map(|&i| self.glaucoma[i] as u32).collect()
    }

    /// Image `i` as 8-bit RGB, interleaved (`H·W·3`), after resizing: the normalisation inverted.
    pub fn raw_rgb(&self, i: usize) -> Vec<u8> {
        raw_rgb(&self.images, i, self.size)
    }
}

/// Loads a REFUGE folder (see the module doc) at `size × size`.
pub fn load_refuge(root: &Path, size: usize) -> Result<RefugeSet, DataError> {
    check_size(root, size)?;
    let img_dir = find_dir(root, &["Images"], "the fundus photographs")?;
    let mask_dir = find_dir(root, &["Masks", "Disc_Cup_Masks"], "the disc/cup masks")?;
    let mut entries = Vec::new(); // (image, label given by its folder)
    for (label, sub) in CLASS_DIRS.iter().enumerate().rev() {
        if img_dir.join(sub).is_dir() {
            let files = list_files(&img_dir.join(sub), IMAGE_EXTS)?;
            entries.extend(files.into_iter().map(|p| (p, Some(label as u8))));
        }
    }
    entries.extend(list_files(&img_dir, IMAGE_EXTS)?.into_iter().map(|p| (p, None)));
    if entries.is_empty() {
        return Err(fmt_err(&img_dir, "no images (.jpg/.jpeg/.png/.tif) here or in Glaucoma/, Non-Glaucoma/"));
    }
    let csv_path = root.join("labels.csv");
    let csv = match entries.iter().any(|e| e.1.is_none()) {
        true => read_labels_csv(&csv_path)?,
        false => HashMap::new(),
    };
    // Mask indices (stem → file) of Masks/ and its class subfolders; `.bmp` wins over `.png`.
    let index = |dir: PathBuf| -> Result<HashMap<String, PathBuf>, DataError> {
        Ok(if dir.is_dir() { index_dir(&dir, MASK_EXTS)?.into_iter().rev().collect() } else { HashMap::new() })
    };
    let flat = index(mask_dir.clone())?;
    let by_class = [index(mask_dir.join(CLASS_DIRS[0]))?, index(mask_dir.join(CLASS_DIRS[1]))?];
    let n = entries.len();
    let mut set = RefugeSet {
        size,
        images: Vec::with_capacity(n * 3 * size * size),
        cup_disc: Vec::with_capacity(n * size * size),
        glaucoma: Vec::with_capacity(n),
        vcdr: Vec::with_capacity(n),
        names: Vec::with_capacity(n),
    };
    let mut items = Vec::with_capacity(n);
    for (path, folder_label) in entries {
        let name = stem(&path);
        let label = match folder_label.or_else(|| csv.get(&name).copied()) {
            Some(l) => l,
            None => return Err(fmt_err(&csv_path, format!("no label row for image {}", path.display()))),
        };
        let in_class = folder_label.and_then(|l| by_class[l as usize].get(&name));
        let Some(mask_path) = in_class.or_else(|| flat.get(&name)) else {
            let msg = format!("no mask {name}.bmp or {name}.png for this image in {}", mask_dir.display());
            return Err(fmt_err(&path, msg));
        };
        items.push((path, label, mask_path.clone()));
    }
    assemble(&mut set, items)?;
    Ok(set)
}

/// Decodes each (image, glaucoma label, cup/disc mask) into `set`.
fn assemble(set: &mut RefugeSet, items: Vec<(PathBuf, u8, PathBuf)>) -> Result<(), DataError> {
    for (path, label, mask_path) in items {
        let img = open_image(&path)?.to_rgb8();
        let mask = open_image(&mask_path)?.to_luma8();
        check_same_size(&mask_path, mask.dimensions(), &path, img.dimensions())?;
        let classes: Vec<u8> = mask.as_raw().iter().map(|&v| grey_class(v)).collect();
        set.images.extend(normalise(&img, set.size));
        set.cup_disc.extend(resize_nearest(&classes, img.width() as usize, img.height() as usize, set.size));
        set.vcdr.push(vertical_cdr(&classes, img.width() as usize));
        set.glaucoma.push(label);
        set.names.push(stem(&path));
    }
    Ok(())
}

/// The releases of the REFUGE challenge folder as its organisers distribute it (the root holding
/// `Training400/`, `Annotation-Training400/`, `Test400/`, `REFUGE-Test-GT/`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// `Training400/{Glaucoma,Non-Glaucoma}/*.jpg`, masks in
    /// `Annotation-Training400/Disc_Cup_Masks/{Glaucoma,Non-Glaucoma}/*.bmp`; the label is the folder.
    Training,
    /// `Test400/*.jpg`, masks in `REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/*.bmp`; the label is the mask's
    /// folder (G = glaucoma).
    Test,
}

impl Release {
    /// Whether `root` looks like the organisers' layout (it holds `Training400/`).
    pub fn present(root: &Path) -> bool {
        root.join("Training400").is_dir()
    }
}

/// Loads one release of the organisers' REFUGE layout under `root` (see [`Release`]). The validation
/// release (`REFUGE-Validation400`) is not read: its glaucoma labels ship only as a spreadsheet.
pub fn load_refuge_release(root: &Path, release: Release, size: usize) -> Result<RefugeSet, DataError> {
    check_size(root, size)?;
    let mut items = Vec::new();
    match release {
        Release::Training => {
            let img_dir = find_dir(root, &["Training400"], "the training photographs")?;
            let mask_root = root.join("Annotation-Training400").join("Disc_Cup_Masks");
            for (label, sub) in CLASS_DIRS.iter().enumerate().rev() {
                let dir = img_dir.join(sub);
                if !dir.is_dir() {
                    return Err(fmt_err(&dir, "folder not found (Training400 has Glaucoma/ and Non-Glaucoma/)"));
                }
                let masks: HashMap<String, PathBuf> = index_dir_or_err(&mask_root.join(sub))?;
                for path in list_files(&dir, IMAGE_EXTS)? {
                    let mask = release_mask(&masks, &path, &mask_root.join(sub))?;
                    items.push((path, label as u8, mask));
                }
            }
        }
        Release::Test => {
            let img_dir = find_dir(root, &["Test400"], "the test photographs")?;
            let mask_root = root.join("REFUGE-Test-GT").join("Disc_Cup_Masks");
            let by_label = [index_dir_or_err(&mask_root.join("N"))?, index_dir_or_err(&mask_root.join("G"))?];
            for path in list_files(&img_dir, IMAGE_EXTS)? {
                let name = stem(&path);
                let found: Vec<usize> = (0..2).filter(|&l| by_label[l].contains_key(&name)).collect();
                let label = match found[..] {
                    [l] => l,
                    [] => {
                        let msg = format!("no mask {name}.bmp in {}/G or /N", mask_root.display());
                        return Err(fmt_err(&path, msg));
                    }
                    _ => {
                        return Err(fmt_err(&path, format!("mask {name} is in both {}/G and /N", mask_root.display())))
                    }
                };
                items.push((path, label as u8, by_label[label][&name].clone()));
            }
        }
    }
    if items.is_empty() {
        return Err(fmt_err(root, format!("no images in the {release:?} release")));
    }
    let mut set = RefugeSet { size, images: vec![], cup_disc: vec![], glaucoma: vec![], vcdr: vec![], names: vec![] };
    assemble(&mut set, items)?;
    Ok(set)
}

/// Stem → mask file of a folder that must exist.
fn index_dir_or_err(dir: &Path) -> Result<HashMap<String, PathBuf>, DataError> {
    if !dir.is_dir() {
        return Err(fmt_err(dir, "mask folder not found"));
    }
    Ok(index_dir(dir, MASK_EXTS)?.into_iter().rev().collect())
}

fn release_mask(masks: &HashMap<String, PathBuf>, image: &Path, dir: &Path) -> Result<PathBuf, DataError> {
    let name = stem(image);
    masks.get(&name).cloned().ok_or_else(|| fmt_err(image, format!("no mask {name}.bmp in {}", dir.display())))
}

/// The class of a REFUGE mask grey value: nearest of 0 (cup), 128 (rim), 255 (background).
pub fn grey_class(v: u8) -> u8 {
    match v {
        0..=63 => CUP,
        64..=191 => DISC_RIM,
        _ => BACKGROUND,
    }
}

/// Vertical cup-to-disc ratio of a `w`-wide class map: rows spanned by the cup / rows spanned by the disc.
pub fn vertical_cdr(classes: &[u8], w: usize) -> f32 {
    let span = |inside: fn(u8) -> bool| {
        let rows: Vec<bool> = classes.chunks(w).map(|r| r.iter().any(|&c| inside(c))).collect();
        match (rows.iter().position(|&b| b), rows.iter().rposition(|&b| b)) {
            (Some(a), Some(b)) => (b - a + 1) as f32,
            _ => 0.0,
        }
    };
    let disc = span(|c| c != BACKGROUND);
    if disc == 0.0 {
        0.0
    } else {
        span(|c| c == CUP) / disc
    }
}

/// Reads `labels.csv`: image stem → label.
fn read_labels_csv(path: &Path) -> Result<HashMap<String, u8>, DataError> {
    if !path.is_file() {
        let msg = "label file not found; images directly in Images/ need labels.csv with rows \
                   `image,label` (or put them in Images/Glaucoma and Images/Non-Glaucoma)";
        return Err(fmt_err(path, msg));
    }
    let mut labels = HashMap::new();
    for row in csv_pairs(path, "image,label")? {
        let label = match row.value.as_str() {
            "0" => 0,
            "1" => 1,
            _ if row.first => continue,
            v => return Err(fmt_err(path, format!("line {}: label {v:?} is not 0 or 1", row.line))),
        };
        let key = stem(Path::new(&row.key));
        if labels.insert(key, label).is_some() {
            return Err(fmt_err(path, format!("line {}: image {:?} is listed twice", row.line, row.key)));
        }
    }
    Ok(labels)
}

/// One `key,value` row of a two-column CSV: its 1-based line, whether it is the first row (a header
/// may stand there), and its two trimmed, unquoted fields.
pub(crate) struct CsvPair {
    pub line: usize,
    pub first: bool,
    pub key: String,
    pub value: String,
}

/// The rows of a two-column CSV (UTF-8; blank lines and `#` comments skipped); a row without exactly
/// two fields is an error quoting the `expected` form.
pub(crate) fn csv_pairs(path: &Path, expected: &str) -> Result<Vec<CsvPair>, DataError> {
    let text = std::fs::read(path).map_err(|err| DataError::Io { path: path.to_path_buf(), err })?;
    let text = String::from_utf8(text).map_err(|_| fmt_err(path, "not UTF-8 text"))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(|f| f.trim().trim_matches('"').trim()).collect();
        let [key, value] = fields[..] else {
            return Err(fmt_err(path, format!("line {}: expected `{expected}`, got {line:?}", i + 1)));
        };
        rows.push(CsvPair { line: i + 1, first: rows.is_empty(), key: key.into(), value: value.into() });
    }
    Ok(rows)
}

// ---- helpers shared with hrf_av -------------------------------------------------------------------

/// A one-line format error about `path`.
pub(crate) fn fmt_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Format { path: path.to_path_buf(), msg: msg.into().replace('\n', " ") }
}

pub(crate) fn check_size(root: &Path, size: usize) -> Result<(), DataError> {
    match size {
        1..=MAX_SIZE => Ok(()),
        _ => Err(fmt_err(root, format!("output size {size} must be in 1..={MAX_SIZE}"))),
    }
}

/// The first of `root/names[i]` that is a folder, else an error naming the first.
pub(crate) fn find_dir(root: &Path, names: &[&str], what: &str) -> Result<PathBuf, DataError> {
    if !root.is_dir() {
        return Err(fmt_err(root, "data set folder not found"));
    }
    if let Some(d) = names.iter().map(|n| root.join(n)).find(|d| d.is_dir()) {
        return Ok(d);
    }
    Err(fmt_err(&root.join(names[0]), format!("folder not found (looked for {} holding {what})", names.join(" or "))))
}

/// Lower-case extension of `path` ("" if none).
pub(crate) fn ext(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default()
}

/// File name without its extension.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The files directly in `dir` whose extension is one of `exts` (any case), sorted by name.
pub(crate) fn list_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, DataError> {
    let io = |err| DataError::Io { path: dir.to_path_buf(), err };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && exts.contains(&ext(&path).as_str()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// [`list_files`] as (stem, path) pairs.
pub(crate) fn index_dir(dir: &Path, exts: &[&str]) -> Result<Vec<(String, PathBuf)>, DataError> {
    Ok(list_files(dir, exts)?.into_iter().map(|p| (stem(&p), p)).collect())
}

/// Decodes an image, recognising the format by its content (then by its extension).
pub(crate) fn open_image(path: &Path) -> Result<DynamicImage, DataError> {
    let io = |err| DataError::Io { path: path.to_path_buf(), err };
    let reader = ImageReader::open(path).map_err(io)?.with_guessed_format().map_err(io)?;
    checked_decode(path, reader)
}

/// Decodes an image (or mask) held in memory as the folder loaders decode files (fuzzing entry point).
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, DataError> {
    let path = Path::new("<bytes>");
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format();
    checked_decode(path, reader.map_err(|err| DataError::Io { path: path.to_path_buf(), err })?)
}

fn checked_decode<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: ImageReader<R>,
) -> Result<DynamicImage, DataError> {
    let img = reader.decode().map_err(|e| fmt_err(path, format!("cannot decode image: {e}")))?;
    match img.width() == 0 || img.height() == 0 {
        true => Err(fmt_err(path, "image has zero width or height")),
        false => Ok(img),
    }
}

/// Errors unless the label image at `label` has the same width × height as the image at `image`.
pub(crate) fn check_same_size(label: &Path, ld: (u32, u32), image: &Path, id: (u32, u32)) -> Result<(), DataError> {
    if ld == id {
        return Ok(());
    }
    let msg = format!("size {}x{} differs from its image {} ({}x{})", ld.0, ld.1, image.display(), id.0, id.1);
    Err(fmt_err(label, msg))
}

/// Bilinear resize to `size × size`, then `(v/255 − MEAN[c]) / STD[c]`, as 3·size·size (CHW).
pub(crate) fn normalise(img: &RgbImage, size: usize) -> Vec<f32> {
    let resized = image::imageops::resize(img, size as u32, size as u32, FilterType::Triangle);
    normalise_chw(resized.as_raw(), 3, &fundus::MEAN, &fundus::STD)
}

/// Interleaved 8-bit pixels of `c` channels as channel-major floats `(byte/255 − mean[ch]) / std[ch]`:
/// the one normalisation of every image loader and of `preprocess::Inputs`.
pub(crate) fn normalise_chw(pixels: &[u8], c: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let px = pixels.len() / c;
    let mut out = vec![0.0f32; c * px];
    for p in 0..px {
        for ch in 0..c {
            out[ch * px + p] = (pixels[p * c + ch] as f32 / 255.0 - mean[ch]) / std[ch];
        }
    }
    out
}

/// [`normalise_chw`] undone for display: `c × px` floats as interleaved 8-bit RGB (grey repeated).
pub(crate) fn denormalise_rgb(chw: &[f32], c: usize, mean: &[f32], std: &[f32]) -> Vec<u8> {
    let px = chw.len() / c;
    let byte = |p: usize, ch: usize| {
        let ch = ch.min(c - 1);
        ((chw[ch * px + p] * std[ch] + mean[ch]) * 255.0).round().clamp(0.0, 255.0) as u8
    };
    (0..3 * px).map(|k| byte(k / 3, k % 3)).collect()
}

/// Nearest-neighbour resize of a `w × h` label map to `size × size`: `src = floor((dst + 0.5) · in / out)`.
pub(crate) fn resize_nearest(src: &[u8], w: usize, h: usize, size: usize) -> Vec<u8> {
    let xs: Vec<usize> = (0..size).map(|x| (2 * x + 1) * w / (2 * size)).collect();
    let mut out = Vec::with_capacity(size * size);
    for y in 0..size {
        let row = &src[(2 * y + 1) * h / (2 * size) * w..];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// Stacks images `idx` of a n·3·size·size buffer into `[B, 3, size, size]`.
pub(crate) fn image_batch(images: &[f32], idx: &[usize], size: usize) -> Tensor {
    let sz = 3 * size * size;
    let data = idx.iter().flat_map(|&i| images[i * sz..(i + 1) * sz].iter().copied()).collect();
    Tensor::new(&[idx.len(), 3, size, size], data).expect("batch shape agrees by construction")
}

/// Image `i` of a n·3·size·size normalised buffer as interleaved 8-bit RGB (`size·size·3`).
pub(crate) fn raw_rgb(images: &[f32], i: usize, size: usize) -> Vec<u8> {
    let px = size * size;
    denormalise_rgb(&images[i * 3 * px..(i + 1) * 3 * px], 3, &fundus::MEAN, &fundus::STD)
}
