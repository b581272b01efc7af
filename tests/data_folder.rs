//! The user's own data (`--task folder --data DIR`, `mtcool::data::folder`): fixture folders written
//! here, the happy path end to end (every image format, the mask encoding, CSV names and indices, a
//! partial task), and one clear error for each kind of mismatch.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_eval_reproduces, assert_ok, read_json, run_mtcool as mtcool};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use mtcool::data::folder::{load_folder, Manifest};
use mtcool::train::data::{self, DataConfig, TaskKind};

const W: u32 = 20;
const H: u32 = 16;

/// The manifest of the fixture: a lesion segmentation (grey 0 = background, 255 = lesion) and a
/// diagnosis classifier read from a CSV by class name.
const MANIFEST: &str = r#"{
  "channels": 3,
  "tasks": [
    {"name": "lesion", "kind": "segment", "masks": "masks/lesion",
     "classes": ["background", "lesion"], "values": [0, 255]},
    {"name": "diagnosis", "kind": "classify", "labels": "diagnosis.csv",
     "classes": ["normal", "disease"]}
  ]
}"#;

/// Lesion of image k: a square whose corner moves with k.
fn lesion_at(k: usize, x: u32, y: u32) -> bool {
    let (x0, y0) = (2 + k as u32, 3);
    (x0..x0 + 8).contains(&x) && (y0..y0 + 6).contains(&y)
}

fn photo(k: usize) -> RgbImage {
    RgbImage::from_fn(W, H, |x, y| Rgb([(x * 9) as u8, (y * 11) as u8, (30 * k + 10) as u8]))
}

fn lesion_mask(k: usize) -> GrayImage {
    GrayImage::from_fn(W, H, |x, y| Luma([if lesion_at(k, x, y) { 255 } else { 0 }]))
}

/// Six images in four formats, masks in three, CSV with a header, names and an index.
fn write_fixture(root: &Path) {
    fs::create_dir_all(root.join("images")).unwrap();
    fs::create_dir_all(root.join("masks/lesion")).unwrap();
    fs::write(root.join("tasks.json"), MANIFEST).unwrap();
    let formats = [
        ("png", ImageFormat::Png),
        ("jpg", ImageFormat::Jpeg),
        ("bmp", ImageFormat::Bmp),
        ("tif", ImageFormat::Tiff),
        ("PNG", ImageFormat::Png),
        ("tiff", ImageFormat::Tiff),
    ];
    for (k, (ext, fmt)) in formats.iter().enumerate() {
        photo(k).save_with_format(root.join(format!("images/img{k}.{ext}")), *fmt).unwrap();
        let (mext, mfmt) = [("png", ImageFormat::Png), ("bmp", ImageFormat::Bmp), ("tif", ImageFormat::Tiff)][k % 3];
        lesion_mask(k).save_with_format(root.join(format!("masks/lesion/img{k}.{mext}")), mfmt).unwrap();
    }
    let csv = "file,diagnosis\nimg0.png,disease\nimg1,normal\nimg2.bmp,1\nimg3.tif,normal\n# a comment\nimg4,disease\nimg5,0\n";
    fs::write(root.join("diagnosis.csv"), csv).unwrap();
}

fn manifest(root: &Path) -> Manifest {
    Manifest::read(root).unwrap()
}

fn config(root: &Path) -> DataConfig {
    DataConfig {
        task: TaskKind::Folder,
        data_dir: Some(root.to_path_buf()),
        limit_train: None,
        limit_test: None,
        size: 8,
        disjoint_labels: false,
        folder: Some(manifest(root)),
    }
}

