//! HRF-AV folder loader: fixture A/V images with red/blue/green/white strokes, colour → class mapping at
//! every resized pixel, suffix matching, FOV masks, JPEG tolerance, and bad inputs naming the culprit.

use std::fs;
use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};
use mtcool::data::fundus::Mask;
use mtcool::data::hrf_av::{av_class, load_hrf_av, ARTERY, AV_BACKGROUND, VEIN};
use tempfile::TempDir;

const W: u32 = 48;
const H: u32 = 36;

/// Fixture annotation colour at (x, y): red and blue horizontal strokes, a green (crossing) and a white
/// (unknown) vertical stroke drawn over them, black elsewhere.
fn colour_at(x: u32, y: u32) -> [u8; 3] {
    if (30..35).contains(&x) {
        [255, 255, 255]
    } else if (20..25).contains(&x) {
        [0, 255, 0]
    } else if (5..10).contains(&y) {
        [255, 0, 0]
    } else if (20..25).contains(&y) {
        [0, 0, 255]
    } else {
        [0, 0, 0]
    }
}

fn annotation() -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| Rgb(colour_at(x, y)))
}

fn fov_at(x: u32, y: u32) -> bool {
    let (dx, dy) = (x as f32 - 24.0, y as f32 - 18.0);
    dx * dx + dy * dy <= 17.0 * 17.0
}

fn photo(k: u32) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| Rgb([(x * 5) as u8, (y * 7) as u8, (60 * k + 30) as u8]))
}

/// images/01_dr.JPG + ann/01_dr_AVmanual.png, images/02_g.png + ann/02_g.png, masks/<stem>_mask.png.
fn write_set(root: &Path, with_masks: bool) {
    for d in ["images", "ann", "masks"] {
        if d != "masks" || with_masks {
            fs::create_dir_all(root.join(d)).unwrap();
        }
    }
    photo(0).save(root.join("images/01_dr.JPG")).unwrap();
    photo(1).save(root.join("images/02_g.png")).unwrap();
    annotation().save(root.join("ann/01_dr_AVmanual.png")).unwrap();
    annotation().save(root.join("ann/02_g.png")).unwrap();
    if with_masks {
        let mask = GrayImage::from_fn(W, H, |x, y| Luma([if fov_at(x, y) { 255 } else { 0 }]));
        for stem in ["01_dr", "02_g"] {
            mask.save(root.join(format!("masks/{stem}_mask.png"))).unwrap();
        }
    }
}

fn src(dst: usize, n_in: u32, size: usize) -> u32 {
    ((2 * dst + 1) * n_in as usize / (2 * size)) as u32
}

#[test]
fn colours_map_to_classes() {
    assert_eq!(av_class([255, 0, 0]), (ARTERY, 1));
    assert_eq!(av_class([0, 0, 255]), (VEIN, 1));
    assert_eq!(av_class([0, 255, 0]), (ARTERY, 1), "crossing counts as artery");
    assert_eq!(av_class([255, 255, 255]), (AV_BACKGROUND, 1), "white = vessel of unknown type");
    assert_eq!(av_class([0, 0, 0]), (AV_BACKGROUND, 0));
    assert_eq!(av_class([231, 22, 9]), (ARTERY, 1), "JPEG-noisy red");
    assert_eq!(av_class([14, 30, 210]), (VEIN, 1), "JPEG-noisy blue");
    assert_eq!(av_class([60, 40, 70]), (AV_BACKGROUND, 0), "dark noise");
}

