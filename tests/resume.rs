//! Checkpoints, `--resume`, determinism and the non-finite guard, end to end on the synthetic fundus
//! task (CPU, no data needed): a run killed with SIGKILL mid-epoch and resumed ends with a model file
//! bit-identical to an uninterrupted run's; the same seed gives the same bytes twice; a corrupt newest
//! checkpoint falls back to the previous one; a NaN stops the run (or is skipped) without ever
//! replacing a good checkpoint.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::Parser;
use mtcool::model::{MultiTaskModel, TaskId, TaskSpec};
use mtcool::mtl::{summed_step, Batch, Objective};
use mtcool::train::resume::{self, Position};
use mtcool::train::TrainConfig;

/// 96 examples in batches of 4: 24 steps per epoch, 2 epochs.
const RUN: [&str; 16] = [
    "--task",
    "fundus",
    "--size",
    "32",
    "--limit-train",
    "96",
    "--limit-test",
    "8",
    "--batch-size",
    "4",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--seed",
    "3",
];

fn cmd(args: &[&str], out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mtcool"));
    c.arg("train").args(args).arg("--out").arg(out).env_remove("MTCOOL_INJECT_NAN_AT_STEP");
    c
}

fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "mtcool failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn resume(run: &Path) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mtcool"));
    ok(c.args(["train", "--resume"]).arg(run).env_remove("MTCOOL_INJECT_NAN_AT_STEP").output().unwrap())
}

/// metrics.jsonl without the timings.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.as_object_mut().unwrap().remove("time");
            v
        })
        .collect()
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

fn model(run: &Path) -> Vec<u8> {
    fs::read(run.join("model.safetensors")).unwrap()
}

fn checkpoints(run: &Path) -> Vec<(u32, PathBuf)> {
    resume::list(run)
}

#[test]
fn killed_run_resumes_bit_identically_and_runs_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let every5 = [&RUN[..], &["--checkpoint-every", "5", "--keep-checkpoints", "2", "--deterministic"]].concat();
    ok(cmd(&every5, &a).output().unwrap());
    ok(cmd(&every5, &b).output().unwrap());
    // Determinism: the same seed gives the same metrics and the same model bytes.
    assert_eq!(model(&a), model(&b), "two runs with one seed differ");
    assert_eq!(metrics(&a), metrics(&b));
    assert_eq!(summary(&a)["metrics"], summary(&b)["metrics"]);
    let config = fs::read_to_string(a.join("config.json")).unwrap();
    assert!(config.contains("\"deterministic\": true"), "{config}");
    let kept: Vec<u32> = checkpoints(&a).iter().map(|c| c.0).collect();
    assert_eq!(kept, [48, 45], "the newest 2 checkpoints are kept");

    // Kill a run (checkpointing every step) with SIGKILL once it has a checkpoint mid-epoch 1.
    let mut child = cmd(&[&RUN[..], &["--checkpoint-every", "1"]].concat(), &c)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::kill_after_checkpoint(&mut child, &c, 3..24);
    assert!(!c.join("summary.json").exists(), "the run was not interrupted");
    assert!(checkpoints(&c).len() <= 3, "more than --keep-checkpoints (3) kept");
    let newest = checkpoints(&c)[0].0;
    assert!(newest < 48, "killed after its last step");
    let out = resume(&c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming from"), "{err}");
    assert!(model(&a) == model(&c), "resumed from step {newest}: model differs from the uninterrupted run");
    assert_eq!(metrics(&a), metrics(&c));
    assert_eq!(summary(&a)["metrics"], summary(&c)["metrics"]);
    assert!(!fs::read_dir(c.join("ckpt")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));

    // A corrupt newest checkpoint: resume falls back to the previous one (with a warning) and still
    // ends bit-identical.
    let (n, newest) = checkpoints(&b)[0].clone();
    let bytes = fs::read(&newest).unwrap();
    fs::write(&newest, &bytes[..bytes.len() - 100]).unwrap();
    fs::remove_file(b.join("summary.json")).unwrap();
    fs::remove_file(b.join("model.safetensors")).unwrap();
    let out = resume(&b);
    let err = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&format!("step-{n}.safetensors is unusable")) && warnings[0].contains("falling back to"),
        "{err}"
    );
    assert!(model(&a) == model(&b), "fallback resume differs");
    assert_eq!(metrics(&a), metrics(&b));
}

/// 48 examples in batches of 8: 6 steps per epoch; checkpoints every 2 steps and at epoch ends.
const SMALL: [&str; 18] = [
    "--task",
    "fundus",
    "--size",
    "32",
    "--limit-train",
    "48",
    "--limit-test",
    "8",
    "--batch-size",
    "8",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--checkpoint-every",
    "2",
    "--method",
    "joint",
];

#[test]
fn nonfinite_step_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // Joint: a NaN loss, an infinite bias (its softmax is NaN), a NaN input (finite loss, NaN
    // gradients); MT-CooL: a NaN in task 1's sub-step and one in task 2's.
    let mtcool = [&SMALL[..16], &["--method", "mtcool"]].concat();
    for (args, hook, what) in [
        (&SMALL[..], "9", "non-finite loss (NaN) in task 1"),
        (&SMALL[..], "9:inf", "non-finite loss (NaN) in task 1"),
        (&SMALL[..], "9:input", "non-finite gradient of shared.extractor"),
        (&mtcool[..], "9", "non-finite loss (NaN) in task 1"),
        (&mtcool[..], "9:task2", "non-finite loss (NaN) in task 2"),
    ] {
        let run = tmp.path().join(format!("{}-{}", args[17], hook.replace(':', "-")));
        let out = cmd(args, &run).env("MTCOOL_INJECT_NAN_AT_STEP", hook).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        let e = errors[0];
        assert!(e.contains(what) && e.contains("at epoch 2, step 3 of 6 (global step 9)"), "{e}");
        assert!(e.contains("step-8.safetensors is kept"), "{e}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!run.join("summary.json").exists());
        // The checkpoints on disk are the good ones from before step 9, and they resume.
        let kept: Vec<u32> = checkpoints(&run).iter().map(|c| c.0).collect();
        assert_eq!(kept, [8, 6, 4]);
        let m = mtcool::checkpoint::load(&checkpoints(&run)[0].1).unwrap();
        assert!(m.store.iter().all(|p| p.value.data().iter().all(|v| v.is_finite())));
        resume(&run);
        assert!(run.join("summary.json").exists());
    }
}

