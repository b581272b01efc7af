//! The protocol of the published comparisons (issue 15): the validation split, the best validation
//! epoch's weights, the decision threshold chosen on validation, step decay, `--match-params` and
//! `compare`'s rows, `× Joint` column and b sweep. Tiny synthetic fundus runs on the CPU.

mod common;

use common::train_config as config;

use std::path::Path;

use common::{assert_ok, read_json, run_mtcool as mtcool};
use mtcool::metrics::youden_threshold;
use mtcool::model::Read;
use mtcool::train::data::{self, split_validation, validation_indices};
use mtcool::train::{self, evaluate_pass, resume, LrSchedule, TrainConfig, EVAL_BATCH};

const TINY: [&str; 10] =
    ["--task", "fundus", "--size", "32", "--limit-train", "60", "--limit-test", "20", "--epochs", "3"];

#[test]
fn validation_split_is_disjoint_from_training_and_test() {
    for (n, f) in [(60, 0.2), (1000, 0.1), (7, 0.5), (2, 0.01)] {
        let (rest, val) = validation_indices(n, f);
        assert_eq!(val.len(), ((f as f64 * n as f64).round() as usize).clamp(1, n - 1), "n {n} f {f}");
        let mut all: Vec<usize> = rest.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>(), "train ∪ val is the training split, without overlap");
        assert_eq!(validation_indices(n, f), (rest, val), "the split depends on the data alone");
    }
    // On real batches: the validation images are training images and none is a test image.
    let cfg = config(&TINY);
    let (train, test) = data::load(&cfg.data).unwrap();
    let all_train: Vec<Vec<f32>> = (0..train.len()).map(|i| train.batch(&[i]).x.data().to_vec()).collect();
    let (rest, val) = split_validation(train, 0.2).unwrap();
    let val = val.expect("a validation split");
    assert_eq!((rest.len(), val.len()), (48, 12));
    let test_imgs: Vec<Vec<f32>> = (0..test.len()).map(|i| test.batch(&[i]).x.data().to_vec()).collect();
    let rest_imgs: Vec<Vec<f32>> = (0..rest.len()).map(|i| rest.batch(&[i]).x.data().to_vec()).collect();
    for (k, &i) in validation_indices(60, 0.2).1.iter().enumerate() {
        let img = val.batch(&[k]).x.data().to_vec();
        assert_eq!(img, all_train[i], "validation example {k} is training example {i}");
        assert!(!rest_imgs.contains(&img), "validation example {k} is also trained on");
        assert!(!test_imgs.contains(&img), "validation example {k} is a test image");
    }
    // Fraction 0: the training split untouched.
    let (train, _) = data::load(&cfg.data).unwrap();
    let (same, none) = split_validation(train, 0.0).unwrap();
    assert!(none.is_none());
    assert_eq!(same.len(), 60);
}

#[test]
fn youden_threshold_maximises_sensitivity_plus_specificity() {
    // Scores ≥ 0.6 catch every positive and one negative; ≥ 0.7 misses one positive.
    let s = [(0.9, 1), (0.8, 1), (0.7, 0), (0.6, 1), (0.4, 0), (0.2, 0)];
    assert_eq!(youden_threshold(&s), Some(0.6f32 as f64));
    assert_eq!(youden_threshold(&[(0.3, 1), (0.5, 1)]), None, "no negatives: undefined");
}

