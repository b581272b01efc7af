//! A data set per task (issue 16, partial labels): with `--disjoint-labels` every image keeps one task's
//! label only; each task draws its batches from its own images, never sees the others' in its loss, and
//! is scored on its own test images.

mod common;

use common::train_config as config;

use common::{assert_eval_reproduces, assert_ok, read_json, run_mtcool as mtcool};
use mtcool::backend::Backend;
use mtcool::model::{Method, MultiTaskModel, Read, TaskId};
use mtcool::mtl::gradient_step::combined_step;
use mtcool::mtl::mtcool::{mtcool_step, Mode, MtCoolConfig};
use mtcool::mtl::{host_value, summed_step, Batch, Objective};
use mtcool::optim::{AdamConfig, Optimizer};
use mtcool::tape::Tape;
use mtcool::train::data::{self, split_validation, TaskData};
use mtcool::train::evaluate;
use mtcool::Tensor;

const SMALL: [&str; 8] = ["--task", "fundus", "--size", "32", "--limit-train", "20", "--limit-test", "10"];

/// Example `i` of a split, as a one-image batch.
fn one(data: &dyn TaskData, i: usize) -> Batch {
    data.batch(&[i])
}

/// Task `t`'s share of a shared split, picked here independently of the library: examples t, t + T, ….
struct Share {
    inner: Box<dyn TaskData>,
    t: usize,
    tasks: usize,
}

impl TaskData for Share {
    fn len(&self) -> usize {
        (self.t..self.inner.len()).step_by(self.tasks).count()
    }
    fn batch(&self, idx: &[usize]) -> Batch {
        self.inner.batch(&idx.iter().map(|&i| self.t + i * self.tasks).collect::<Vec<_>>())
    }
}

#[test]
fn disjoint_labels_deal_each_image_to_one_task_and_batches_draw_from_it() {
    let shared = config(&SMALL);
    let mut flags = SMALL.to_vec();
    flags.push("--disjoint-labels");
    let cfg = config(&flags);
    let (all_train, _) = data::load(&shared.data).unwrap();
    let (train, test) = data::load(&cfg.data).unwrap();
    let sets = train.task_sets().expect("per-task sets");
    assert_eq!(sets.iter().map(|s| s.len()).collect::<Vec<_>>(), [10, 10]);
    assert_eq!(test.task_sets().unwrap().iter().map(|s| s.len()).collect::<Vec<_>>(), [5, 5]);
    for (t, set) in sets.iter().enumerate() {
        for k in 0..set.len() {
            let (own, orig) = (one(set.as_ref(), k), one(all_train.as_ref(), 2 * k + t));
            assert_eq!(own.x.data(), orig.x.data(), "task {t} example {k} is training image {}", 2 * k + t);
            assert_eq!(own.labels[t], orig.labels[t]);
        }
    }
    // A batch gives each task its own images and labels: position i is task t's example i mod n_t.
    let idx = [3, 17, 8, 0];
    let b = train.batch(&idx);
    let xs = b.task_x.as_ref().expect("per-task images");
    for t in 0..2 {
        let own: Vec<usize> = idx.iter().map(|&i| i % 10).collect();
        let want = sets[t].batch(&own);
        assert_eq!(xs[t].data(), want.x.data(), "task {t}'s images");
        assert_eq!(b.labels[t], want.labels[t], "task {t}'s labels");
        assert_eq!(b.images(TaskId(t)).data(), want.x.data());
    }
    assert_ne!(xs[0].data(), xs[1].data(), "the tasks read different images");
    // The validation split is taken from each task's own images.
    let (rest, val) = split_validation(train, 0.2).unwrap();
    let (rest, val) = (rest.task_sets().unwrap(), val.unwrap().task_sets().unwrap());
    for t in 0..2 {
        assert_eq!((rest[t].len(), val[t].len()), (8, 2), "task {t}");
        let own: Vec<Vec<f32>> = (0..10).map(|k| one(sets[t].as_ref(), k).x.data().to_vec()).collect();
        for k in 0..2 {
            assert!(own.contains(&one(val[t].as_ref(), k).x.data().to_vec()), "task {t} validation image {k}");
        }
    }
}

