//! `mtcool flatness` on tiny synthetic fundus runs (CPU, no data needed): the clean point is exactly
//! the run's test evaluation, the probes perturb the extractor they name (an Independent task never
//! reads the other extractor, so its loss must not move at all), the noise is reproducible from the
//! seed, and the command's errors and files.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{assert_ok, read_json, run_mtcool as mtcool};
use mtcool::backend::Backend;
use mtcool::model::Read;
use mtcool::train::data::{self, TaskKind};
use mtcool::train::flatness::{self, Flatness, LoadedRun, Options, Probe, Row};
use mtcool::train::report::evaluate_pass;
use mtcool::train::EVAL_BATCH;

/// One tiny run per method, trained once for all tests here.
fn run_dir(method: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flatness-runs");
        let _ = std::fs::remove_dir_all(&root);
        for m in ["mtcool", "independent", "joint"] {
            let out = root.join(m);
            let args = ["train", "--task", "fundus", "--size", "32", "--limit-train", "24", "--limit-test", "8"];
            let rest = ["--epochs", "1", "--device", "cpu", "--method", m, "--out", out.to_str().unwrap()];
            assert_ok(&mtcool(&[&args[..], &rest[..]].concat()), &format!("mtcool train --method {m}"));
        }
        root
    });
    root.join(method)
}

fn load(method: &str) -> LoadedRun {
    flatness::load_run(&run_dir(method), None, None, &Backend::Cpu).expect("loading the run")
}

fn opts(radii: &[f32], draws: u32, seed: u64) -> Options {
    Options { radii: radii.to_vec(), draws, seed }
}

fn rows(f: &Flatness, task: usize, probe: Probe) -> impl Iterator<Item = &Row> {
    f.rows.iter().filter(move |r| r.task == task && r.probe == probe)
}

/// Each task's (loss, main metric) of one clean evaluation pass, as `mtcool eval` computes them.
fn clean(run: &LoadedRun) -> [(f64, f64); 2] {
    let setup = data::builtin_setup(TaskKind::Fundus);
    let m = evaluate_pass(&run.model, run.test.as_ref(), &setup, EVAL_BATCH, &[Read::Train; 2]).unwrap();
    let m: Vec<_> = m.iter().map(|a| a.finish()).collect();
    let dice: Vec<f64> = m[0].iter().filter(|(k, _)| k.starts_with("dice_")).map(|(_, v)| *v).collect();
    assert_eq!(dice.len(), 2, "fundus task 1 scores disc and cup: {:?}", m[0]);
    [(m[0]["loss"], dice.iter().sum::<f64>() / 2.0), (m[1]["loss"], m[1]["acc"])]
}

#[test]
fn radius_zero_is_the_clean_test_evaluation() {
    let runs = [load("mtcool")];
    let f = flatness::probe(&runs, &opts(&[0.0, 0.05], 2, 0)).unwrap();
    let want = clean(&runs[0]);
    let summary = read_json(&run_dir("mtcool").join("summary.json"));
    for (t, &(loss, metric)) in want.iter().enumerate() {
        // What training wrote (and `mtcool eval` reproduces) is the same clean loss.
        assert_eq!(summary["metrics"][t]["loss"].as_f64(), Some(loss), "task {}", t + 1);
        for probe in [Probe::Other, Probe::Own] {
            let zero: Vec<&Row> = rows(&f, t + 1, probe).filter(|r| r.r == 0.0).collect();
            assert_eq!(zero.len(), 1);
            let z = zero[0];
            assert_eq!((z.loss.mean, z.metric.mean), (loss, metric), "task {} {probe:?}", t + 1);
            assert_eq!((z.loss.std, z.metric.std, z.loss.values.len()), (0.0, 0.0, 1), "r = 0 is one clean pass");
            assert_eq!(z.metric_name, ["dice", "acc"][t]);
        }
    }
}

#[test]
fn independent_tasks_ignore_the_other_extractor() {
    let runs = [load("independent")];
    let f = flatness::probe(&runs, &opts(&[0.0, 1e-3, 1e-2, 0.1, 1.0], 2, 0)).unwrap();
    let want = clean(&runs[0]);
    for (t, &(loss, metric)) in want.iter().enumerate() {
        let other: Vec<&Row> = rows(&f, t + 1, Probe::Other).filter(|r| r.r > 0.0).collect();
        assert_eq!(other.len(), 4);
        for row in other {
            assert_eq!(row.loss.values.len(), 2);
            // Bit for bit: task t's head reads only its own extractor.
            assert!(row.loss.values.iter().all(|&v| v == loss), "task {} r {}: {:?} vs {loss}", t + 1, row.r, row.loss);
            assert!(row.metric.values.iter().all(|&v| v == metric), "task {} r {}", t + 1, row.r);
        }
        let own = rows(&f, t + 1, Probe::Own).find(|r| r.r == 0.1).unwrap();
        assert!(own.loss.values.iter().all(|&v| v != loss), "task {}: own r = 0.1 left {loss}", t + 1);
    }
}