#[test]
fn best_epoch_threshold_and_weights_come_from_validation() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = run.to_str().unwrap();
    let mut flags = TINY.to_vec();
    flags.extend(["--val-fraction", "0.2", "--keep-checkpoints", "10", "--out", r]);
    let mut argv = vec!["train"];
    argv.extend(&flags);
    assert_ok(&mtcool(&argv), "train with a validation split");
    let summary = read_json(&run.join("summary.json"));
    let cfg: TrainConfig = serde_json::from_value(read_json(&run.join("config.json"))).unwrap();
    let setup = data::setup(&cfg.data);

    // The best epoch is the arg-max of the validation score over metrics.jsonl.
    let history: Vec<train::EpochMetrics> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scores: Vec<f64> = history.iter().map(|m| train::selection_score(m.val.as_ref().unwrap(), &setup)).collect();
    let best = summary["best_epoch"].as_u64().unwrap() as usize;
    let argmax = (0..scores.len()).fold(0, |b, i| if scores[i] > scores[b] { i } else { b });
    assert_eq!(best, argmax + 1, "validation scores {scores:?}");
    assert_eq!(summary["best_metrics"], serde_json::to_value(&history[best - 1].test).unwrap());

    // model-best.safetensors holds exactly the weights of that epoch's end-of-epoch checkpoint.
    let steps_per_epoch = 3; // 48 training examples, batch 16
    let ckpt = resume::ckpt_dir(&run).join(format!("step-{}.safetensors", best * steps_per_epoch));
    let (at_best, _, _) = resume::from_bytes(&std::fs::read(ckpt).unwrap(), &cfg, steps_per_epoch as u32).unwrap();
    let kept = mtcool::checkpoint::load(&run.join("model-best.safetensors")).unwrap();
    let last = mtcool::checkpoint::load(&run.join("model.safetensors")).unwrap();
    for (p, q) in at_best.store.iter().zip(kept.store.iter()) {
        assert_eq!((&p.name, p.value.data()), (&q.name, q.value.data()), "model-best = epoch {best}'s weights");
    }
    if best < history.len() {
        assert!(last.store.iter().zip(kept.store.iter()).any(|(p, q)| p.value.data() != q.value.data()));
    }

    // The glaucoma threshold is the validation split's Youden threshold for the last weights, and
    // the thresholded test metrics are the test scores cut there.
    let (train_set, test_set) = data::load(&cfg.data).unwrap();
    let (_, val) = split_validation(train_set, cfg.val_fraction).unwrap();
    let val = val.unwrap();
    let clean = &[Read::Train, Read::Train];
    let val_pass = evaluate_pass(&last, val.as_ref(), &setup, EVAL_BATCH, clean).unwrap();
    let thr = val_pass[1].threshold().expect("both classes in the validation split");
    assert_eq!(summary["metrics"][1]["threshold"].as_f64().unwrap(), thr);
    let test_pass = evaluate_pass(&last, test_set.as_ref(), &setup, EVAL_BATCH, clean).unwrap();
    let at_thr = test_pass[1].finish_at(Some(thr));
    assert_eq!(summary["metrics"][1]["acc_thr"].as_f64().unwrap(), at_thr["acc_thr"]);
    let own = test_pass[1].threshold();
    eprintln!("validation threshold {thr}, the test split's own would be {own:?}");

    // `mtcool eval --best` reproduces the best epoch's test metrics from model-best.safetensors.
    assert_ok(&mtcool(&["eval", "--run", r, "--best"]), "eval --best");
    let o = mtcool(&["eval", "--run", dir.path().join("nope").to_str().unwrap(), "--best"]);
    assert!(!o.status.success());
}

