//! The gradient-combination methods (pcgrad, cagrad, mgda = MGDA-UB, graddrop) as training steps and
//! end to end:
//! - in process, one `combined_step` against gradients computed the plain way (a full tape per task):
//!   the θ_s gradient it writes is the combiner's result, every head gets its own task's gradient, and
//!   GradDrop with leak 1 / CAGrad with c = 0 reduce to the summed step;
//! - through the binary, a tiny synthetic fundus run per method (no download) with finite metrics, and a
//!   small MultiMNIST run per method above chance on both tasks (skipped without MNIST, except under
//!   CI=true, where that is a failure).

mod common;

use common::{assert_ok, read_json, real_mnist_dir, run_mtcool};

use mtcool::backend::Backend;
use mtcool::data::mnist::default_mnist_dir;
use mtcool::model::multitask::ModelConfig;
use mtcool::model::{Fusion, Method, MultiTaskModel, Read, TaskId, TaskSpec};
use mtcool::mtl::combiners::{self, MgdaNorm};
use mtcool::mtl::gradient_step::{combined_step, flat_grads, step_seed, Combiner};
use mtcool::mtl::{summed_step, Batch, Objective};
use mtcool::optim::{Optimizer, SgdConfig};
use mtcool::params::ParamId;
use mtcool::tape::Tape;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn model(method: Method) -> MultiTaskModel {
    MultiTaskModel::new(ModelConfig::multimnist(method, Fusion::Concat, 0.5), 7)
}

fn batch(seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Tensor::randn(&[6, 1, 28, 28], 1.0, &mut rng);
    let labels = (0..2).map(|_| (0..6).map(|_| rng.random_range(0..10)).collect()).collect();
    Batch::new(x, labels)
}

fn obj() -> Objective {
    Objective::unweighted(&[TaskSpec::Classify { classes: 10 }; 2])
}

fn sgd(lr: f32) -> Optimizer {
    Optimizer::sgd(SgdConfig { lr, momentum: 0.0, weight_decay: 0.0 })
}

fn values(m: &MultiTaskModel, ids: &[ParamId]) -> Vec<f32> {
    ids.iter().flat_map(|&id| m.store.value(id).data().to_vec()).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    let err = got.iter().zip(want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-4 * scale, "{what}: max abs error {err} (scale {scale})");
}

/// Reference gradients the plain way, on untouched parameters: per task, a full tape and backward(L_t).
/// Returns (per-task θ_s gradients, per-task head gradients, per-task ∇_Z, losses).
#[allow(clippy::type_complexity)]
fn reference(m: &mut MultiTaskModel, b: &Batch) -> ([Vec<f32>; 2], [Vec<f32>; 2], [Vec<f32>; 2], [f64; 2]) {
    let shared = m.extractor_params(TaskId(0)).to_vec();
    let all = m.all_params();
    let mut theta = [vec![], vec![]];
    let mut heads = [vec![], vec![]];
    let mut gz = [vec![], vec![]];
    let mut losses = [0.0; 2];
    for t in TaskId::all(2) {
        m.store.zero_grad(&all).unwrap();
        let mut tape = Tape::new();
        let x = tape.constant(b.x.clone());
        let z = m.forward_features(&mut tape, x, Read::Train).unwrap();
        let logits = m.forward_heads(&mut tape, z).unwrap();
        let placed = b.place(&Backend::Cpu, &obj()).unwrap();
        let l = obj().loss(&mut tape, t, logits[t.0], &placed.targets[t.0]).unwrap();
        losses[t.0] = tape.value(l).item() as f64;
        let g = tape.backward(l).unwrap();
        gz[t.0] = g.get(z).unwrap().data().to_vec();
        g.accumulate_into(&mut m.store).unwrap();
        theta[t.0] = flat_grads(&m.store, &shared).unwrap();
        heads[t.0] = flat_grads(&m.store, m.head_params(t)).unwrap();
    }
    m.store.zero_grad(&all).unwrap();
    (theta, heads, gz, losses)
}

/// The θ_s gradient the reference way for a Z-level rule: backward of the features seeded with `dz`.
fn reference_theta_from_z(m: &mut MultiTaskModel, b: &Batch, dz: &[f32]) -> Vec<f32> {
    let shared = m.extractor_params(TaskId(0)).to_vec();
    m.store.zero_grad(&m.all_params()).unwrap();
    let mut tape = Tape::new();
    let x = tape.constant(b.x.clone());
    let z = m.forward_features(&mut tape, x, Read::Train).unwrap();
    let shape = tape.value(z).shape().to_vec();
    tape.backward_with(z, Tensor::new(&shape, dz.to_vec()).unwrap()).unwrap().accumulate_into(&mut m.store).unwrap();
    let g = flat_grads(&m.store, &shared).unwrap();
    m.store.zero_grad(&m.all_params()).unwrap();
    g
}