#[test]
fn a_folder_loads_every_format_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_fixture(root);
    let m = manifest(root);
    let size = 8;
    let set = load_folder(root, &m, size).unwrap();
    assert_eq!(set.names, ["img0", "img1", "img2", "img3", "img4", "img5"]);
    assert_eq!(set.tasks[1].values, [1, 0, 1, 0, 1, 0], "CSV class names and indices");
    assert!(set.tasks.iter().all(|t| t.has.iter().all(|&h| h)));
    // Grey 255 is class 1 ("values"), resized by the pixel-centre nearest rule.
    for k in 0..6 {
        for y in 0..size {
            for x in 0..size {
                let (sx, sy) =
                    (((2 * x + 1) * W as usize / (2 * size)) as u32, ((2 * y + 1) * H as usize / (2 * size)) as u32);
                let want = lesion_at(k, sx, sy) as u8;
                assert_eq!(set.tasks[0].values[k * size * size + y * size + x], want, "image {k} ({x},{y})");
            }
        }
    }
    // Normalisation (byte/255 − 0.5) / 0.25: the PNG image's red channel at the resized pixel (0, 0).
    let img = image::imageops::resize(&photo(0), size as u32, size as u32, image::imageops::FilterType::Triangle);
    let want = (img.get_pixel(0, 0).0[0] as f32 / 255.0 - 0.5) / 0.25;
    assert!((set.images[0] - want).abs() < 1e-6, "{} vs {want}", set.images[0]);
    // Split: every 5th image is test; every image has both labels, so the split is shared.
    let (train, test) = data::load(&config(root)).unwrap();
    assert_eq!((train.len(), test.len()), (5, 1));
    assert!(train.task_sets().is_none());
    let b = test.batch(&[0]);
    assert_eq!(b.x.shape(), &[1, 3, size, size]);
    assert_eq!(b.labels[1], [1], "the test image is img4 (every 5th), a disease case");
}

#[test]
fn a_partial_task_trains_on_its_own_images_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_fixture(root);
    // Diagnoses for three images only: the task is partial, so the run has per-task data.
    let partial = MANIFEST
        .replace(r#""classes": ["normal", "disease"]}"#, r#""classes": ["normal", "disease"], "partial": true}"#);
    fs::write(root.join("tasks.json"), partial).unwrap();
    fs::write(root.join("diagnosis.csv"), "img0,disease\nimg1,normal\nimg3,1\nimg4,1\n").unwrap();
    let (train, test) = data::load(&config(root)).unwrap();
    let sets = train.task_sets().expect("per-task data");
    assert_eq!(sets.iter().map(|s| s.len()).collect::<Vec<_>>(), [5, 3]);
    assert!(test.task_sets().is_none(), "the test image has both labels: a shared split");
    let run = root.join("run");
    let r = run.to_str().unwrap();
    for method in ["mtcool", "joint"] {
        let args = [
            "train",
            "--task",
            "folder",
            "--data",
            root.to_str().unwrap(),
            "--size",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--method",
            method,
            "--out",
            r,
        ];
        let o = mtcool(&args);
        assert_ok(&o, method);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("(5+3 train / 1 test)"), "{err}");
        let cfg = read_json(&run.join("config.json"));
        assert_eq!(cfg["data"]["folder"]["tasks"][1]["name"], "diagnosis", "the manifest is kept in config.json");
        let s = read_json(&run.join("summary.json"));
        assert!(s["metrics"][0]["dice_lesion"].is_number(), "{s}");
        assert!(s["metrics"][1].get("acc").is_some(), "{s}");
    }
    // Full labels again, and eval reproduces the run's metrics from config.json alone.
    write_fixture(root);
    let o = mtcool(&[
        "train",
        "--task",
        "folder",
        "--data",
        root.to_str().unwrap(),
        "--size",
        "16",
        "--epochs",
        "1",
        "--out",
        r,
    ]);
    assert_ok(&o, "full labels");
    assert!(assert_eval_reproduces(&run) >= 4);
    // compare on a folder: the columns come from the manifest.
    let cmp = root.join("cmp");
    let o = mtcool(&[
        "compare",
        "--task",
        "folder",
        "--methods",
        "joint,mtcool",
        "--seeds",
        "1",
        "--out",
        cmp.to_str().unwrap(),
        "--",
        "--data",
        root.to_str().unwrap(),
        "--size",
        "16",
        "--epochs",
        "1",
    ]);
    assert_ok(&o, "compare");
    let table = fs::read_to_string(cmp.join("table.md")).unwrap();
    assert!(table.starts_with("| method | lesion: lesion Dice % | diagnosis Acc % | diagnosis AUROC % |"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("| joint |") || l.starts_with("| mtcool |")).count(),
        2,
        "{table}"
    );
}