#[test]
fn mtcool_other_probe_moves_the_loss_and_is_reproducible() {
    let runs = [load("mtcool")];
    let o = opts(&[0.0, 0.5], 2, 0);
    let a = flatness::probe(&runs, &o).unwrap();
    let want = clean(&runs[0]);
    for (t, &(loss, _)) in want.iter().enumerate() {
        let row = rows(&a, t + 1, Probe::Other).find(|r| r.r == 0.5).unwrap();
        assert!(row.loss.values.iter().all(|&v| v != loss), "task {}: other r = 0.5 left {loss}", t + 1);
        assert!(row.loss.values[0] != row.loss.values[1], "two draws, one noise");
    }
    assert_eq!(flatness::probe(&runs, &o).unwrap(), a, "same seed, same numbers");
    let b = flatness::probe(&runs, &opts(&[0.0, 0.5], 2, 1)).unwrap();
    assert!(a.rows.iter().zip(&b.rows).any(|(x, y)| x.loss != y.loss), "another seed, other noise");
    // Runs probed together meet the same perturbations: a run listed twice gives the same rows twice.
    let twice = flatness::probe(&[load("mtcool"), load("mtcool")], &o).unwrap();
    let (first, second) = twice.rows.split_at(twice.rows.len() / 2);
    for (x, y) in first.iter().zip(second) {
        assert_eq!((x.task, x.probe, x.r, &x.loss, &x.metric), (y.task, y.probe, y.r, &y.loss, &y.metric));
    }
}

/// Runs `mtcool flatness` and asserts one `error:` line (and nothing on stdout), containing `want`.
fn assert_error(args: &[&str], want: &str) {
    let out = mtcool(&[&["flatness"][..], args].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: more than one line:\n{err}");
    assert!(err.starts_with("error:") && !err.contains("panicked"), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: {err} lacks {want:?}");
    assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
}

#[test]
fn cli_errors_and_files() {
    let (mt, ind, joint) = (run_dir("mtcool"), run_dir("independent"), run_dir("joint"));
    let (mt, ind) = (mt.to_str().unwrap(), ind.to_str().unwrap());
    assert_error(&["--run", joint.to_str().unwrap()], "method joint");
    assert_error(&["--run", joint.to_str().unwrap()], "mtcool, independent, ctan");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-run");
    assert_error(&["--run", mt, "--run", missing.to_str().unwrap()], "no such folder");
    let no_model = dir.path().join("no-model");
    std::fs::create_dir(&no_model).unwrap();
    std::fs::copy(Path::new(mt).join("config.json"), no_model.join("config.json")).unwrap();
    assert_error(&["--run", no_model.to_str().unwrap()], "model.safetensors");
    for (radii, want) in [("", "empty"), ("0,,1", "empty entry"), ("0,x", "not a number"), ("-0.1", "negative")] {
        assert_error(&["--run", mt, "--radii", radii], want);
    }
    for radii in ["inf", "NaN"] {
        assert_error(&["--run", mt, "--radii", radii], "not finite");
    }
    assert_error(&["--run", mt, "--draws", "0"], "--draws");

    let stem = dir.path().join("out").join("fl");
    let args = ["flatness", "--run", mt, "--run", ind, "--radii", "0.1,0,0.01", "--draws", "2", "--device", "cpu"];
    let out = mtcool(&[&args[..], &["--out", stem.to_str().unwrap()]].concat());
    assert_ok(&out, "mtcool flatness");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| run | task | probe | r |") && stdout.contains("| independent | 2 | own | 0.01 |"),
        "{stdout}"
    );
    let json = read_json(&stem.with_extension("json"));
    assert_eq!(json["radii"], serde_json::json!([0.0, 0.01, 0.1]), "sorted radii");
    assert_eq!(json["rows"].as_array().unwrap().len(), 2 * 2 * 2 * 3);
    assert_eq!((json["runs"][0]["method"].as_str(), json["runs"][0]["b"].as_f64()), (Some("mtcool"), Some(0.002)));
    assert_eq!((json["runs"][1]["method"].as_str(), json["runs"][1]["mode"].is_null()), (Some("independent"), true));
    let md = std::fs::read_to_string(stem.with_extension("md")).unwrap();
    assert!(md.contains("`mtcool flatness --run") && md.contains("radii 0, 0.01, 0.1; 2 noise draw"), "{md}");
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains(">mtcool<") && svg.contains(">independent<") && svg.contains("stroke-dasharray"), "{svg}");

    // Default stem: next to the first run.
    assert_ok(&mtcool(&["flatness", "--run", ind, "--radii", "0", "--device", "cpu"]), "default stem");
    for ext in ["json", "md", "svg"] {
        assert!(Path::new(ind).join(format!("flatness.{ext}")).is_file(), "no flatness.{ext} in the run folder");
    }
}
