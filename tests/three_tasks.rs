//! T = 3 (issue 16): the MT-CooL step over three tasks — in task i's sub-step every other extractor
//! and head stays put while task i's own parameters move, its extractor inside the b-box, each other
//! extractor read with its own noise — and every method trains the built-in three-task job.

mod common;

use common::{assert_ok, read_json, run_mtcool as mtcool};
use mtcool::backend::Backend;
use mtcool::model::multitask::{Arch, ModelConfig};
use mtcool::model::{Fusion, Method, MultiTaskModel, Read, TaskId, TaskSpec};
use mtcool::mtl::mtcool::{task_substep, Mode, MtCoolConfig};
use mtcool::mtl::{Batch, Objective};
use mtcool::noise::{stream, NoiseKey};
use mtcool::optim::{Optimizer, SgdConfig};
use mtcool::params::ParamId;
use mtcool::tape::Tape;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SPECS: [TaskSpec; 3] =
    [TaskSpec::Segment { classes: 3 }, TaskSpec::Segment { classes: 2 }, TaskSpec::Classify { classes: 2 }];

fn model(fusion: Fusion) -> MultiTaskModel {
    let cfg = ModelConfig {
        arch: Arch::Unet { base: 4 },
        method: Method::Mtcool,
        fusion,
        width: 1.0,
        in_channels: 3,
        tasks: SPECS.to_vec(),
    };
    MultiTaskModel::new(cfg, 5)
}

fn batch(seed: u64) -> Batch {
    let mut rng = StdRng::seed_from_u64(seed);
    let (n, s) = (2, 16);
    let x = Tensor::randn(&[n, 3, s, s], 1.0, &mut rng);
    let labels = vec![
        (0..n * s * s).map(|_| rng.random_range(0..3)).collect(),
        (0..n * s * s).map(|_| rng.random_range(0..2)).collect(),
        (0..n).map(|_| rng.random_range(0..2)).collect(),
    ];
    Batch::new(x, labels)
}

fn values(m: &MultiTaskModel, ids: &[ParamId]) -> Vec<Tensor> {
    ids.iter().map(|&id| m.store.value(id).clone()).collect()
}

fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter().zip(b).flat_map(|(x, y)| x.data().iter().zip(y.data()).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

#[test]
fn each_substep_moves_only_its_task_and_boxes_its_extractor() {
    for fusion in [Fusion::Concat, Fusion::Add, Fusion::Attention] {
        let mut m = model(fusion);
        assert_eq!(m.n_tasks(), 3);
        let obj = Objective::unweighted(&SPECS);
        let b = 1e-3;
        let mut opt = Optimizer::sgd(SgdConfig { lr: 0.5, momentum: 0.0, weight_decay: 0.0 });
        let b1 = batch(1);
        let placed = b1.place(&Backend::Cpu, &obj).unwrap();
        let cfg = MtCoolConfig { mode: Mode::Full, b, noise_samples: 1, inner_steps: 1, seed: 9 };
        for i in TaskId::all(3) {
            let extractors: Vec<_> = TaskId::all(3).map(|t| values(&m, m.extractor_params(t))).collect();
            let heads: Vec<_> = TaskId::all(3).map(|t| values(&m, m.head_params(t))).collect();
            task_substep(&mut m, &mut opt, &placed.x, &placed.targets, &obj, 0, &cfg, i).unwrap();
            for o in i.others(3) {
                let what = format!("{fusion:?}: task {}'s sub-step", i.0 + 1);
                assert_eq!(values(&m, m.extractor_params(o)), extractors[o.0], "{what} moved θ{}", o.0 + 1);
                assert_eq!(values(&m, m.head_params(o)), heads[o.0], "{what} moved φ{}", o.0 + 1);
            }
            let moved = max_abs_diff(&values(&m, m.extractor_params(i)), &extractors[i.0]);
            assert!(moved <= b * (1.0 + 1e-5), "θ{} moved {moved} > b", i.0 + 1);
            assert!(moved > 0.5 * b, "θ{} barely moved ({moved}): the box was not tested", i.0 + 1);
            assert!(max_abs_diff(&values(&m, m.head_params(i)), &heads[i.0]) > b, "φ{} is not clamped", i.0 + 1);
        }
    }
}

#[test]
fn the_other_extractors_get_their_own_noise() {
    // Task 1's logits with θ2 and θ3 both perturbed by their own streams differ from those with the
    // same draw on both, and from those with only one perturbed: each stream reaches its extractor.
    let m = model(Fusion::Concat);
    let x = batch(2).x;
    let logits = |reads: &[Read]| {
        let mut tape = Tape::new();
        tape.set_grad_enabled(false);
        let xv = tape.constant(x.clone());
        let l = m.forward_task(&mut tape, xv, TaskId(0), reads).unwrap();
        tape.value(l).clone()
    };
    let key = |t: usize| Read::Frozen(Some((NoiseKey { seed: 1, step: 0, stream: stream::task(t), sample: 0 }, 0.05)));
    let own = logits(&[Read::Train, key(1), key(2)]);
    let shared = logits(&[Read::Train, key(1), key(1)]);
    let one = logits(&[Read::Train, key(1), Read::Frozen(None)]);
    let clean = logits(&[Read::Train, Read::Frozen(None), Read::Frozen(None)]);
    assert_ne!(own.data(), shared.data());
    assert_ne!(own.data(), one.data());
    assert_ne!(one.data(), clean.data());
    assert_eq!((stream::task(0), stream::task(1)), (stream::TASK1, stream::TASK2), "two-task streams kept");
}

#[test]
fn every_method_trains_the_three_task_job() {
    let dir = tempfile::tempdir().unwrap();
    for method in ["mtcool", "independent", "joint", "pcgrad", "cagrad", "mgda", "graddrop", "mtan", "ctan"] {
        let run = dir.path().join(method);
        let r = run.to_str().unwrap();
        let args = [
            "train",
            "--task",
            "fundus3",
            "--method",
            method,
            "--size",
            "32",
            "--limit-train",
            "16",
            "--limit-test",
            "8",
            "--epochs",
            "1",
            "--out",
            r,
        ];
        assert_ok(&mtcool(&args), method);
        let s = read_json(&run.join("summary.json"));
        let metrics = s["metrics"].as_array().unwrap();
        assert_eq!(metrics.len(), 3, "{method}: one metric set per task");
        assert!(metrics[0]["dice_cup"].is_number() && metrics[1]["dice_vessel"].is_number());
        assert!(metrics[2]["auroc"].is_number() || metrics[2]["acc"].is_number());
        assert_ok(&mtcool(&["eval", "--run", r]), "eval");
    }
    let o = mtcool(&["train", "--task", "fundus3", "--data", dir.path().to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("synthetic data only"));
}