#[test]
fn skip_nonfinite_skips_and_counts_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("skip");
    let out = ok(cmd(&[&SMALL[..], &["--skip-nonfinite"]].concat(), &run)
        .env("MTCOOL_INJECT_NAN_AT_STEP", "3")
        .output()
        .unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().any(|l| l.starts_with("warning: non-finite loss") && l.contains("global step 3")), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 step(s) skipped"));
    assert_eq!(summary(&run)["skipped_steps"], 1);
    let m = mtcool::checkpoint::load(&run.join("model.safetensors")).unwrap();
    assert!(m.store.iter().all(|p| p.value.data().iter().all(|v| v.is_finite())));
}

/// A tiny MultiLeNet run's config, as the CLI builds it.
fn config(optimizer: &str) -> TrainConfig {
    let args =
        ["mtcool", "train", "--task", "multimnist", "--method", "joint", "--optimizer", optimizer, "--width", "0.2"];
    match mtcool::cli::Cli::try_parse_from(args).unwrap().command {
        mtcool::cli::Command::Train(t) => t.config(),
        _ => unreachable!(),
    }
}

#[test]
fn optimiser_state_round_trips_exactly() {
    for kind in ["adam", "sgd"] {
        let cfg = config(kind);
        let mut model = MultiTaskModel::new(cfg.model_config(), 1);
        let mut opt = cfg.optimizer();
        let x = mtcool::Tensor::randn(
            &[2, 1, 28, 28],
            1.0,
            &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2),
        );
        let batch = Batch::new(x, vec![vec![1, 2], vec![3, 4]]);
        let obj = Objective::unweighted(&[TaskSpec::Classify { classes: 10 }; 2]);
        for _ in 0..3 {
            summed_step(&mut model, &mut opt, &batch, &obj).unwrap();
        }
        let pos = Position { epoch: 1, step_in_epoch: 1, global_step: 1, ..Position::default() };
        let bytes = resume::to_bytes(&model, &opt, &cfg, &pos).unwrap();
        let (m2, o2, p2) = resume::from_bytes(&bytes, &cfg, 2).unwrap();
        assert_eq!(o2.export_state().unwrap(), opt.export_state().unwrap(), "{kind:?}");
        assert!(!opt.export_state().unwrap().is_empty());
        for (p, q) in model.store.iter().zip(m2.store.iter()) {
            assert_eq!((&p.name, &p.value), (&q.name, &q.value));
        }
        assert_eq!(p2.global_step, 1);
        // The same bytes each time (sorted header), and a step after the round trip matches.
        assert_eq!(bytes, resume::to_bytes(&m2, &o2, &cfg, &p2).unwrap());
        let (mut m2, mut o2) = (m2, o2);
        summed_step(&mut model, &mut opt, &batch, &obj).unwrap();
        summed_step(&mut m2, &mut o2, &batch, &obj).unwrap();
        assert_eq!(
            model.store.value(model.extractor_params(TaskId(0))[0]),
            m2.store.value(m2.extractor_params(TaskId(0))[0])
        );
        // Another run's config, or a step count past the epoch, is refused.
        assert!(resume::from_bytes(&bytes, &TrainConfig { seed: 9, ..cfg.clone() }, 2).is_err());
        assert!(resume::from_bytes(&bytes, &cfg, 1).is_err());
    }
}

#[test]
fn a_kill_while_a_checkpoint_is_written_leaves_the_previous_one_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(cmd(&SMALL, &a).output().unwrap());
    // Killed half-way through writing step 6's checkpoint (temp file written and synced, not renamed).
    let out = cmd(&SMALL, &b).env(mtcool::checkpoint::KILL_WHILE_WRITING_ENV, "step-6.safetensors").output().unwrap();
    assert!(!out.status.success(), "the hook did not kill the run");
    let ckpt = b.join("ckpt");
    let torn = fs::read_dir(&ckpt)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(".step-6.safetensors.") && n.ends_with(".tmp")
        })
        .expect("no torn temp file: the write did not go through a temp file");
    assert!(fs::metadata(&torn).unwrap().len() > 0);
    assert!(!ckpt.join("step-6.safetensors").exists(), "a torn checkpoint is visible under its final name");
    let kept: Vec<u32> = checkpoints(&b).iter().map(|c| c.0).collect();
    assert_eq!(kept, [4, 2]);
    // Resuming uses step 4 without any warning (nothing torn was ever under a final name), removes the
    // temp file, and ends with the uninterrupted run's weights.
    let out = resume(&b);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.lines().any(|l| l.starts_with("warning:")), "{err}");
    assert!(err.contains("step-4.safetensors"), "{err}");
    assert!(!torn.exists(), "the temp file was not cleaned up");
    assert!(model(&a) == model(&b), "the resumed run's weights differ from the uninterrupted run's");
}
