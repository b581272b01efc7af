//! The fundus task pairs end to end on tiny sets (CPU): synthetic seg+cls and seg+seg runs write a
//! complete run folder that `mtcool eval` reproduces, and a REFUGE-layout folder trains too.

mod common;

use common::{assert_eval_reproduces, assert_ok, read_json, run_mtcool as mtcool};
use std::path::Path;

fn summary(run: &Path) -> serde_json::Value {
    read_json(&run.join("summary.json"))
}

#[test]
fn synthetic_task_pairs_train_and_reevaluate() {
    let dir = tempfile::tempdir().unwrap();
    for (task, keys) in [("fundus", ["dice_cup", "auroc"]), ("fundus-av", ["dice_artery", "dice_vessel"])] {
        let run = dir.path().join(task);
        let r = run.to_str().unwrap();
        assert_ok(
            &mtcool(&[
                "train",
                "--task",
                task,
                "--limit-train",
                "24",
                "--limit-test",
                "8",
                "--epochs",
                "1",
                "--size",
                "32",
                "--out",
                r,
            ]),
            "mtcool",
        );
        for f in ["config.json", "metrics.jsonl", "model.safetensors", "summary.json", "curves.svg", "predictions.png"]
        {
            assert!(run.join(f).exists(), "{task}: run folder lacks {f}");
        }
        let s = summary(&run);
        // One epoch on 24 images sets no quality bar (tests/train_*.rs with real data do): here the
        // task's named metrics must exist and be numbers, and `assert_eval_reproduces` below checks
        // every value against a re-evaluation of the saved model.
        for (t, key) in keys.iter().enumerate() {
            let v = s["metrics"][t][key].as_f64();
            assert!(v.is_some_and(f64::is_finite), "{task}: metric {key} = {v:?}");
        }
        let png = image::open(run.join("predictions.png")).expect("predictions.png decodes");
        assert!(png.width() >= 32 * 3 && png.height() >= 32 * 3);
        // metrics.jsonl says where each epoch's time went, within its total.
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().last().unwrap())
                .unwrap();
        let part = |k: &str| line["time"][k].as_f64().unwrap_or_else(|| panic!("{task}: no time.{k} in {line}"));
        let parts = ["data", "steps", "stats", "eval", "checkpoints"].map(part);
        let total = line["seconds"].as_f64().unwrap();
        assert!(parts.iter().all(|&v| v >= 0.0) && parts.iter().sum::<f64>() <= total, "{task}: {line}");
        assert!(parts[1] > 0.0 && parts[3] > 0.0 && parts[4] > 0.0, "{task}: steps, eval and writes take time: {line}");
        assert_ok(&mtcool(&["eval", "--run", r]), "mtcool eval");
        assert!(assert_eval_reproduces(&run) >= 6, "{task}: too few metrics compared");
    }
}

/// A REFUGE-layout folder: Images/{Glaucoma,Non-Glaucoma}/*.png and Masks/… with 0/128/255 masks.
fn write_refuge_fixture(root: &Path, n: usize) {
    for (i, class) in (0..n).map(|i| (i, if i % 3 == 0 { "Glaucoma" } else { "Non-Glaucoma" })) {
        for sub in ["Images", "Masks"] {
            std::fs::create_dir_all(root.join(sub).join(class)).unwrap();
        }
        let (w, h) = (40u32, 36u32);
        let (cx, cy) = (12.0 + (i % 4) as f32 * 4.0, 18.0);
        let cup = if class == "Glaucoma" { 5.0 } else { 3.0 };
        let mut img = image::RgbImage::new(w, h);
        let mut mask = image::GrayImage::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                let (px, m) = if d < cup {
                    ([250, 240, 200], 0)
                } else if d < 8.0 {
                    ([240, 200, 90], 128)
                } else {
                    ([180, 70, 30], 255)
                };
                img.put_pixel(x, y, image::Rgb(px));
                mask.put_pixel(x, y, image::Luma([m]));
            }
        }
        img.save(root.join("Images").join(class).join(format!("g{i:02}.png"))).unwrap();
        mask.save(root.join("Masks").join(class).join(format!("g{i:02}.png"))).unwrap();
    }
}

#[test]
fn refuge_folder_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("refuge");
    write_refuge_fixture(&data, 10);
    let run = dir.path().join("run");
    let o = mtcool(&[
        "train",
        "--task",
        "fundus",
        "--data",
        data.to_str().unwrap(),
        "--size",
        "32",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_ok(&o, "mtcool");
    let s = summary(&run);
    assert_eq!(s["test_examples"], 2, "10 images: every 5th is test");
    assert!(assert_eval_reproduces(&run) >= 6);
}

#[test]
fn bad_fundus_flags_are_one_line_errors() {
    for args in [
        &["train", "--size", "30"][..],
        &["train", "--size", "8"],
        &["train", "--task", "fundus", "--data", "/nonexistent/refuge"],
        &["train", "--task", "retina"],
        &["train", "--b", "0"],
        &["train", "--lr", "-1"],
        &["train", "--batch-size", "0"],
        &["train", "--epochs", "0"],
    ] {
        let o = mtcool(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error:") && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn learning_rate_schedules() {
    use clap::Parser;
    use mtcool::cli::{Cli, Command};
    use mtcool::train::LrSchedule;
    let cfg = |args: &[&str]| match Cli::try_parse_from([&["mtcool", "train"], args].concat()).unwrap().command {
        Command::Train(t) => t.config(),
        _ => unreachable!(),
    };
    // Constant by default; cosine decays from --lr to 0.
    assert_eq!(cfg(&[]).lr_schedule, LrSchedule::Constant);
    let f = cfg(&["--lr", "0.004", "--lr-schedule", "cosine"]);
    assert_eq!(f.b, 0.004, "b defaults to the learning rate");
    assert_eq!(f.lr_at(0, 10, 10), 0.004);
    assert!((f.lr_at(50, 10, 10) - 0.002).abs() < 1e-9);
    assert!(f.lr_at(100, 10, 10).abs() < 1e-9);
    assert!(f.lr_at(25, 10, 10) > f.lr_at(26, 10, 10), "decreasing");
    let m = cfg(&["--task", "multimnist"]);
    assert_eq!((m.lr, m.b), (1e-3, 1e-3));
    assert_eq!(m.lr_at(77, 10, 10), m.lr);
}