/// Task `t`'s loss on images `x` alone (a shared batch of them), before any step.
fn loss_alone(m: &MultiTaskModel, obj: &Objective, x: &Tensor, labels: &[Vec<u32>], t: usize) -> f32 {
    let b = Batch::new(x.clone(), labels.to_vec());
    let placed = b.place(&Backend::Cpu, obj).unwrap();
    let mut tape = Tape::new();
    let xv = tape.constant(x.clone());
    let logits = m.forward_all(&mut tape, xv, &[Read::Train; 2]).unwrap();
    let l = obj.loss(&mut tape, TaskId(t), logits[t], &placed.targets[t]).unwrap();
    host_value(tape.value(l)).unwrap()
}

#[test]
fn each_task_s_loss_reads_its_own_images_only() {
    let mut flags = SMALL.to_vec();
    flags.push("--disjoint-labels");
    let (train, _) = data::load(&config(&flags).data).unwrap();
    let b = train.batch(&[0, 1, 2, 3]);
    let xs = b.task_x.clone().unwrap();
    // Labels of the other task's shape, for `loss_alone` on task t's images.
    let labels_for = |t: usize| {
        let other = train.task_sets().unwrap()[t].batch(&[0, 1, 2, 3]);
        other.labels
    };
    for method in ["joint", "independent", "pcgrad", "mgda", "graddrop", "mtcool"] {
        let mut f = flags.clone();
        f.extend(["--method", method, "--mode", "vanilla"]);
        let cfg = config(&f);
        let setup = data::setup(&cfg.data);
        let obj = Objective::unweighted(&setup.specs);
        let m0 = MultiTaskModel::new(cfg.model_config(), 3);
        let want: Vec<f32> = (0..2).map(|t| loss_alone(&m0, &obj, &xs[t], &labels_for(t), t)).collect();
        let step = |batch: &Batch| {
            let mut m = MultiTaskModel::new(cfg.model_config(), 3);
            let mut opt = Optimizer::adam(AdamConfig::with_lr(1e-3));
            let out = match (cfg.method, cfg.combiner()) {
                (Method::Mtcool, _) => {
                    let c = MtCoolConfig { mode: Mode::Vanilla, b: 0.0, noise_samples: 1, inner_steps: 1, seed: 0 };
                    mtcool_step(&mut m, &mut opt, batch, &obj, 0, &c)
                }
                (_, Some(c)) => combined_step(&mut m, &mut opt, batch, &obj, &c, 0),
                (_, None) => summed_step(&mut m, &mut opt, batch, &obj),
            };
            out.unwrap().host().unwrap().loss
        };
        let got = step(&b);
        // MT-CooL's task 2 runs after task 1's sub-step moved θ1: only task 1's loss is pre-step.
        let checked = if method == "mtcool" { 1 } else { 2 };
        for t in 0..checked {
            assert!(
                (got[t] - want[t]).abs() <= 1e-5 * want[t].abs(),
                "{method} task {t}: {} vs alone {}",
                got[t],
                want[t]
            );
        }
        // Changing task 2's images leaves task 1's loss as it was (they never enter it) and moves task 2's.
        let mut changed = Batch::per_task(xs.clone(), b.labels.clone());
        changed.task_x.as_mut().unwrap()[1].data_mut().iter_mut().for_each(|v| *v = -*v);
        let c = step(&changed);
        assert_eq!(c[0], got[0], "{method}: task 1's loss read task 2's images");
        assert_ne!(c[1], got[1], "{method}: task 2's loss did not read its images");
    }
}