/// Rewrites one thing in a fresh fixture and checks the load fails with one line naming `needles`.
fn expect_err(change: impl Fn(&Path), needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_fixture(root);
    change(root);
    let msg = match Manifest::read(root) {
        Err(e) => e.to_string(),
        Ok(m) => load_folder(root, &m, 8).expect_err("the load should fail").to_string(),
    };
    assert!(!msg.contains('\n'), "one line: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
}

#[test]
fn each_mismatch_is_one_clear_error() {
    // Missing mask.
    expect_err(
        |r| fs::remove_file(r.join("masks/lesion/img2.tif")).unwrap(),
        &["img2.bmp", "no mask img2", "lesion", "partial"],
    );
    // Mask of another size than its image.
    expect_err(
        |r| GrayImage::new(W - 1, H).save(r.join("masks/lesion/img0.png")).unwrap(),
        &["img0.png", "19x16", "20x16"],
    );
    // Unknown label: a mask value outside "values", a CSV label outside the classes.
    expect_err(
        |r| GrayImage::from_pixel(W, H, Luma([128])).save(r.join("masks/lesion/img0.png")).unwrap(),
        &["img0.png", "unknown label", "128", "[0, 255]"],
    );
    expect_err(
        |r| fs::write(r.join("diagnosis.csv"), "img0,disease\nimg1,sick\n").unwrap(),
        &["diagnosis.csv", "line 2", "unknown label \"sick\"", "normal, disease"],
    );
    // Empty task: partial, and no image has a label.
    expect_err(
        |r| {
            let m = MANIFEST.replace(
                r#""classes": ["normal", "disease"]}"#,
                r#""classes": ["normal", "disease"], "partial": true}"#,
            );
            fs::write(r.join("tasks.json"), m).unwrap();
            fs::write(r.join("diagnosis.csv"), "file,label\n").unwrap();
        },
        &["diagnosis", "empty task"],
    );
    // A non-partial task with an image missing from its CSV, and a CSV row naming no image.
    expect_err(|r| fs::write(r.join("diagnosis.csv"), "img0,1\n").unwrap(), &["img1", "no row", "diagnosis.csv"]);
    expect_err(
        |r| fs::write(r.join("diagnosis.csv"), "img0,1\nimg9,0\n").unwrap(),
        &["diagnosis.csv", "line 2", "no image \"img9\""],
    );
    // The manifest: missing, malformed, one task only, an unknown field, a corrupt image.
    expect_err(|r| fs::remove_file(r.join("tasks.json")).unwrap(), &["tasks.json", "manifest not found"]);
    expect_err(|r| fs::write(r.join("tasks.json"), "{").unwrap(), &["tasks.json", "invalid manifest"]);
    expect_err(
        |r| fs::write(r.join("tasks.json"), MANIFEST.replace("\"masks\":", "\"mask_dir\":")).unwrap(),
        &["tasks.json", "unknown field `mask_dir`"],
    );
    expect_err(|r| fs::write(r.join("images/img1.jpg"), b"\xff\xd8 broken").unwrap(), &["img1.jpg", "cannot decode"]);
    expect_err(|r| fs::remove_dir_all(r.join("masks/lesion")).unwrap(), &["masks/lesion", "not found"]);
}

#[test]
fn the_cli_reports_a_bad_folder_in_one_line_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_fixture(root);
    fs::remove_file(root.join("masks/lesion/img3.png")).ok();
    fs::remove_file(root.join("masks/lesion/img3.bmp")).ok();
    fs::remove_file(root.join("masks/lesion/img3.tif")).ok();
    let out = root.join("run");
    let o = mtcool(&[
        "train",
        "--task",
        "folder",
        "--data",
        root.to_str().unwrap(),
        "--size",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.iter().any(|l| l.contains("img3") && l.contains("no mask")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = mtcool(&["train", "--task", "folder", "--out", out.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--task folder needs --data"));
}
