//! End to end on real MNIST (small subset, CPU): MT-CooL trains above chance on both tasks, the run
//! folder is complete, `mtcool eval` reproduces the summary, and bad data gives one clear error line.
//! Skips when the dataset is absent, except under CI (CI=true), where that is a failure.

mod common;

use common::{read_json, real_mnist_dir, run_mtcool as mtcool};

use mtcool::data::mnist::default_mnist_dir;

#[test]
fn mtcool_trains_above_chance_and_eval_reproduces_it() {
    if real_mnist_dir().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = default_mnist_dir();
    let args = [
        "train",
        "--task",
        "multimnist",
        "--method",
        "mtcool",
        "--mode",
        "full",
        "--epochs",
        "2",
        "--limit-train",
        "3000",
        "--limit-test",
        "1000",
        "--batch-size",
        "64",
        "--lr",
        "2e-3",
        "--device",
        "cpu",
        "--seed",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    let o = mtcool(&args);
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    for f in ["config.json", "metrics.jsonl", "model.safetensors", "summary.json", "curves.svg"] {
        assert!(out.join(f).exists(), "run folder lacks {f}");
    }
    let summary = read_json(&out.join("summary.json"));
    let acc: Vec<f64> = (0..2).map(|t| summary["metrics"][t]["acc"].as_f64().unwrap()).collect();
    assert!(acc.iter().all(|&a| a > 0.5), "accuracy not clearly above chance (0.1): {acc:?}");
    assert!(summary["param_count"].as_u64().unwrap() > 10_000);
    let epochs = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(epochs.lines().count(), 2);

    let e = mtcool(&["eval", "--run", out.to_str().unwrap()]);
    assert!(e.status.success(), "eval failed: {}", String::from_utf8_lossy(&e.stderr));
    assert_eq!(common::assert_eval_reproduces(&out), 4, "accuracy and test loss per task");
}

#[test]
fn missing_or_corrupt_mnist_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        std::fs::write(corrupt.join(f), b"\x00\x00\x08\x03garbage").unwrap();
    }
    let gz = dir.path().join("gz");
    std::fs::create_dir(&gz).unwrap();
    std::fs::write(gz.join("train-images-idx3-ubyte.gz"), b"\x1f\x8b\x08\x00broken").unwrap();
    for data in [&empty, &corrupt, &gz, &dir.path().join("does-not-exist")] {
        let out = dir.path().join("run");
        let o = mtcool(&[
            "train",
            "--task",
            "multimnist",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: succeeded", data.display());
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{}: expected one line, got:\n{err}", data.display());
        assert!(lines[0].starts_with("error:") && !err.contains("panicked"), "{err}");
        assert!(!out.exists(), "a run folder was left behind for bad data");
    }
}
