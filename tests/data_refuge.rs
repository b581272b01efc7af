//! REFUGE folder loader: tiny fixture folders written with the `image` crate, both label layouts, class
//! mapping at every resized pixel, normalisation, and bad inputs that must fail naming the culprit.

use std::fs;
use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};
use mtcool::data::fundus::{Mask, MEAN, STD};
use mtcool::data::refuge::{grey_class, load_refuge, load_refuge_release, Release, BACKGROUND, CUP, DISC_RIM};
use tempfile::TempDir;

const W: u32 = 40;
const H: u32 = 30;

/// REFUGE grey value of fixture mask `k` at (x, y): cup ellipse inside a disc ellipse.
fn grey_at(k: usize, x: u32, y: u32) -> u8 {
    let (dx, dy) = (x as f32 + 0.5 - (15.0 + 5.0 * k as f32), y as f32 + 0.5 - 14.0);
    let inside = |rx: f32, ry: f32| (dx / rx).powi(2) + (dy / ry).powi(2) <= 1.0;
    if inside(5.0, 4.0) {
        0
    } else if inside(12.0, 9.0) {
        128
    } else {
        255
    }
}

fn mask(k: usize) -> GrayImage {
    GrayImage::from_fn(W, H, |x, y| Luma([grey_at(k, x, y)]))
}

fn photo(k: usize) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| Rgb([(x * 6) as u8, (y * 8) as u8, (40 * k + 20) as u8]))
}

