//! MTAN, CTAN and MT-CooL's attention fusion (src/model/attention.rs):
//! - structure: where the attention parameters live (task heads vs shared), that every parameter gets a
//!   gradient from the summed loss, that CTAN lets each task's logits depend on the other extractor and
//!   MTAN's towers give the tasks different features;
//! - MT-CooL with attention fusion keeps its contract (the other extractor is untouched by a sub-step,
//!   the fusion module trains);
//! - through the binary: a tiny fundus run per new method, a small MultiMNIST run per method above
//!   chance on both tasks (skipped without MNIST, except under CI=true), and `mtcool compare`.

mod common;

use common::{assert_ok, read_json, real_mnist_dir, run_mtcool};
use mtcool::backend::Backend;
use mtcool::model::multitask::{Arch, ModelConfig};
use mtcool::model::{Fusion, Method, MultiTaskModel, Read, TaskId, TaskSpec};
use mtcool::mtl::mtcool::{mtcool_step, Mode, MtCoolConfig};
use mtcool::mtl::{summed_step, Batch, Objective};
use mtcool::optim::{Optimizer, SgdConfig};
use mtcool::params::ParamId;
use mtcool::tape::Tape;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn lenet(method: Method, fusion: Fusion) -> MultiTaskModel {
    MultiTaskModel::new(ModelConfig::multimnist(method, fusion, 0.5), 3)
}

fn unet(method: Method, fusion: Fusion) -> MultiTaskModel {
    let tasks = vec![TaskSpec::Segment { classes: 3 }, TaskSpec::Classify { classes: 2 }];
    MultiTaskModel::new(
        ModelConfig { arch: Arch::Unet { base: 4 }, method, fusion, width: 1.0, in_channels: 3, tasks },
        3,
    )
}

fn lenet_batch(seed: u64) -> (Batch, Objective) {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Tensor::randn(&[5, 1, 28, 28], 1.0, &mut rng);
    let labels = (0..2).map(|_| (0..5).map(|_| rng.random_range(0..10)).collect()).collect();
    (Batch::new(x, labels), Objective::unweighted(&[TaskSpec::Classify { classes: 10 }; 2]))
}

fn unet_batch(seed: u64) -> (Batch, Objective) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (n, s) = (2, 16);
    let x = Tensor::randn(&[n, 3, s, s], 1.0, &mut rng);
    let seg = (0..n * s * s).map(|_| rng.random_range(0..3)).collect();
    let cls = (0..n).map(|_| rng.random_range(0..2)).collect();
    let specs = [TaskSpec::Segment { classes: 3 }, TaskSpec::Classify { classes: 2 }];
    (Batch::new(x, vec![seg, cls]), Objective::unweighted(&specs))
}

fn names(m: &MultiTaskModel, ids: &[ParamId]) -> Vec<String> {
    ids.iter().map(|&id| m.store.get(id).name.clone()).collect()
}

fn values(m: &MultiTaskModel, ids: &[ParamId]) -> Vec<f32> {
    ids.iter().flat_map(|&id| m.store.value(id).data().to_vec()).collect()
}

fn logits(m: &MultiTaskModel, x: &Tensor) -> Vec<Tensor> {
    let mut tape = Tape::new();
    tape.set_grad_enabled(false);
    let xv = tape.constant(x.clone());
    let out = m.forward_all(&mut tape, xv, &[Read::Train, Read::Train]).unwrap();
    out.iter().map(|&v| tape.value(v).clone()).collect()
}

#[test]
fn attention_parameters_belong_to_their_task_or_are_shared() {
    for m in [lenet(Method::Mtan, Fusion::Concat), unet(Method::Mtan, Fusion::Concat)] {
        let all = names(&m, &m.all_params());
        assert!(all.iter().any(|n| n.starts_with("shared.attention.bridge")), "MTAN shares its bridges: {all:?}");
        for t in TaskId::all(2) {
            let own = names(&m, m.head_params(t));
            let prefix = format!("task{}.", t.0 + 1);
            assert!(own.iter().all(|n| n.starts_with(&prefix)), "task {} owns only its own: {own:?}", t.0 + 1);
            assert!(own.iter().any(|n| n.contains(".attention.gate")), "task {} has gates: {own:?}", t.0 + 1);
        }
    }
    for m in [lenet(Method::Ctan, Fusion::Concat), unet(Method::Ctan, Fusion::Concat)] {
        for t in TaskId::all(2) {
            let own = names(&m, m.head_params(t));
            for j in 0..2 {
                let q = format!("task{}.cross{j}.query.weight", t.0 + 1);
                assert!(own.contains(&q), "task {} lacks {q}: {own:?}", t.0 + 1);
            }
        }
    }
    let m = lenet(Method::Mtcool, Fusion::Attention);
    for t in TaskId::all(2) {
        let own = names(&m, m.head_params(t));
        assert!(own.contains(&format!("task{}.fusion.key.weight", t.0 + 1)), "{own:?}");
        // The fusion module is not part of any extractor θ (no noise, no b-box on it).
        let theta = names(&m, m.extractor_params(t));
        assert!(theta.iter().all(|n| n.contains(".extractor.")), "{theta:?}");
    }
}

