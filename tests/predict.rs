//! `mtcool predict` (issue 18): on the fundus job's test images written as PNG files it reproduces
//! `eval` (Dice from its masks, AUROC from its probabilities, exactly); bad inputs are one line each and
//! do not stop the rest; the checkpoint's `mtcool.inputs` record says what predict relies on; the C
//! example reproduces predict's logits through the header.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_ok, read_json, run_mtcool as mtcool};
use mtcool::metrics::{auroc, MetricKind, Regions, TaskMetrics};
use mtcool::preprocess::{Inputs, Resize, INPUTS_VERSION};
use mtcool::train::data;
use mtcool::train::TrainConfig;
use mtcool::Tensor;

fn train(dir: &Path, args: &[&str]) -> PathBuf {
    let run = dir.join("run");
    let mut a = vec!["train"];
    a.extend(args);
    a.extend(["--out", run.to_str().unwrap()]);
    assert_ok(&mtcool(&a), "train");
    run
}

fn config(run: &Path) -> TrainConfig {
    serde_json::from_str(&fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
}

/// The run's test images as PNG files `img000.png`, … and their labels (cup/disc map, glaucoma).
fn write_test_images(run: &Path, dir: &Path) -> (Vec<Vec<u32>>, Vec<u32>) {
    fs::create_dir_all(dir).unwrap();
    let test = data::load_test(&config(run).data).unwrap();
    let (mut masks, mut glaucoma) = (vec![], vec![]);
    for i in 0..test.len() {
        let (rgb, side) = test.rgb(i).unwrap();
        image::RgbImage::from_raw(side as u32, side as u32, rgb)
            .unwrap()
            .save(dir.join(format!("img{i:03}.png")))
            .unwrap();
        let b = test.batch(&[i]);
        masks.push(b.labels[0].clone());
        glaucoma.push(b.labels[1][0]);
    }
    (masks, glaucoma)
}

#[test]
fn predict_on_test_image_files_reproduces_eval() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(
        dir.path(),
        &["--task", "fundus", "--size", "32", "--limit-train", "48", "--limit-test", "30", "--epochs", "2"],
    );
    let imgs = dir.path().join("imgs");
    let (masks, glaucoma) = write_test_images(&run, &imgs);
    // Bad inputs beside the good ones: a truncated PNG, a grey image for an RGB model, an empty folder.
    let png = fs::read(imgs.join("img000.png")).unwrap();
    let bad = dir.path().join("bad");
    fs::create_dir_all(bad.join("empty")).unwrap();
    fs::write(bad.join("truncated.png"), &png[..png.len() / 3]).unwrap();
    image::GrayImage::new(32, 32).save(bad.join("grey.png")).unwrap();
    let out = dir.path().join("pred");
    let o = mtcool(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        imgs.to_str().unwrap(),
        bad.join("truncated.png").to_str().unwrap(),
        bad.join("grey.png").to_str().unwrap(),
        bad.join("empty").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "some inputs failed: the exit code says so\n{err}");
    for (file, why) in [("truncated.png", "cannot decode"), ("grey.png", "1 colour channel"), ("empty", "no images")] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(file)).collect();
        assert_eq!(lines.len(), 1, "{file}: one line\n{err}");
        assert!(lines[0].contains(why), "{file}: {}", lines[0]);
    }
    assert!(err.contains("3 of 33 input(s) failed"), "{err}");
    assert!(!err.contains("panicked"));

    // Dice of the written masks and AUROC of the written probabilities equal eval's (summary.json).
    let summary = read_json(&run.join("summary.json"));
    let records = read_json(&out.join("predictions.json"));
    let records = records.as_array().unwrap();
    assert_eq!(records.len(), 30);
    let mut seg = TaskMetrics::new(MetricKind::Segment(Regions::nested(&["disc", "cup"])), 3);
    let mut scores = vec![];
    for (i, r) in records.iter().enumerate() {
        assert!(r["file"].as_str().unwrap().ends_with(&format!("img{i:03}.png")));
        let mask = image::open(out.join(r["tasks"][0]["mask"].as_str().unwrap())).unwrap().to_luma8();
        let px = mask.as_raw().len();
        let mut onehot = vec![0.0f32; 3 * px];
        mask.as_raw().iter().enumerate().for_each(|(p, &k)| onehot[k as usize * px + p] = 1.0);
        seg.update(&Tensor::new(&[1, 3, 32, 32], onehot).unwrap(), &masks[i]);
        let p = r["tasks"][1]["probabilities"].as_array().unwrap();
        scores.push((p[1].as_f64().unwrap() as f32, glaucoma[i]));
    }
    let seg = seg.finish();
    for k in ["dice_disc", "dice_cup"] {
        assert_eq!(seg[k], summary["metrics"][0][k].as_f64().unwrap(), "{k} from predict's masks vs eval");
    }
    let want = summary["metrics"][1]["auroc"].as_f64().unwrap();
    assert_eq!(auroc(&scores), want, "AUROC from predict's probabilities vs eval");
    let csv = fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31, "a header and one row per good input");
    assert!(csv.lines().next().unwrap().starts_with("file,cup/disc segmentation: mask,glaucoma: class,"));
}

