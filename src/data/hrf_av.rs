//! HRF-AV: artery/vein annotations of the High-Resolution Fundus images (Budai et al. 2013), read from a
//! folder the user already has (not redistributable).
//!
//! Layout under `root`:
//! * `images/` — fundus photographs (`.jpg`, `.jpeg`, `.png`, any letter case, e.g. `01_dr.JPG`);
//! * `ann/`, `av/` or `HRF_AV_GT/` — one RGB A/V label image per photograph (`.png`, `.bmp`, `.jpg`,
//!   `.tif`), named by the photograph's stem, exactly or followed by `_suffix` (`01_dr_AVmanual.png`);
//!   an exact name wins, and two suffixed candidates for one image are an error;
//! * `masks/` or `mask/` — optional field-of-view masks, named the same way (`01_dr_mask.tif`); when the
//!   folder exists every image needs one.
//!
//! So the data as distributed loads as it is: HRF's `all.zip` unpacked (`images/`, `mask/` with its TIFF
//! masks; its `manual1/` vessel tracings are not read: the vessel map is the A/V label's union) with the
//! HRF-AV labels' `HRF_AV_GT/` folder (Hemelings et al. 2019) copied beside them.
//!
//! Colours (JPEG-tolerant): a channel is *on* at ≥ 128 and *off* below 100. Only red on → artery; only
//! blue on → vein; only green on → crossing, counted as a vessel and labelled **artery** (one class per
//! pixel; the synthetic set likewise draws arteries on top where they cross); nothing on → background;
//! anything else (white, yellow, grey, half-on edges) → vessel of unknown type: vessel label 1, A/V
//! label 0 (background), since the A/V map has no ignore class. FOV masks: grey ≥ 128 → 1 (inside).
//!
//! Output follows [`super::refuge`] and the synthetic [`FundusSet`](super::fundus::FundusSet): images
//! resized bilinearly to `size × size` and normalised with [`fundus::MEAN`](super::fundus::MEAN) /
//! [`STD`](super::fundus::STD), n·3·H·W; label maps computed at full resolution and resized by nearest
//! neighbour (thin vessels can break up when shrinking a lot), n·H·W. Images come in file-name order.
//! Every failure is a [`DataError`] naming the file or folder; nothing panics on bad input.

use std::path::{Path, PathBuf};

use super::fundus::Mask;
use super::refuge::{
    check_same_size, check_size, find_dir, fmt_err, image_batch, index_dir, list_files, normalise, open_image, raw_rgb,
    resize_nearest, stem, IMAGE_EXTS,
};
use super::DataError;
use crate::Tensor;

pub use super::fundus::{ARTERY, VEIN};
/// Background class of the artery/vein map (1 = [`ARTERY`], 2 = [`VEIN`]).
pub const AV_BACKGROUND: u8 = 0;

const LABEL_EXTS: &[&str] = &["png", "bmp", "jpg", "jpeg", "tif", "tiff"];

/// A loaded HRF-AV folder: `len()` images of `size × size` with artery/vein, vessel and FOV maps.
#[derive(Clone, Debug, PartialEq)]
pub struct HrfAvSet {
    pub size: usize,
    /// n·3·size·size, normalised with the synthetic set's constants.
    pub images: Vec<f32>,
    /// n·size·size: [`AV_BACKGROUND`], [`ARTERY`], [`VEIN`] (see [`Mask::ArteryVein`]).
    pub artery_vein: Vec<u8>,
    /// n·size·size: 1 = vessel (artery, vein, crossing or unknown type), 0 = not.
    pub vessel: Vec<u8>,
    /// n·size·size: 1 = inside the field of view; all 1 when there is no `masks/` folder.
    pub fov: Vec<u8>,
    /// Whether `fov` came from mask files.
    pub has_fov: bool,
    /// The image file names (stems), in load order.
    pub names: Vec<String>,
}

impl HrfAvSet {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The images at `idx` as `[B, 3, size, size]`. Panics on an out-of-range index (a caller bug).
    pub fn image_batch(&self, idx: &[usize]) -> Tensor {
        image_batch(&self.images, idx, self.size)
    }

    /// The `H·W` map of image `i`: [`Mask::ArteryVein`] or [`Mask::Vessel`] (else panics: a caller bug).
    pub fn mask(&self, which: Mask, i: usize) -> &[u8] {
        let all = match which {
            Mask::ArteryVein => &self.artery_vein,
            Mask::Vessel => &self.vessel,
            Mask::CupDisc => panic!("HRF-AV has no cup/disc mask"),
        };
        &all[i * self.size * self.size..(i + 1) * self.size * self.size]
    }

    /// The maps at `idx`, B·H·W in (n, h, w) order (as [`HrfAvSet::mask`]).
    pub fn mask_batch(&self, which: Mask, idx: &[usize]) -> Vec<u32> {
        idx.iter().flat_map(|&i| self.mask(which, i).iter().map(|&v| v as u32)).collect()
    }