#[test]
fn every_parameter_gets_a_gradient_from_the_summed_loss() {
    for (m, (b, obj)) in [
        (lenet(Method::Mtan, Fusion::Concat), lenet_batch(1)),
        (lenet(Method::Ctan, Fusion::Concat), lenet_batch(1)),
        (unet(Method::Mtan, Fusion::Concat), unet_batch(1)),
        (unet(Method::Ctan, Fusion::Concat), unet_batch(1)),
    ] {
        let mut m = m;
        let before = values(&m, &m.all_params());
        summed_step(&mut m, &mut Optimizer::sgd(SgdConfig { lr: 0.1, momentum: 0.0, weight_decay: 0.0 }), &b, &obj)
            .unwrap();
        for id in m.all_params() {
            let g = m.store.get(id).grad.data();
            assert!(g.iter().any(|&v| v != 0.0), "{:?}: no gradient reached {}", m.cfg.method, m.store.get(id).name);
            assert!(g.iter().all(|v| v.is_finite()), "{}: non-finite gradient", m.store.get(id).name);
        }
        assert_ne!(before, values(&m, &m.all_params()));
    }
}

#[test]
fn ctan_logits_of_each_task_depend_on_the_other_extractor() {
    let mut m = lenet(Method::Ctan, Fusion::Concat);
    let x = lenet_batch(2).0.x;
    let before = logits(&m, &x);
    // Perturb task 2's extractor only: task 1's logits change (cross attention), and vice versa.
    for id in m.extractor_params(TaskId(1)).to_vec() {
        m.store.get_mut(id).value.data_mut().iter_mut().for_each(|v| *v *= 1.5);
    }
    let after = logits(&m, &x);
    assert_ne!(before[0], after[0], "task 1 does not read task 2's extractor");
    let ind = lenet(Method::Independent, Fusion::Concat);
    let mut ind2 = lenet(Method::Independent, Fusion::Concat);
    for id in ind2.extractor_params(TaskId(1)).to_vec() {
        ind2.store.get_mut(id).value.data_mut().iter_mut().for_each(|v| *v *= 1.5);
    }
    assert_eq!(logits(&ind, &x)[0], logits(&ind2, &x)[0], "control: Independent's task 1 is unaffected");
}

#[test]
fn mtan_towers_give_the_tasks_different_features_from_one_extractor() {
    let mut m = lenet(Method::Mtan, Fusion::Concat);
    assert_eq!(m.extractor_params(TaskId(0)), m.extractor_params(TaskId(1)), "one shared extractor");
    let x = lenet_batch(3).0.x;
    let before = logits(&m, &x);
    // Task 2's gates change task 2's logits only.
    let gates: Vec<ParamId> = m
        .head_params(TaskId(1))
        .iter()
        .copied()
        .filter(|&id| m.store.get(id).name.contains(".attention.gate"))
        .collect();
    assert!(!gates.is_empty());
    for id in gates {
        m.store.get_mut(id).value.data_mut().iter_mut().for_each(|v| *v = -*v);
    }
    let after = logits(&m, &x);
    assert_eq!(before[0], after[0], "task 1 does not depend on task 2's gates");
    assert_ne!(before[1], after[1], "task 2's gates act");
}

#[test]
fn mtcool_with_attention_fusion_keeps_the_other_extractor_and_trains_the_fusion() {
    for (m, (b, obj)) in [
        (lenet(Method::Mtcool, Fusion::Attention), lenet_batch(4)),
        (unet(Method::Mtcool, Fusion::Attention), unet_batch(4)),
    ] {
        let mut m = m;
        let theta2 = values(&m, m.extractor_params(TaskId(1)));
        let fusion1: Vec<ParamId> =
            m.head_params(TaskId(0)).iter().copied().filter(|&id| m.store.get(id).name.contains(".fusion.")).collect();
        let f1 = values(&m, &fusion1);
        let cfg = MtCoolConfig { mode: Mode::Full, b: 1e-2, noise_samples: 1, inner_steps: 1, seed: 5 };
        let mut opt = Optimizer::sgd(SgdConfig { lr: 0.05, momentum: 0.0, weight_decay: 0.0 });
        let placed = b.place(&Backend::Cpu, &obj).unwrap();
        mtcool::mtl::mtcool::task_substep(&mut m, &mut opt, &placed.x, &placed.targets, &obj, 0, &cfg, TaskId(0))
            .unwrap();
        assert_eq!(theta2, values(&m, m.extractor_params(TaskId(1))), "task 1's sub-step moved θ2");
        assert_ne!(f1, values(&m, &fusion1), "task 1's fusion attention did not train");
        let s = mtcool_step(&mut m, &mut opt, &b, &obj, 1, &cfg).unwrap().host().unwrap();
        assert!(s.loss.iter().all(|l| l.is_finite()));
    }
}