#[test]
fn step_decay_multiplies_the_rate_every_k_epochs() {
    let cfg = config(&["--lr", "0.01", "--lr-schedule", "step", "--lr-decay", "0.5", "--lr-decay-every", "2"]);
    assert_eq!(cfg.lr_schedule, LrSchedule::Step);
    let spe = 5;
    let at_epoch = |e: u32| cfg.lr_at((e - 1) * spe + 2, spe, 10);
    assert_eq!([1, 2, 3, 4, 5].map(at_epoch), [0.01, 0.01, 0.005, 0.005, 0.0025]);
    let default = config(&["--lr-schedule", "step"]);
    assert_eq!((default.lr_decay, default.lr_decay_every), (0.85, 10), "the MGDA code's decay");
    for bad in [["--lr-decay", "0"], ["--lr-decay", "1.5"], ["--lr-decay-every", "0"], ["--val-fraction", "0.95"]] {
        let mut f = TINY.to_vec();
        f.extend(bad);
        assert!(config(&f).validate().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn match_params_lands_within_two_percent_of_joint() {
    for task in ["fundus", "multimnist"] {
        for method in ["mtcool", "independent", "ctan", "mtan"] {
            let cfg = config(&["--task", task, "--method", method, "--match-params"]);
            let joint = config(&["--task", task, "--method", "joint"]);
            let joint_n = mtcool::model::MultiTaskModel::new(joint.model_config(), 0).param_count();
            let (w, n, j) = match cfg.matched_width() {
                Ok(found) => found,
                // CTAN's attention blocks move its small fundus U-Net's count in steps of ~6 %.
                Err(e) if (task, method) == ("fundus", "ctan") => {
                    assert!(e.to_string().contains("no width brings"), "{e}");
                    continue;
                }
                Err(e) => panic!("{task} {method}: {e}"),
            };
            assert_eq!(j, joint_n);
            let got = cfg.resolved().unwrap();
            assert_eq!(got.width, w);
            assert_eq!(mtcool::model::MultiTaskModel::new(got.model_config(), 0).param_count(), n);
            let off = (n as f64 - j as f64).abs() / j as f64;
            assert!(off <= 0.02, "{task} {method}: width {w} → {n} vs Joint {j}");
        }
    }
    // --match-params and an explicit --width contradict each other.
    let o = mtcool(&["train", "--match-params", "--width", "0.5"]);
    assert!(!o.status.success());
}

fn table_row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    let line = table.lines().find(|l| l.starts_with(&format!("| {name} |"))).unwrap_or_else(|| panic!("{table}"));
    line.split('|').map(str::trim).collect()
}

#[test]
fn compare_rows_take_extra_flags_and_the_joint_column_is_joint_at_width_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let o = out.to_str().unwrap();
    let rows = "joint,mtcool-full+match,mtcool-full+b=1e-4+width=0.7,mtcool-full+b=1e-3+width=0.7,mtcool-full+b=1e-2+width=0.7";
    let args = [
        "compare",
        "--task",
        "fundus",
        "--methods",
        rows,
        "--seeds",
        "1",
        "--out",
        o,
        "--",
        "--epochs",
        "2",
        "--size",
        "32",
        "--limit-train",
        "20",
        "--limit-test",
        "8",
        "--val-fraction",
        "0.25",
    ];
    assert_ok(&mtcool(&args), "compare");
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split('|').map(str::trim).collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    assert_eq!(table_row(&table, "joint")[col("× Joint")], "1.00");
    let matched: f64 = table_row(&table, "mtcool-full+match")[col("× Joint")].parse().unwrap();
    assert!((matched - 1.0).abs() <= 0.025, "{table}"); // 2 % off at most, printed to 2 decimals
    let narrow: f64 = table_row(&table, "mtcool-full+b=1e-3+width=0.7")[col("× Joint")].parse().unwrap();
    assert!(narrow < 1.5, "a width-0.7 MT-CooL against Joint at width 1: {narrow}");
    assert!(table_row(&table, "joint")[col("epochs")].starts_with("best "), "best-epoch table: {table}");
    assert!(out.join("table-last.md").exists());
    for (b, want) in [("1e-4", 1e-4), ("1e-2", 1e-2)] {
        let cfg = read_json(&out.join(format!("mtcool-full+b={b}+width=0.7-s0/config.json")));
        assert!(
            (cfg["b"].as_f64().unwrap() - want).abs() < 1e-9 && (cfg["width"].as_f64().unwrap() - 0.7).abs() < 1e-6
        );
    }
    let svg = std::fs::read_to_string(out.join("b-sweep.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("mtcool-full+width=0.7"), "{svg}");
    let bad = mtcool(&["compare", "--methods", "joint+oops", "--out", o]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither"));
    let _ = Path::new(o);
}