    /// The field-of-view maps at `idx`, B·H·W in (n, h, w) order.
    pub fn fov_batch(&self, idx: &[usize]) -> Vec<u32> {
        let px = self.size * self.size;
        idx.iter().flat_map(|&i| self.fov[i * px..(i + 1) * px].iter().map(|&v| v as u32)).collect()
    }

    /// Image `i` as 8-bit RGB, interleaved (`H·W·3`), after resizing: the normalisation inverted.
    pub fn raw_rgb(&self, i: usize) -> Vec<u8> {
        raw_rgb(&self.images, i, self.size)
    }
}

/// (A/V class, vessel) of one annotation pixel (see the module doc).
pub fn av_class(rgb: [u8; 3]) -> (u8, u8) {
    let on = rgb.map(|c| c >= 128);
    let off = rgb.map(|c| c < 100);
    match (on, off) {
        ([false, false, false], _) => (AV_BACKGROUND, 0),
        ([true, _, _], [_, true, true]) => (ARTERY, 1),
        ([_, true, _], [true, _, true]) => (ARTERY, 1), // crossing
        ([_, _, true], [true, true, _]) => (VEIN, 1),
        _ => (AV_BACKGROUND, 1),
    }
}

/// Loads an HRF-AV folder (see the module doc) at `size × size`.
pub fn load_hrf_av(root: &Path, size: usize) -> Result<HrfAvSet, DataError> {
    check_size(root, size)?;
    let img_dir = find_dir(root, &["images"], "the fundus photographs")?;
    let ann_dir = find_dir(root, &["ann", "av", "HRF_AV_GT"], "the artery/vein annotations")?;
    let mask_dir = ["masks", "mask"].iter().map(|m| root.join(m)).find(|d| d.is_dir());
    let images = list_files(&img_dir, IMAGE_EXTS)?;
    if images.is_empty() {
        return Err(fmt_err(&img_dir, "no images (.jpg/.jpeg/.png/.tif) in this folder"));
    }
    let anns = index_dir(&ann_dir, LABEL_EXTS)?;
    let masks = match &mask_dir {
        Some(d) => index_dir(d, LABEL_EXTS)?,
        None => vec![],
    };
    let px = size * size;
    let mut set = HrfAvSet {
        size,
        images: Vec::with_capacity(images.len() * 3 * px),
        artery_vein: Vec::with_capacity(images.len() * px),
        vessel: Vec::with_capacity(images.len() * px),
        fov: Vec::with_capacity(images.len() * px),
        has_fov: mask_dir.is_some(),
        names: Vec::with_capacity(images.len()),
    };
    for path in images {
        let name = stem(&path);
        let ann_path = find_match(&anns, &name, &path, &ann_dir, "A/V annotation")?;
        let img = open_image(&path)?.to_rgb8();
        let (w, h) = (img.width() as usize, img.height() as usize);
        let ann = open_image(&ann_path)?.to_rgb8();
        check_same_size(&ann_path, ann.dimensions(), &path, img.dimensions())?;
        let (av, vessel): (Vec<u8>, Vec<u8>) = ann.pixels().map(|p| av_class(p.0)).unzip();
        set.artery_vein.extend(resize_nearest(&av, w, h, size));
        set.vessel.extend(resize_nearest(&vessel, w, h, size));
        match &mask_dir {
            Some(dir) => {
                let mask_path = find_match(&masks, &name, &path, dir, "field-of-view mask")?;
                let mask = open_image(&mask_path)?.to_luma8();
                check_same_size(&mask_path, mask.dimensions(), &path, img.dimensions())?;
                let inside: Vec<u8> = mask.as_raw().iter().map(|&v| (v >= 128) as u8).collect();
                set.fov.extend(resize_nearest(&inside, w, h, size));
            }
            None => set.fov.extend(std::iter::repeat_n(1u8, px)),
        }
        set.images.extend(normalise(&img, size));
        set.names.push(name);
    }
    Ok(set)
}

/// The file in `index` (of folder `dir`) that belongs to the image `name` (at `image`): an exact stem
/// match, else the single `name_…` one. TIFF candidates are reported as unsupported.
fn find_match(
    index: &[(String, PathBuf)],
    name: &str,
    image: &Path,
    dir: &Path,
    what: &str,
) -> Result<PathBuf, DataError> {
    let prefix = format!("{name}_");
    let exact: Vec<&PathBuf> = index.iter().filter(|(s, _)| s == name).map(|(_, p)| p).collect();
    let found = match exact.is_empty() {
        false => exact,
        true => index.iter().filter(|(s, _)| s.starts_with(&prefix)).map(|(_, p)| p).collect(),
    };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let msg = format!("no {what} named {name}.png or {name}_*.png (or .bmp/.jpg/.tif) in {}", dir.display());
            Err(fmt_err(image, msg))
        }
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            Err(fmt_err(image, format!("ambiguous {what}: {} all match", names.join(", "))))
        }
    }
}