// ------------------------------------------------------------------------------------ through the binary

const NEW_ROWS: [(&str, &[&str]); 3] = [
    ("mtan", &["--method", "mtan"]),
    ("ctan", &["--method", "ctan"]),
    ("mtcool-attention", &["--method", "mtcool", "--fusion", "attention"]),
];

#[test]
fn each_new_method_trains_on_synthetic_fundus_and_reevaluates() {
    let dir = tempfile::tempdir().unwrap();
    for (name, flags) in NEW_ROWS {
        let run = dir.path().join(name);
        let r = run.to_str().unwrap();
        let mut args = vec!["train", "--task", "fundus", "--size", "32", "--limit-train", "16", "--limit-test", "8"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--epochs", "1", "--device", "cpu", "--out", r]);
        assert_ok(&run_mtcool(&args), name);
        let s = read_json(&run.join("summary.json"));
        assert!(s["metrics"][0]["dice_disc"].as_f64().is_some_and(f64::is_finite), "{name}: {s}");
        assert!(common::assert_eval_reproduces(&run) >= 6, "{name}: too few metrics compared");
    }
}

#[test]
fn each_new_method_beats_chance_on_multimnist() {
    let Some(mnist) = real_mnist_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, flags) in NEW_ROWS {
        let run = dir.path().join(name);
        let mut args = vec!["train", "--task", "multimnist", "--data", mnist.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[
            "--limit-train",
            "3000",
            "--limit-test",
            "1000",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--out",
            run.to_str().unwrap(),
        ]);
        assert_ok(&run_mtcool(&args), name);
        let s = read_json(&run.join("summary.json"));
        for t in 0..2 {
            let acc = s["metrics"][t]["acc"].as_f64().unwrap();
            // Chance is 0.10; 2 epochs on 3000 pairs reach 0.3–0.45 for every method.
            assert!(acc > 0.2, "{name}: task {} accuracy {acc}", t + 1);
        }
    }
}

#[test]
fn compare_writes_the_table_and_resumes_without_retraining() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let o = out.to_str().unwrap();
    let flags = ["--", "--size", "32", "--limit-train", "8", "--limit-test", "8", "--epochs", "1", "--device", "cpu"];
    let mut args = vec!["compare", "--task", "fundus", "--methods", "joint,mtan,mtcool-noreg", "--seeds", "2"];
    args.extend_from_slice(&["--out", o]);
    args.extend_from_slice(&flags);
    let first = run_mtcool(&args);
    assert_ok(&first, "compare");
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 3, "header, rule, 3 rows:\n{table}");
    assert!(lines[0].contains("disc Dice") && lines[0].contains("Sen@Spe85") && lines[0].contains("× Joint"));
    assert!(lines[2].starts_with("| joint |") && lines[2].contains("| 1.00 | 2 | 1 |"), "{}", lines[2]);
    assert!(lines[4].starts_with("| mtcool-noreg |"));
    let raw = read_json(&out.join("results.json"));
    assert_eq!(raw[1]["name"], "mtan");
    assert_eq!(raw[1]["runs"].as_array().unwrap().len(), 2);
    assert_eq!(raw[1]["runs"][1]["seed"], 1);
    assert_eq!(read_json(&out.join("mtcool-noreg-s1/config.json"))["mode"], "noreg");
    // A second call finds every summary.json and trains nothing: same table, no new run output.
    let stamp = std::fs::metadata(out.join("joint-s0/summary.json")).unwrap().modified().unwrap();
    let again = run_mtcool(&args);
    assert_ok(&again, "compare again");
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), table);
    assert_eq!(std::fs::metadata(out.join("joint-s0/summary.json")).unwrap().modified().unwrap(), stamp);
    // A finished run whose summary lacks a column's metric (written before the metric existed) is
    // re-evaluated from its checkpoint for the table; its summary.json is left as it was.
    let path = out.join("mtan-s0/summary.json");
    let mut s = read_json(&path);
    s["metrics"][1].as_object_mut().unwrap().remove("sen_at_spe85");
    std::fs::write(&path, serde_json::to_string(&s).unwrap()).unwrap();
    let before = std::fs::read(&path).unwrap();
    assert_ok(&run_mtcool(&args), "compare with an old summary");
    assert_eq!(std::fs::read_to_string(out.join("table.md")).unwrap(), table, "same table after re-evaluation");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Bad rows and flags are one-line errors.
    for bad in [&["--methods", "joint,nope"][..], &["--methods", "joint,"], &["--seeds", "0"]] {
        let mut a = vec!["compare", "--task", "fundus", "--out", o];
        a.extend_from_slice(bad);
        let r = run_mtcool(&a);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success() && err.trim_end().lines().count() == 1 && err.starts_with("error:"),
            "{bad:?}: {err}"
        );
    }
    let r = run_mtcool(&["compare", "--task", "fundus", "--out", o, "--", "--seed", "4"]);
    assert!(!r.status.success() && String::from_utf8_lossy(&r.stderr).contains("--seed"));
}
