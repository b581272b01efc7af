//! The MT-CooL step itself: who moves, the b-box, noise on/off, determinism.

use mtcool::backend::Backend;
use mtcool::model::multitask::ModelConfig;
use mtcool::model::{Fusion, Method, MultiTaskModel, TaskId, TaskSpec};
use mtcool::mtl::mtcool::{mtcool_step, task_substep, Mode, MtCoolConfig};
use mtcool::mtl::{Batch, Objective};
use mtcool::optim::{AdamConfig, Optimizer, SgdConfig};
use mtcool::params::ParamId;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn model(fusion: Fusion) -> MultiTaskModel {
    MultiTaskModel::new(ModelConfig::multimnist(Method::Mtcool, fusion, 0.5), 11)
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

fn cfg(mode: Mode, b: f32, seed: u64) -> MtCoolConfig {
    MtCoolConfig { mode, b, noise_samples: 1, inner_steps: 1, seed }
}

fn values(m: &MultiTaskModel, ids: &[ParamId]) -> Vec<Tensor> {
    ids.iter().map(|&id| m.store.value(id).clone()).collect()
}

fn max_abs_diff(a: &[Tensor], b: &[Tensor]) -> f32 {
    a.iter().zip(b).flat_map(|(x, y)| x.data().iter().zip(y.data()).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

fn sgd(lr: f32) -> Optimizer {
    Optimizer::sgd(SgdConfig { lr, momentum: 0.0, weight_decay: 0.0 })
}

#[test]
fn task1_substep_moves_theta1_and_phi1_only() {
    let mut m = model(Fusion::Concat);
    let (t1, t2) = (TaskId(0), TaskId(1));
    let theta2 = values(&m, m.extractor_params(t2));
    let phi2 = values(&m, m.head_params(t2));
    let theta1 = values(&m, m.extractor_params(t1));
    let phi1 = values(&m, m.head_params(t1));
    let mut opt = sgd(0.1);
    let b = batch(1);
    let placed = b.place(&Backend::Cpu, &obj()).unwrap();
    task_substep(&mut m, &mut opt, &placed.x, &placed.targets, &obj(), 0, &cfg(Mode::Full, 0.05, 3), t1).unwrap();
    assert_eq!(values(&m, m.extractor_params(t2)), theta2, "θ2 changed during task 1's sub-step");
    assert_eq!(values(&m, m.head_params(t2)), phi2, "φ2 changed during task 1's sub-step");
    assert!(max_abs_diff(&values(&m, m.extractor_params(t1)), &theta1) > 0.0, "θ1 did not move");
    assert!(max_abs_diff(&values(&m, m.head_params(t1)), &phi1) > 0.0, "φ1 did not move");
}

#[test]
fn full_mode_keeps_each_extractor_in_its_box_and_leaves_heads_free() {
    for fusion in [Fusion::Concat, Fusion::Add] {
        let mut m = model(fusion);
        let b = 1e-3;
        let mut opt = sgd(0.5); // large steps so the box must bind
        for step in 0..3 {
            let before: Vec<Vec<Tensor>> = TaskId::all(2).map(|t| values(&m, m.extractor_params(t))).collect();
            let heads: Vec<Vec<Tensor>> = TaskId::all(2).map(|t| values(&m, m.head_params(t))).collect();
            mtcool_step(&mut m, &mut opt, &batch(step), &obj(), step as u32, &cfg(Mode::Full, b, 5)).unwrap();
            for t in TaskId::all(2) {
                let moved = max_abs_diff(&values(&m, m.extractor_params(t)), &before[t.0]);
                assert!(moved <= b * (1.0 + 1e-5), "task {} extractor moved {moved} > b = {b}", t.0 + 1);
                assert!(moved > 0.5 * b, "box never reached: the test would not catch a missing clamp");
                let head_moved = max_abs_diff(&values(&m, m.head_params(t)), &heads[t.0]);
                assert!(head_moved > b, "heads are not clamped, yet head {} moved only {head_moved}", t.0 + 1);
            }
        }
        // Without the projection (noreg) the same steps leave the box.
        let mut free = model(fusion);
        let before = values(&free, free.extractor_params(TaskId(0)));
        mtcool_step(&mut free, &mut sgd(0.5), &batch(0), &obj(), 0, &cfg(Mode::Noreg, b, 5)).unwrap();
        assert!(max_abs_diff(&values(&free, free.extractor_params(TaskId(0))), &before) > b);
    }
}

fn run(mode: Mode, b: f32, seed: u64, steps: u32) -> Vec<Tensor> {
    let mut m = model(Fusion::Concat);
    let mut opt = Optimizer::adam(AdamConfig::with_lr(1e-2));
    for step in 0..steps {
        mtcool_step(&mut m, &mut opt, &batch(step as u64), &obj(), step, &cfg(mode, b, seed)).unwrap();
    }
    values(&m, &m.all_params())
}

#[test]
fn noise_off_is_identical_to_vanilla() {
    // noreg with b = 0 draws ε = 0 exactly and applies no box: bit-identical to vanilla.
    assert_eq!(run(Mode::Noreg, 0.0, 1, 3), run(Mode::Vanilla, 0.0, 1, 3));
    // With noise on, the result differs.
    assert_ne!(run(Mode::Noreg, 0.05, 1, 3), run(Mode::Vanilla, 0.05, 1, 3));
}

#[test]
fn same_seed_same_result_other_seed_other_noise() {
    let a = run(Mode::Full, 0.02, 7, 3);
    assert_eq!(a, run(Mode::Full, 0.02, 7, 3));
    assert_ne!(a, run(Mode::Full, 0.02, 8, 3));
    // Vanilla does not use the noise seed at all.
    assert_eq!(run(Mode::Vanilla, 0.02, 7, 2), run(Mode::Vanilla, 0.02, 8, 2));
}

#[test]
fn noise_samples_and_inner_steps_change_the_step() {
    let step_with = |k: u32, inner: u32| {
        let mut m = model(Fusion::Concat);
        let c = MtCoolConfig { mode: Mode::Full, b: 0.02, noise_samples: k, inner_steps: inner, seed: 4 };
        let s = mtcool_step(&mut m, &mut sgd(0.05), &batch(9), &obj(), 0, &c).unwrap().host().unwrap();
        assert!(s.loss.iter().all(|l| l.is_finite() && *l > 0.0));
        values(&m, &m.all_params())
    };
    let base = step_with(1, 1);
    assert_ne!(base, step_with(3, 1));
    assert_ne!(base, step_with(1, 2));
}

#[test]
fn task2_substep_moves_theta2_and_phi2_only() {
    let mut m = model(Fusion::Concat);
    let (t1, t2) = (TaskId(0), TaskId(1));
    let theta1 = values(&m, m.extractor_params(t1));
    let phi1 = values(&m, m.head_params(t1));
    let theta2 = values(&m, m.extractor_params(t2));
    let b = batch(2);
    let placed = b.place(&Backend::Cpu, &obj()).unwrap();
    task_substep(&mut m, &mut sgd(0.1), &placed.x, &placed.targets, &obj(), 0, &cfg(Mode::Full, 0.05, 3), t2).unwrap();
    assert_eq!(values(&m, m.extractor_params(t1)), theta1, "θ1 changed during task 2's sub-step");
    assert_eq!(values(&m, m.head_params(t1)), phi1, "φ1 changed during task 2's sub-step");
    assert!(max_abs_diff(&values(&m, m.extractor_params(t2)), &theta2) > 0.0, "θ2 did not move");
}

#[test]
fn with_two_inner_steps_the_box_is_around_the_outer_snapshot() {
    // Steps large enough that each inner step alone would leave the box: a box re-centred at every
    // inner step would let θ drift up to 2b; the outer iteration's box keeps it within b.
    let b = 1e-3;
    let mut m = model(Fusion::Concat);
    let t1 = TaskId(0);
    let before = values(&m, m.extractor_params(t1));
    let c = MtCoolConfig { mode: Mode::Full, b, noise_samples: 1, inner_steps: 2, seed: 3 };
    let batch = batch(4);
    let placed = batch.place(&Backend::Cpu, &obj()).unwrap();
    task_substep(&mut m, &mut sgd(0.5), &placed.x, &placed.targets, &obj(), 0, &c, t1).unwrap();
    let moved = max_abs_diff(&values(&m, m.extractor_params(t1)), &before);
    assert!(moved <= b * (1.0 + 1e-5), "θ1 moved {moved} > b = {b} over two inner steps");
    assert!(moved > 0.9 * b, "the box never bound ({moved}): the test could not tell the snapshots apart");
    // The same two inner steps without the box move further than 2b would allow for one re-centred box.
    let mut free = model(Fusion::Concat);
    let c = MtCoolConfig { mode: Mode::Noreg, ..c };
    task_substep(&mut free, &mut sgd(0.5), &placed.x, &placed.targets, &obj(), 0, &c, t1).unwrap();
    assert!(max_abs_diff(&values(&free, free.extractor_params(t1)), &before) > 2.0 * b);
}