#[test]
fn loads_with_suffix_matching_and_fov_masks() {
    let dir = TempDir::new().unwrap();
    write_set(dir.path(), true);
    for size in [12, 24, 48] {
        let set = load_hrf_av(dir.path(), size).unwrap();
        let px = size * size;
        assert_eq!(set.len(), 2);
        assert_eq!(set.names, ["01_dr", "02_g"]);
        assert!(set.has_fov);
        assert_eq!(set.images.len(), 2 * 3 * px);
        assert!(set.images.iter().all(|v| v.is_finite()));
        for k in 0..2 {
            for y in 0..size {
                for x in 0..size {
                    let (sx, sy) = (src(x, W, size), src(y, H, size));
                    let (av, vessel) = av_class(colour_at(sx, sy));
                    let i = k * px + y * size + x;
                    assert_eq!((set.artery_vein[i], set.vessel[i]), (av, vessel), "image {k} pixel ({x},{y})");
                    assert_eq!(set.fov[i], fov_at(sx, sy) as u8);
                }
            }
        }
        for class in [AV_BACKGROUND, ARTERY, VEIN] {
            assert!(set.artery_vein[..px].contains(&class));
        }
        let x = set.image_batch(&[1]);
        assert_eq!(x.shape(), &[1, 3, size, size]);
        assert_eq!(x.data(), &set.images[3 * px..]);
        let av = set.mask_batch(Mask::ArteryVein, &[1, 0]);
        assert_eq!(av.len(), 2 * px);
        assert!(av[..px].iter().zip(&set.artery_vein[px..]).all(|(&a, &b)| a == b as u32));
        assert!(av[px..].iter().zip(set.mask(Mask::ArteryVein, 0)).all(|(&a, &b)| a == b as u32));
        let vessel = set.mask_batch(Mask::Vessel, &[0]);
        assert!(vessel.iter().zip(&set.vessel[..px]).all(|(&a, &b)| a == b as u32));
        assert_eq!(set.raw_rgb(1).len(), 3 * px);
        assert_eq!(set.fov_batch(&[0, 1]).len(), 2 * px);
    }
}

/// HRF's all.zip (images/, mask/ with TIFF masks) with HRF-AV's HRF_AV_GT/ beside it, as distributed.
#[test]
fn distributed_layout_with_tiff_masks_loads() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    for d in ["images", "mask", "HRF_AV_GT"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let fov = GrayImage::from_fn(W, H, |x, y| Luma([if fov_at(x, y) { 255 } else { 0 }]));
    for (k, stem) in ["01_dr", "02_g"].iter().enumerate() {
        photo(k as u32).save(root.join(format!("images/{stem}.JPG"))).unwrap();
        annotation().save(root.join(format!("HRF_AV_GT/{stem}_AVmanual.png"))).unwrap();
        fov.save_with_format(root.join(format!("mask/{stem}_mask.tif")), image::ImageFormat::Tiff).unwrap();
    }
    let set = load_hrf_av(root, 24).unwrap();
    assert_eq!(set.names, ["01_dr", "02_g"]);
    assert!(set.has_fov);
    for y in 0..24 {
        for x in 0..24 {
            let (sx, sy) = (src(x, W, 24), src(y, H, 24));
            assert_eq!(set.fov[y * 24 + x], fov_at(sx, sy) as u8, "TIFF mask pixel ({x},{y})");
            assert_eq!(set.artery_vein[y * 24 + x], av_class(colour_at(sx, sy)).0);
        }
    }
}

#[test]
fn without_masks_fov_is_everything_and_av_folder_with_jpeg_works() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write_set(root, false);
    fs::rename(root.join("ann"), root.join("av")).unwrap();
    // A lossy annotation: class must still be right in the middle of every stroke.
    fs::remove_file(root.join("av/02_g.png")).unwrap();
    annotation().save(root.join("av/02_g_AV.jpg")).unwrap();
    let set = load_hrf_av(root, W as usize).unwrap_or_else(|e| panic!("{e}"));
    assert!(!set.has_fov);
    assert!(set.fov.iter().all(|&v| v == 1));
    // Output size W: columns map 1:1, rows come from src(row, H, W).
    let s = W as usize;
    let second = &set.artery_vein[s * s..];
    let second_vessel = &set.vessel[s * s..];
    let at = |x: usize, y: u32| {
        let row = (0..s).find(|&d| src(d, H, s) == y).unwrap();
        (second[row * s + x], second_vessel[row * s + x])
    };
    assert_eq!(at(10, 7), (ARTERY, 1));
    assert_eq!(at(10, 22), (VEIN, 1));
    assert_eq!(at(22, 14), (ARTERY, 1));
    assert_eq!(at(32, 14), (AV_BACKGROUND, 1));
    assert_eq!(at(10, 14), (AV_BACKGROUND, 0));
    let agree = (0..s * s)
        .filter(|&i| (second[i], second_vessel[i]) == av_class(colour_at((i % s) as u32, src(i / s, H, s))))
        .count();
    assert!(agree as f64 >= 0.9 * (W * W) as f64, "only {agree} pixels agree");
}