#[test]
fn combined_step_writes_the_combined_shared_gradient_and_each_heads_own() {
    let b = batch(1);
    let step = 3;
    let cases = [
        (Method::Pcgrad, Combiner::Pcgrad { seed: 5 }),
        (Method::Cagrad, Combiner::Cagrad { c: 0.5 }),
        (Method::Mgda, Combiner::Mgda { norm: MgdaNorm::LossPlus, upper_bound: true }),
        (Method::Mgda, Combiner::Mgda { norm: MgdaNorm::None, upper_bound: false }),
        (Method::Graddrop, Combiner::Graddrop { leak: 0.0, seed: 5 }),
        (Method::Graddrop, Combiner::Graddrop { leak: 0.3, seed: 9 }),
    ];
    for (method, combiner) in cases {
        let mut m = model(method);
        let (theta, heads, gz, losses) = reference(&mut m, &b);
        let th: Vec<&[f32]> = theta.iter().map(|v| v.as_slice()).collect();
        let zs: Vec<&[f32]> = gz.iter().map(|v| v.as_slice()).collect();
        let want_theta = match combiner {
            Combiner::Pcgrad { seed } => combiners::pcgrad(&th, step_seed(seed, step)),
            Combiner::Cagrad { c } => combiners::cagrad(&th, c),
            Combiner::Mgda { norm, upper_bound: false } => combiners::mgda(&th, &losses, norm),
            Combiner::Mgda { norm, upper_bound: true } => {
                // MGDA-UB: α from ∇_Z; the θ_s gradient is that of α1 L1 + α2 L2.
                let a = combiners::mgda_weights(&zs, &losses, norm);
                assert!(a[0] > 0.0 && a[1] > 0.0 && (a[0] + a[1] - 1.0).abs() < 1e-9);
                combiners::weighted_sum(&th, &a)
            }
            Combiner::Graddrop { leak, seed } => {
                let mut tape = Tape::new();
                let x = tape.constant(b.x.clone());
                let z = m.forward_features(&mut tape, x, Read::Train).unwrap();
                let bsz = tape.value(z).shape()[0];
                let dz = combiners::graddrop_batched(&zs, tape.value(z).data(), bsz, leak, step_seed(seed, step));
                reference_theta_from_z(&mut m, &b, &dz)
            }
        };
        let s = combined_step(&mut m, &mut sgd(0.01), &b, &obj(), &combiner, step).unwrap().host().unwrap();
        assert!((s.loss[0] as f64 - losses[0]).abs() < 1e-6 && (s.loss[1] as f64 - losses[1]).abs() < 1e-6);
        let shared = m.extractor_params(TaskId(0)).to_vec();
        assert_close(&flat_grads(&m.store, &shared).unwrap(), &want_theta, &format!("{combiner:?}: θ_s gradient"));
        for t in TaskId::all(2) {
            assert_close(
                &flat_grads(&m.store, m.head_params(t)).unwrap(),
                &heads[t.0],
                &format!("{combiner:?}: head {} gradient", t.0 + 1),
            );
        }
    }
}

#[test]
fn graddrop_with_leak_one_and_cagrad_with_c_zero_reduce_to_the_summed_step() {
    let b = batch(2);
    // GradDrop with ℓ = 1 drops nothing: ∇_Z = ∇_Z L1 + ∇_Z L2, i.e. the summed step exactly.
    let mut joint = model(Method::Joint);
    let mut gd = model(Method::Graddrop);
    assert_eq!(values(&joint, &joint.all_params()), values(&gd, &gd.all_params()), "same architecture and init");
    summed_step(&mut joint, &mut sgd(0.1), &b, &obj()).unwrap();
    combined_step(&mut gd, &mut sgd(0.1), &b, &obj(), &Combiner::Graddrop { leak: 1.0, seed: 0 }, 0).unwrap();
    assert_close(&values(&gd, &gd.all_params()), &values(&joint, &joint.all_params()), "graddrop ℓ=1 vs summed");

    // CAGrad with c = 0 steps θ_s along the average gradient: lr 0.2 on the average = lr 0.1 on the sum.
    let mut joint = model(Method::Joint);
    let mut ca = model(Method::Cagrad);
    summed_step(&mut joint, &mut sgd(0.1), &b, &obj()).unwrap();
    combined_step(&mut ca, &mut sgd(0.2), &b, &obj(), &Combiner::Cagrad { c: 0.0 }, 0).unwrap();
    let shared = joint.extractor_params(TaskId(0)).to_vec();
    assert_close(&values(&ca, &shared), &values(&joint, &shared), "cagrad c=0 θ_s vs summed");
}

#[test]
fn combined_steps_are_deterministic_and_move_every_part() {
    for combiner in [
        Combiner::Pcgrad { seed: 1 },
        Combiner::Cagrad { c: 0.5 },
        Combiner::Mgda { norm: MgdaNorm::L2, upper_bound: true },
        Combiner::Graddrop { leak: 0.0, seed: 1 },
    ] {
        let run = || {
            let mut m = model(Method::Graddrop);
            let mut opt = Optimizer::adam(mtcool::optim::AdamConfig::with_lr(1e-3));
            for step in 0..2 {
                combined_step(&mut m, &mut opt, &batch(step as u64), &obj(), &combiner, step).unwrap();
            }
            m
        };
        let (a, b) = (run(), run());
        let start = model(Method::Graddrop);
        assert_eq!(values(&a, &a.all_params()), values(&b, &b.all_params()), "{combiner:?}: not reproducible");
        for ids in [a.extractor_params(TaskId(0)), a.head_params(TaskId(0)), a.head_params(TaskId(1))] {
            assert_ne!(values(&a, ids), values(&start, ids), "{combiner:?}: a part did not move");
        }
    }
}