#[test]
fn a_disjoint_label_run_reports_each_task_on_its_own_test_images() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["mtcool", "joint"] {
        let run = dir.path().join(method);
        let r = run.to_str().unwrap();
        let mut args = vec!["train"];
        args.extend(SMALL);
        args.extend(["--disjoint-labels", "--val-fraction", "0.2", "--epochs", "2", "--method", method, "--out", r]);
        let o = mtcool(&args);
        assert_ok(&o, method);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("(8+8 train / 2+2 validation / 5+5 test)"), "{err}");
        let summary = read_json(&run.join("summary.json"));
        let model = mtcool::checkpoint::load(&run.join("model.safetensors")).unwrap();
        let shared = config(&SMALL);
        let setup = data::setup(&shared.data);
        let (_, full) = data::load(&shared.data).unwrap();
        let on_all = evaluate(&model, full.as_ref(), &setup, 64).unwrap();
        for (t, key) in [(0, "dice_cup"), (1, "acc")] {
            let (_, test) = data::load(&shared.data).unwrap();
            let share = Share { inner: test, t, tasks: 2 };
            let own = evaluate(&model, &share, &setup, 64).unwrap();
            for k in [key, "loss"] {
                let s = summary["metrics"][t][k].as_f64().unwrap();
                assert_eq!(s, own[t][k], "{method} task {t} {k}: summary vs its own 5 test images");
            }
            let s = summary["metrics"][t]["loss"].as_f64().unwrap();
            assert_ne!(s, on_all[t]["loss"], "{method} task {t}: the loss on all 10 test images");
        }
        let n = assert_eval_reproduces(&run);
        assert!(n >= 8, "{n} metrics compared");
    }
}

#[test]
fn a_per_task_run_killed_mid_epoch_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut args: Vec<&str> = vec!["train"];
    args.extend(SMALL);
    args.extend([
        "--disjoint-labels",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "2",
        "--deterministic",
    ]);
    let run = |out: &std::path::Path, kill: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mtcool"));
        c.args(&args).arg("--out").arg(out);
        if let Some(k) = kill {
            c.env(mtcool::checkpoint::KILL_WHILE_WRITING_ENV, k);
        }
        c.output().unwrap()
    };
    assert_ok(&run(&a, None), "uninterrupted");
    // Killed while writing step 4's checkpoint (epoch 2 of 3 steps each: mid-epoch), then resumed.
    assert!(!run(&b, Some("step-4.safetensors")).status.success(), "the hook did not kill the run");
    let o =
        std::process::Command::new(env!("CARGO_BIN_EXE_mtcool")).args(["train", "--resume"]).arg(&b).output().unwrap();
    assert_ok(&o, "resume");
    let weights = |r: &std::path::Path| mtcool::checkpoint::load(&r.join("model.safetensors")).unwrap();
    let (wa, wb) = (weights(&a), weights(&b));
    for (p, q) in wa.store.iter().zip(wb.store.iter()) {
        assert_eq!(p.value.data(), q.value.data(), "{}: the resumed per-task run differs", p.name);
    }
}

#[test]
fn per_task_graddrop_masks_each_task_s_gradient_and_sums_to_the_shared_rule() {
    use mtcool::mtl::combiners::{graddrop_batched, graddrop_per_task};
    let g1: Vec<f32> = (0..24).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let g2: Vec<f32> = (0..24).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
    let a: Vec<f32> = (0..24).map(|i| ((i * 3) % 7) as f32 - 2.0).collect();
    let grads = [g1.as_slice(), g2.as_slice()];
    // One shared activation: the per-task gradients sum to the shared rule's (same draws).
    for leak in [0.0, 0.3] {
        let shared = graddrop_batched(&grads, &a, 4, leak, 9);
        let each = graddrop_per_task(&grads, &[&a, &a], 4, leak, 9);
        for e in 0..24 {
            assert!((each[0][e] + each[1][e] - shared[e]).abs() <= 1e-5, "element {e}");
        }
        // Each output keeps or drops its own task's gradient element (times the leak).
        for (t, g) in grads.iter().enumerate() {
            for e in 0..24 {
                let r = each[t][e];
                assert!(r == g[e] || (r - leak * g[e]).abs() <= 1e-6, "task {t} element {e}: {r} from {}", g[e]);
            }
        }
    }
    // Leak 1 keeps everything.
    let b: Vec<f32> = a.iter().map(|v| -v).collect();
    assert_eq!(graddrop_per_task(&grads, &[&a, &b], 4, 1.0, 9), vec![g1.clone(), g2.clone()]);
}