fn expect_err(root: &Path, needles: &[&str]) {
    let msg = match load_hrf_av(root, 16) {
        Ok(_) => panic!("expected an error mentioning {needles:?}"),
        Err(e) => e.to_string(),
    };
    eprintln!("{msg}");
    assert!(!msg.contains('\n'), "multi-line message: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_culprit() {
    // 1. images/ missing
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("ann")).unwrap();
    expect_err(root, &["images", "folder not found"]);
    // 2. ann/ (or av/) missing
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("images")).unwrap();
    expect_err(root, &["ann", "av", "folder not found"]);
    // 3. no images
    fs::create_dir_all(root.join("ann")).unwrap();
    expect_err(root, &["images", "no images"]);
    // 4. image without annotation
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write_set(root, true);
    fs::remove_file(root.join("ann/02_g.png")).unwrap();
    expect_err(root, &["02_g.png", "no A/V annotation"]);
    // 5. two suffixed annotations for one image
    annotation().save(root.join("ann/02_g_a.png")).unwrap();
    annotation().save(root.join("ann/02_g_b.png")).unwrap();
    expect_err(root, &["02_g.png", "ambiguous", "02_g_a.png", "02_g_b.png"]);
    fs::remove_file(root.join("ann/02_g_b.png")).unwrap();
    load_hrf_av(root, 16).unwrap();
    // 6. annotation of the wrong size
    RgbImage::new(W + 2, H).save(root.join("ann/02_g_a.png")).unwrap();
    expect_err(root, &["02_g_a.png", "50x36", "48x36"]);
    // 7. corrupt annotation
    fs::write(root.join("ann/02_g_a.png"), b"not a png").unwrap();
    expect_err(root, &["02_g_a.png", "cannot decode"]);
    annotation().save(root.join("ann/02_g_a.png")).unwrap();
    // 8. corrupt image
    fs::write(root.join("images/01_dr.JPG"), b"\xff\xd8\xff\xe0 broken").unwrap();
    expect_err(root, &["01_dr.JPG", "cannot decode"]);
    photo(0).save_with_format(root.join("images/01_dr.JPG"), image::ImageFormat::Jpeg).unwrap();
    load_hrf_av(root, 16).unwrap();
    // 9. masks/ present but one mask missing
    fs::remove_file(root.join("masks/01_dr_mask.png")).unwrap();
    expect_err(root, &["01_dr.JPG", "no field-of-view mask", "masks"]);
    // 10. a damaged TIFF mask (HRF ships its masks as TIFF)
    fs::write(root.join("masks/01_dr_mask.tif"), b"II*\0").unwrap();
    expect_err(root, &["01_dr_mask.tif", "cannot decode"]);
    // 11. mask of the wrong size
    fs::remove_file(root.join("masks/01_dr_mask.tif")).unwrap();
    GrayImage::new(W, H - 1).save(root.join("masks/01_dr_mask.png")).unwrap();
    expect_err(root, &["01_dr_mask.png", "48x35"]);
    // 12. output size out of range
    GrayImage::new(W, H).save(root.join("masks/01_dr_mask.png")).unwrap();
    load_hrf_av(root, 16).unwrap();
    let msg = load_hrf_av(root, 100_000).unwrap_err().to_string();
    assert!(msg.contains("size 100000"), "{msg}");
}