// ------------------------------------------------------------------------------------ through the binary

const METHODS: [&str; 4] = ["pcgrad", "cagrad", "mgda", "graddrop"];

#[test]
fn each_method_trains_on_synthetic_fundus_with_finite_metrics() {
    let dir = tempfile::tempdir().unwrap();
    for m in METHODS {
        let run = dir.path().join(m);
        let r = run.to_str().unwrap();
        let o = run_mtcool(&[
            "train",
            "--task",
            "fundus",
            "--method",
            m,
            "--size",
            "32",
            "--limit-train",
            "32",
            "--limit-test",
            "16",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            r,
        ]);
        assert_ok(&o, m);
        let s = read_json(&run.join("summary.json"));
        assert_eq!(s["method"], m);
        let metrics = read_json(&run.join("metrics.jsonl"));
        for t in 0..2 {
            let loss = metrics["train_loss"][t].as_f64();
            assert!(loss.is_some_and(f64::is_finite), "{m}: task {} train loss {loss:?}", t + 1);
            for key in ["dice_cup", "dice_disc", "acc"] {
                if let Some(v) = s["metrics"][t].get(key) {
                    assert!(v.as_f64().is_some_and(f64::is_finite), "{m}: task {} {key} = {v}", t + 1);
                }
            }
        }
        assert!(s["metrics"][0]["dice_cup"].is_number() && s["metrics"][1]["acc"].is_number(), "{m}: {s}");
        assert!(common::assert_eval_reproduces(&run) >= 6, "{m}: too few metrics compared");
    }
}

#[test]
fn combiner_options_are_recorded_and_old_configs_still_parse() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("opts");
    let o = run_mtcool(&[
        "train",
        "--task",
        "fundus",
        "--method",
        "cagrad",
        "--cagrad-c",
        "0.25",
        "--mgda-norm",
        "l2",
        "--graddrop-leak",
        "0.5",
        "--size",
        "32",
        "--limit-train",
        "4",
        "--limit-test",
        "4",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_ok(&o, "cagrad with options");
    let cfg = read_json(&run.join("config.json"));
    assert_eq!(cfg["method"], "cagrad");
    assert_eq!(cfg["cagrad_c"], 0.25);
    assert_eq!(cfg["mgda_norm"], "l2");
    assert_eq!(cfg["graddrop_leak"], 0.5);
    // A config.json from before these options parses, with the defaults.
    let mut old = cfg.clone();
    for k in ["cagrad_c", "mgda_norm", "graddrop_leak"] {
        old.as_object_mut().unwrap().remove(k);
    }
    let parsed: mtcool::train::TrainConfig = serde_json::from_value(old).expect("old config.json parses");
    assert_eq!((parsed.cagrad_c, parsed.mgda_norm, parsed.graddrop_leak), (0.5, MgdaNorm::LossPlus, 0.0));
    let never = dir.path().join("never");
    let loss_plus = run_mtcool(&[
        "train",
        "--method",
        "mgda",
        "--mgda-norm",
        "loss+",
        "--epochs",
        "0",
        "--out",
        never.to_str().unwrap(),
    ]);
    assert!(!String::from_utf8_lossy(&loss_plus.stderr).contains("invalid value"), "loss+ is a valid --mgda-norm");
    // Out-of-range options are one-line errors.
    for args in [&["--cagrad-c", "1.0"][..], &["--graddrop-leak", "1.5"], &["--mgda-norm", "l3"]] {
        let mut a = vec!["train", "--method", "pcgrad", "--out"];
        let bad = dir.path().join("bad");
        a.push(bad.to_str().unwrap());
        a.extend_from_slice(args);
        let o = run_mtcool(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.trim_end().lines().count() == 1 && err.starts_with("error:"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn each_method_beats_chance_on_multimnist() {
    if real_mnist_dir().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = default_mnist_dir();
    for m in METHODS {
        let run = dir.path().join(m);
        let o = run_mtcool(&[
            "train",
            "--task",
            "multimnist",
            "--method",
            m,
            "--limit-train",
            "2000",
            "--limit-test",
            "500",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--lr",
            "2e-3",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]);
        assert_ok(&o, m);
        let s = read_json(&run.join("summary.json"));
        let acc: Vec<f64> = (0..2).map(|t| s["metrics"][t]["acc"].as_f64().unwrap()).collect();
        assert!(acc.iter().all(|&a| a > 0.3), "{m}: accuracy {acc:?} not above chance (0.1) by a margin");
    }
}