#[test]
fn a_fresh_checkpoint_carries_the_documented_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(
        dir.path(),
        &["--task", "fundus", "--size", "32", "--limit-train", "16", "--limit-test", "8", "--epochs", "1"],
    );
    let bytes = fs::read(run.join("model.safetensors")).unwrap();
    let meta = mtcool::checkpoint::metadata(&bytes).unwrap();
    let raw: serde_json::Value = serde_json::from_str(&meta["mtcool.inputs"]).unwrap();
    // Every field docs/checkpoint.md lists, with its value for this run.
    let fields = [
        "version",
        "task",
        "task_names",
        "task_kinds",
        "class_names",
        "channels",
        "height",
        "width",
        "resize",
        "mean",
        "std",
        "head_inputs",
    ];
    let mut keys: Vec<&str> = raw.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    let mut want = fields.to_vec();
    want.sort();
    assert_eq!(keys, want);
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/checkpoint.md")).unwrap();
    for f in fields {
        assert!(doc.contains(&format!("`{f}`")), "docs/checkpoint.md does not document {f}");
    }
    let i: Inputs = serde_json::from_value(raw).unwrap();
    assert_eq!(i.version, INPUTS_VERSION);
    assert_eq!((i.channels, i.height, i.width, i.resize), (3, 32, 32, Resize::Bilinear));
    assert_eq!(i.mean, mtcool::data::fundus::MEAN);
    assert_eq!(i.task_kinds, ["segment", "classify"]);
    assert_eq!(i.head_inputs, ["concat[F1, F2]", "concat[F1, F2]"], "both MT-CooL heads read [F1, F2]");
    assert_eq!(i.class_names[1], ["no glaucoma", "glaucoma"]);
    assert_eq!(mtcool::checkpoint::inputs(&bytes).unwrap(), Some(i));
    // The step checkpoints carry it too; a Joint model's heads read the shared features.
    let joint = train(
        &dir.path().join("j"),
        &[
            "--task",
            "fundus3",
            "--method",
            "joint",
            "--size",
            "32",
            "--limit-train",
            "16",
            "--limit-test",
            "8",
            "--epochs",
            "1",
            "--checkpoint-every",
            "1",
        ],
    );
    let i = mtcool::checkpoint::inputs(&fs::read(joint.join("model.safetensors")).unwrap()).unwrap().unwrap();
    assert_eq!(i.head_inputs, ["F", "F", "F"]);
    assert_eq!(i.task_kinds, ["segment", "segment", "classify"]);
    let step = fs::read_dir(joint.join("ckpt")).unwrap().next().unwrap().unwrap().path();
    assert!(mtcool::checkpoint::inputs(&fs::read(step).unwrap()).unwrap().is_some());
}

#[test]
fn idx_files_are_read_image_by_image_and_overlays_are_written() {
    let Some(mnist) = common::real_mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = mnist.to_str().unwrap();
    let run =
        train(dir.path(), &["--task", "multimnist", "--data", data, "--limit-train", "256", "--limit-test", "64"]);
    // An IDX file of three 28×28 images, and the second of them as a PNG.
    let px: Vec<u8> = (0..3 * 784).map(|i| ((i * 37) % 251) as u8).collect();
    let mut idx = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    idx.extend(&px);
    fs::write(dir.path().join("three-idx3-ubyte"), idx).unwrap();
    image::GrayImage::from_raw(28, 28, px[784..2 * 784].to_vec()).unwrap().save(dir.path().join("one.png")).unwrap();
    let out = dir.path().join("pred");
    let o = mtcool(&[
        "predict",
        "--run",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--overlay",
        dir.path().join("three-idx3-ubyte").to_str().unwrap(),
        dir.path().join("one.png").to_str().unwrap(),
    ]);
    assert_ok(&o, "predict");
    let records = read_json(&out.join("predictions.json"));
    let r = records.as_array().unwrap();
    assert_eq!(r.len(), 4);
    assert!(r[1]["file"].as_str().unwrap().ends_with("three-idx3-ubyte#1"));
    assert_eq!(r[1]["tasks"], r[3]["tasks"], "IDX image 1 and the same pixels as a PNG predict the same");
    for task in r[0]["tasks"].as_array().unwrap() {
        let p: f64 = task["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
        assert!((p - 1.0).abs() < 1e-5);
    }
    // Overlays exist for segmentation tasks only: a fundus model's.
    let f = train(
        &dir.path().join("f"),
        &["--task", "fundus", "--size", "32", "--limit-train", "16", "--limit-test", "8", "--epochs", "1"],
    );
    image::RgbImage::new(32, 32).save(dir.path().join("black.png")).unwrap();
    let out = dir.path().join("pf");
    let o = mtcool(&[
        "predict",
        "--run",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--overlay",
        dir.path().join("black.png").to_str().unwrap(),
    ]);
    assert_ok(&o, "predict fundus");
    let ov = image::open(out.join("overlays/1-cup-disc-segmentation/black.png")).unwrap();
    assert_eq!((ov.width(), ov.height()), (32, 32));
}