fn mkdirs(root: &Path, dirs: &[&str]) {
    for d in dirs {
        fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// Flat layout: Images/<name>.jpg, Masks/<name>.png, labels.csv.
fn write_flat(root: &Path) {
    mkdirs(root, &["Images", "Masks"]);
    for (k, name) in ["a", "b", "c"].iter().enumerate() {
        photo(k).save(root.join(format!("Images/{name}.jpg"))).unwrap();
        mask(k).save(root.join(format!("Masks/{name}.png"))).unwrap();
    }
    fs::write(root.join("labels.csv"), "image,label\na.jpg,1\n\n# comment\nb,0\n\"c.jpg\", 1\n").unwrap();
}

/// Training-release layout: Images/{Glaucoma,Non-Glaucoma}, Disc_Cup_Masks/{Glaucoma,Non-Glaucoma} (BMP).
fn write_split(root: &Path) {
    mkdirs(root, &["Images/Glaucoma", "Images/Non-Glaucoma", "Disc_Cup_Masks/Glaucoma", "Disc_Cup_Masks/Non-Glaucoma"]);
    for (k, (sub, name)) in
        [("Glaucoma", "g0001"), ("Non-Glaucoma", "n0001"), ("Non-Glaucoma", "n0002")].iter().enumerate()
    {
        photo(k).save(root.join(format!("Images/{sub}/{name}.JPG"))).unwrap();
        mask(k).save(root.join(format!("Disc_Cup_Masks/{sub}/{name}.bmp"))).unwrap();
    }
}

/// Source pixel of output pixel `dst` under the pixel-centre nearest rule.
fn src(dst: usize, n_in: u32, size: usize) -> u32 {
    ((2 * dst + 1) * n_in as usize / (2 * size)) as u32
}

fn check_masks(masks: &[u8], size: usize) {
    for k in 0..3 {
        let m = &masks[k * size * size..(k + 1) * size * size];
        for y in 0..size {
            for x in 0..size {
                let want = grey_class(grey_at(k, src(x, W, size), src(y, H, size)));
                assert_eq!(m[y * size + x], want, "image {k} pixel ({x},{y})");
            }
        }
        for class in [BACKGROUND, DISC_RIM, CUP] {
            assert!(m.contains(&class), "image {k} lacks class {class}");
        }
    }
}

#[test]
fn grey_values_map_to_classes() {
    assert_eq!([grey_class(0), grey_class(128), grey_class(255)], [CUP, DISC_RIM, BACKGROUND]);
    assert_eq!(
        [grey_class(40), grey_class(100), grey_class(150), grey_class(220)],
        [CUP, DISC_RIM, DISC_RIM, BACKGROUND]
    );
}

#[test]
fn flat_layout_with_csv_labels() {
    let dir = TempDir::new().unwrap();
    write_flat(dir.path());
    for size in [16, 24, 40] {
        let set = load_refuge(dir.path(), size).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(set.names, ["a", "b", "c"]);
        assert_eq!(set.glaucoma, [1, 0, 1]);
        assert_eq!(set.images.len(), 3 * 3 * size * size);
        assert!(set.images.iter().all(|v| v.is_finite()));
        check_masks(&set.cup_disc, size);
        let x = set.image_batch(&[2, 0]);
        assert_eq!(x.shape(), &[2, 3, size, size]);
        assert_eq!(&x.data()[..3 * size * size], &set.images[2 * 3 * size * size..]);
        let m = set.mask_batch(Mask::CupDisc, &[2, 0]);
        assert_eq!(m.len(), 2 * size * size);
        assert!(m[..size * size].iter().zip(set.mask(Mask::CupDisc, 2)).all(|(&a, &b)| a == b as u32));
        assert!(m[size * size..].iter().zip(&set.cup_disc[..size * size]).all(|(&a, &b)| a == b as u32));
        // Vertical cup-to-disc ratio from the full-resolution masks: cup rows 10..18, disc rows 5..23.
        assert!(set.vcdr.iter().all(|&v| (v - 8.0 / 18.0).abs() < 1e-6), "{:?}", set.vcdr);
        assert_eq!(set.glaucoma_batch(&[1, 2]), [0, 1]);
    }
}

#[test]
fn training_release_layout_labels_from_folders() {
    let dir = TempDir::new().unwrap();
    write_split(dir.path());
    let set = load_refuge(dir.path(), 20).unwrap();
    assert_eq!(set.names, ["g0001", "n0001", "n0002"]);
    assert_eq!(set.glaucoma, [1, 0, 0]);
    check_masks(&set.cup_disc, 20);
}

/// The challenge download as the organisers lay it out: Training400/{Glaucoma,Non-Glaucoma}/*.jpg with
/// Annotation-Training400/Disc_Cup_Masks/<same>/*.bmp, and Test400/*.jpg with
/// REFUGE-Test-GT/Disc_Cup_Masks/{G,N}/*.bmp (the test label is the mask's folder).
fn write_organisers(root: &Path) {
    let dirs = [
        "Training400/Glaucoma",
        "Training400/Non-Glaucoma",
        "Annotation-Training400/Disc_Cup_Masks/Glaucoma",
        "Annotation-Training400/Disc_Cup_Masks/Non-Glaucoma",
        "Test400",
        "REFUGE-Test-GT/Disc_Cup_Masks/G",
        "REFUGE-Test-GT/Disc_Cup_Masks/N",
    ];
    mkdirs(root, &dirs);
    for (k, (sub, name)) in
        [("Glaucoma", "g0001"), ("Non-Glaucoma", "n0001"), ("Non-Glaucoma", "n0002")].iter().enumerate()
    {
        photo(k).save(root.join(format!("Training400/{sub}/{name}.jpg"))).unwrap();
        mask(k).save(root.join(format!("Annotation-Training400/Disc_Cup_Masks/{sub}/{name}.bmp"))).unwrap();
    }
    for (k, (gn, name)) in [("N", "T0001"), ("G", "T0002"), ("N", "T0003")].iter().enumerate() {
        photo(k).save(root.join(format!("Test400/{name}.jpg"))).unwrap();
        mask(k).save(root.join(format!("REFUGE-Test-GT/Disc_Cup_Masks/{gn}/{name}.bmp"))).unwrap();
    }
}

#[test]
fn organisers_layout_loads_as_distributed() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    write_organisers(root);
    assert!(Release::present(root));
    let train = load_refuge_release(root, Release::Training, 20).unwrap();
    assert_eq!(train.names, ["g0001", "n0001", "n0002"]);
    assert_eq!(train.glaucoma, [1, 0, 0]);
    check_masks(&train.cup_disc, 20);
    let test = load_refuge_release(root, Release::Test, 20).unwrap();
    assert_eq!(test.names, ["T0001", "T0002", "T0003"]);
    assert_eq!(test.glaucoma, [0, 1, 0]);
    check_masks(&test.cup_disc, 20);
    // `--task fundus --data ROOT` trains on Training400 and tests on Test400.
    let cfg = mtcool::train::data::DataConfig {
        task: mtcool::train::data::TaskKind::Fundus,
        data_dir: Some(root.to_path_buf()),
        limit_train: None,
        limit_test: None,
        size: 16,
        disjoint_labels: false,
        folder: None,
    };
    let (tr, te) = mtcool::train::data::load(&cfg).unwrap();
    assert_eq!((tr.len(), te.len()), (3, 3));
    assert_eq!(te.batch(&[0, 1, 2]).labels[1], [0, 1, 0]);
    // Each missing piece is one error naming it.
    fs::remove_file(root.join("REFUGE-Test-GT/Disc_Cup_Masks/G/T0002.bmp")).unwrap();
    let e = load_refuge_release(root, Release::Test, 20).unwrap_err().to_string();
    assert!(e.contains("T0002.jpg") && e.contains("no mask T0002.bmp") && !e.contains('\n'), "{e}");
    fs::remove_file(root.join("Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp")).unwrap();
    let e = load_refuge_release(root, Release::Training, 20).unwrap_err().to_string();
    assert!(e.contains("g0001.jpg") && e.contains("no mask g0001.bmp"), "{e}");
}

#[test]
fn normalisation_uses_the_documented_constants_and_masks_tolerate_noise() {
    let dir = TempDir::new().unwrap();
    let root = dir.path();
    mkdirs(root, &["Images", "Masks"]);
    let colour = [200u8, 100, 50];
    RgbImage::from_pixel(W, H, Rgb(colour)).save(root.join("Images/u.png")).unwrap();
    // Lossy-looking grey values: near 0, 128 and 255 but not equal.
    let noisy = GrayImage::from_fn(W, H, |x, y| Luma([[9u8, 121, 139, 246][((x + y) % 4) as usize]]));
    noisy.save(root.join("Masks/u.png")).unwrap();
    fs::write(root.join("labels.csv"), "u,0\n").unwrap();
    let set = load_refuge(root, 8).unwrap();
    for c in 0..3 {
        let want = (colour[c] as f32 / 255.0 - MEAN[c]) / STD[c];
        assert!(set.images[c * 64..(c + 1) * 64].iter().all(|v| (v - want).abs() < 1e-5), "channel {c}");
    }
    assert!(set.cup_disc.iter().all(|&c| c <= CUP));
    assert_eq!(set.raw_rgb(0), colour.repeat(64), "normalisation inverts exactly");
    for y in 0..8 {
        for x in 0..8 {
            let want = grey_class([9u8, 121, 139, 246][((src(x, W, 8) + src(y, H, 8)) % 4) as usize]);
            assert_eq!(set.cup_disc[y * 8 + x], want);
        }
    }
}

/// Loads and expects an error: one line that contains every one of `needles`.
fn expect_err(root: &Path, size: usize, needles: &[&str]) {
    let msg = match load_refuge(root, size) {
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
    // 1. root missing
    let dir = TempDir::new().unwrap();
    expect_err(&dir.path().join("nowhere"), 16, &["nowhere", "not found"]);
    // 2. Images/ missing
    mkdirs(dir.path(), &["Masks"]);
    expect_err(dir.path(), 16, &["Images", "folder not found"]);
    // 3. Masks/ missing
    let dir = TempDir::new().unwrap();
    mkdirs(dir.path(), &["Images"]);
    expect_err(dir.path(), 16, &["Masks", "Disc_Cup_Masks"]);
    // 4. empty set
    mkdirs(dir.path(), &["Masks"]);
    fs::write(dir.path().join("Images/readme.txt"), "not an image").unwrap();
    expect_err(dir.path(), 16, &["Images", "no images"]);
    // 5. size out of range
    let dir = TempDir::new().unwrap();
    write_flat(dir.path());
    expect_err(dir.path(), 0, &["size 0"]);
    // 6. image without mask
    fs::remove_file(dir.path().join("Masks/b.png")).unwrap();
    expect_err(dir.path(), 16, &["b.jpg", "no mask"]);
    // 7. mask size differs from the image's
    GrayImage::new(W, H + 1).save(dir.path().join("Masks/b.png")).unwrap();
    expect_err(dir.path(), 16, &["b.png", "40x31", "40x30"]);
    // 8. corrupt mask
    fs::write(dir.path().join("Masks/b.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
    expect_err(dir.path(), 16, &["b.png", "cannot decode"]);
    mask(1).save(dir.path().join("Masks/b.png")).unwrap();
    load_refuge(dir.path(), 16).unwrap();
    // 9. corrupt image (not an image at all)
    fs::write(dir.path().join("Images/c.jpg"), b"this is not a jpeg").unwrap();
    expect_err(dir.path(), 16, &["c.jpg", "cannot decode"]);
    // 10. truncated JPEG
    let bytes = fs::read(dir.path().join("Images/a.jpg")).unwrap();
    fs::write(dir.path().join("Images/c.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    expect_err(dir.path(), 16, &["c.jpg"]);
    photo(2).save(dir.path().join("Images/c.jpg")).unwrap();
    load_refuge(dir.path(), 16).unwrap();
    // 11. label row missing
    fs::write(dir.path().join("labels.csv"), "a,1\nb,0\n").unwrap();
    expect_err(dir.path(), 16, &["labels.csv", "c.jpg", "no label"]);
    // 12. label not 0/1
    fs::write(dir.path().join("labels.csv"), "a,1\nb,2\nc,0\n").unwrap();
    expect_err(dir.path(), 16, &["labels.csv", "line 2", "\"2\""]);
    // 13. malformed row
    fs::write(dir.path().join("labels.csv"), "a,1\nb;0\nc,0\n").unwrap();
    expect_err(dir.path(), 16, &["labels.csv", "line 2", "image,label"]);
    // 14. duplicate row
    fs::write(dir.path().join("labels.csv"), "a,1\nb,0\nc,0\nb.jpg,0\n").unwrap();
    expect_err(dir.path(), 16, &["labels.csv", "line 4", "twice"]);
    // 15. labels.csv missing for a flat layout
    fs::remove_file(dir.path().join("labels.csv")).unwrap();
    expect_err(dir.path(), 16, &["labels.csv", "not found"]);
    // 16. training layout with a loose image and no labels.csv
    let dir = TempDir::new().unwrap();
    write_split(dir.path());
    photo(0).save(dir.path().join("Images/loose.png")).unwrap();
    expect_err(dir.path(), 16, &["labels.csv"]);
}
