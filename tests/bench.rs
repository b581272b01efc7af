//! `mtcool bench` and `mtcool profile` on the CPU, on tiny synthetic fundus batches (no download):
//! the reports hold what they promise, `--save` writes what bench/torch_ref.py reads, the per-op profile
//! accounts for the step, and bad flags are one-line errors.

mod common;

use common::run_mtcool as mtcool;
use mtcool::checkpoint;

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

const TINY: [&str; 6] = ["--", "--size", "32", "--limit-train", "8", "--limit-test"];

#[test]
fn bench_reports_step_times_and_saves_what_torch_ref_reads() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("b");
    let mut args = vec!["bench", "--task", "fundus", "--method", "joint", "--batch-size", "4", "--steps", "3"];
    args.extend_from_slice(&["--warmup", "1", "--json", "--save", save.to_str().unwrap()]);
    args.extend_from_slice(&TINY);
    args.push("8");
    let r = json(&mtcool(&args));
    assert_eq!(r["method"], "joint");
    assert_eq!(r["batch_size"], 4);
    assert_eq!(r["steps"], 3);
    let (p10, med, p90) =
        (r["p10_us"].as_f64().unwrap(), r["median_us"].as_f64().unwrap(), r["p90_us"].as_f64().unwrap());
    assert!(0.0 < p10 && p10 <= med && med <= p90, "{p10} {med} {p90}");
    let ips = r["images_per_s"].as_f64().unwrap();
    assert!((ips - 4.0 / (med * 1e-6)).abs() < 1e-6 * ips);
    let losses = r["first_losses"].as_array().unwrap();
    assert_eq!(losses.len(), 3, "warmup + steps ≥ 3 records three steps");
    assert!(losses.iter().flat_map(|l| l.as_array().unwrap()).all(|v| v.as_f64().unwrap().is_finite()));
    // What bench/torch_ref.py reads: the initial weights (a loadable checkpoint), the batch, the report.
    let model = checkpoint::load(&save.join("model.safetensors")).expect("initial weights load");
    assert_eq!(model.param_count(), r["params"].as_u64().unwrap() as usize);
    let bytes = std::fs::read(save.join("batch.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("x").unwrap().shape(), [4, 3, 32, 32]);
    assert_eq!(st.tensor("labels1").unwrap().shape(), [4 * 32 * 32]);
    assert_eq!(st.tensor("labels2").unwrap().shape(), [4]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(save.join("bench.json")).unwrap()).unwrap();
    assert_eq!(saved["first_losses"], r["first_losses"]);
    assert!(saved["lr"].is_number() && saved["b"].is_number());
}

#[test]
fn same_seed_bench_gives_the_same_losses() {
    let run = || {
        let mut args =
            vec!["bench", "--task", "fundus", "--batch-size", "2", "--steps", "1", "--warmup", "2", "--json"];
        args.extend_from_slice(&TINY);
        args.push("8");
        json(&mtcool(&args))["first_losses"].clone()
    };
    assert_eq!(run(), run());
}

#[test]
fn profile_accounts_for_the_step_op_by_op() {
    let mut args = vec!["profile", "--task", "fundus", "--method", "mtcool", "--batch-size", "2", "--steps", "2"];
    args.extend_from_slice(&["--warmup", "1", "--json"]);
    args.extend_from_slice(&TINY);
    args.push("8");
    let r = json(&mtcool(&args));
    assert!(r["peaks"]["copy_gb_s"].as_f64().unwrap() > 0.0 && r["peaks"]["sgemm_gflop_s"].as_f64().unwrap() > 0.0);
    let rows = r["rows"].as_array().unwrap();
    let find = |phase: &str, op: &str| rows.iter().find(|x| x["phase"] == phase && x["op"] == op).cloned();
    // The U-Net's convolutions run fused with their ReLU; the segmentation head's 1×1 conv plainly.
    let conv = find("forward", "conv2d_relu").expect("conv2d_relu forward row");
    assert!(conv["gflop_s"].as_f64().unwrap() > 0.0 && conv["gb_s"].is_null());
    assert!(find("backward", "conv2d_relu").is_some());
    let head = find("forward", "conv2d").expect("the segmentation head's conv2d row");
    assert_eq!(head["calls"].as_f64().unwrap(), 1.0);
    // The other task's extractor runs with noisy weights, the noise added inside its layers' ops (no
    // perturbed copy of the weights is read first).
    let noisy = find("forward", "conv2d_noisy_relu").expect("MT-CooL reads the other extractor with noise");
    assert!(find("forward", "frozen_param_noisy").is_none(), "a perturbed copy of θ was made");
    let adam = find("optimizer", "adam_step").expect("optimizer row");
    assert_eq!(adam["calls"], 2.0, "one Adam step per task per MT-CooL step");
    // Calls per step: the U-Net extractor has 6 convs and each task's sub-step runs both extractors:
    // its own (2 × 6 plain) and the other's (2 × 6 noisy); only task 1's sub-step evaluates its head,
    // the segmentation head's 1×1 conv (the `conv2d` row above).
    assert_eq!(conv["calls"].as_f64().unwrap(), 2.0 * 6.0);
    assert_eq!(noisy["calls"].as_f64().unwrap(), 2.0 * 6.0);
    let step = r["step_us"].as_f64().unwrap();
    let charged: f64 = rows.iter().map(|x| x["us"].as_f64().unwrap()).sum();
    let unattributed = r["unattributed_us"].as_f64().unwrap();
    assert!((charged + unattributed - step).abs() <= 0.01 * step + 1.0, "{charged} + {unattributed} vs {step}");
    let share: f64 = rows.iter().map(|x| x["share"].as_f64().unwrap()).sum();
    assert!(share <= 100.0 + 1e-6 && share > 50.0, "shares sum to {share}");
    let us: Vec<f64> = rows.iter().map(|x| x["us"].as_f64().unwrap()).collect();
    assert!(us.windows(2).all(|w| w[0] >= w[1]), "largest first");
}

#[test]
fn profiler_is_off_unless_started() {
    assert!(!mtcool::profile::enabled());
    mtcool::profile::forward("x", 0.0, 0.0);
    let _ = mtcool::profile::stop();
    mtcool::profile::start();
    mtcool::profile::forward("y", 1.0, 0.0);
    let stats = mtcool::profile::stop();
    assert_eq!(stats.len(), 1, "start clears what was recorded before");
    assert!(stats.contains_key(&("forward", "y")));
    assert!(!mtcool::profile::enabled());
}

#[test]
fn bad_bench_flags_are_one_line_errors() {
    let cases: [&[&str]; 5] = [
        &["bench", "--steps", "0", "--task", "fundus"],
        &["bench", "--task", "fundus", "--", "--lr", "-1"],
        &["bench", "--task", "fundus", "--", "--out", "x"],
        &["profile", "--task", "fundus", "--save", "x"],
        &["bench", "--task", "fundus", "--warmup", "200000"],
    ];
    for args in cases {
        let o = mtcool(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.trim_end().lines().count() == 1 && err.starts_with("error:"),
            "{args:?}: {err}"
        );
    }
}
