//! Whole-run determinism across thread counts: the same short MT-CooL (with attention fusion, so the
//! batched matmuls' thread split is exercised) and Joint runs with MTCOOL_THREADS = 1, 2 and 3 write
//! byte-identical model files and identical metrics (timings aside). The per-op tests check each op;
//! this checks that nothing in a run (shuffles, noise, reductions, threads) depends on the thread count.

use std::fs;
use std::path::Path;
use std::process::Command;

/// metrics.jsonl without the timings.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.as_object_mut().unwrap().remove("time");
            v
        })
        .collect()
}

#[test]
fn runs_are_identical_for_every_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    for method in [&["--method", "mtcool", "--fusion", "attention", "--b", "0.02"][..], &["--method", "joint"]] {
        let mut first: Option<(Vec<u8>, Vec<serde_json::Value>)> = None;
        for threads in ["1", "2", "3"] {
            let out = tmp.path().join(format!("{}-{threads}", method[1]));
            let o = Command::new(env!("CARGO_BIN_EXE_mtcool"))
                .args(["train", "--task", "fundus", "--size", "32", "--limit-train", "16", "--limit-test", "8"])
                .args(["--batch-size", "8", "--epochs", "2", "--device", "cpu", "--seed", "5"])
                .args(method)
                .arg("--out")
                .arg(&out)
                .env("MTCOOL_THREADS", threads)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let got = (fs::read(out.join("model.safetensors")).unwrap(), metrics(&out));
            assert_eq!(got.1.len(), 2, "two epochs");
            match &first {
                None => first = Some(got),
                Some(want) => {
                    assert!(got.0 == want.0, "{method:?}: the model with {threads} threads differs from 1 thread's");
                    assert_eq!(got.1, want.1, "{method:?}: metrics with {threads} threads differ");
                }
            }
        }
    }
}
