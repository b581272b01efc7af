//! The autograd tape: shared subexpressions, gradient accumulation into parameters, no-grad mode.

use mtcool::noise::{stream, NoiseKey, WeightNoise};
use mtcool::params::ParamStore;
use mtcool::tape::Tape;
use mtcool::Tensor;

fn t(v: &[f32]) -> Tensor {
    Tensor::new(&[v.len()], v.to_vec()).unwrap()
}

#[test]
fn shared_subexpression_sums_every_path() {
    // L = Σ (x·x + x): x is read three times; dL/dx = 2x + 1.
    let mut tape = Tape::new();
    let x = tape.input(t(&[1.5, -2.0, 0.25]));
    let xx = tape.mul(x, x).unwrap();
    let y = tape.add(xx, x).unwrap();
    let l = tape.sum_all(y).unwrap();
    let g = tape.backward(l).unwrap();
    assert_eq!(g.get(x).unwrap().data(), &[4.0, -3.0, 1.5]);
}

#[test]
fn diamond_through_relu() {
    // a = relu(x); L = Σ (a + a·a) → dL/dx = (1 + 2a)·[x > 0].
    let mut tape = Tape::new();
    let x = tape.input(t(&[2.0, -1.0, 0.5]));
    let a = tape.relu(x).unwrap();
    let aa = tape.mul(a, a).unwrap();
    let s = tape.add(a, aa).unwrap();
    let l = tape.sum_all(s).unwrap();
    let g = tape.backward(l).unwrap();
    assert_eq!(g.get(x).unwrap().data(), &[5.0, 0.0, 2.0]);
    assert_eq!(g.get(a).unwrap().data(), &[5.0, 1.0, 2.0]);
}

#[test]
fn parameter_gradients_accumulate_until_zeroed() {
    let mut store = ParamStore::new();
    let w = store.add("w", t(&[3.0, -1.0]));
    // One tape reading w twice: L = Σ (w·w) + Σ 2w → dL/dw = 2w + 2.
    let run = |store: &mut ParamStore| {
        let mut tape = Tape::new();
        let p1 = tape.param(store, w);
        let p2 = tape.param(store, w);
        let sq = tape.mul(p1, p1).unwrap();
        let lin = tape.scale(p2, 2.0).unwrap();
        let s = tape.add(sq, lin).unwrap();
        let l = tape.sum_all(s).unwrap();
        tape.backward(l).unwrap().accumulate_into(store).unwrap();
    };
    run(&mut store);
    assert_eq!(store.grad(w).data(), &[8.0, 0.0]);
    run(&mut store);
    assert_eq!(store.grad(w).data(), &[16.0, 0.0], "a second backward adds to the first");
    store.zero_grad(&[w]).unwrap();
    assert_eq!(store.grad(w).data(), &[0.0, 0.0]);
}

#[test]
fn no_grad_records_values_only() {
    let mut store = ParamStore::new();
    let w1 = store.add("w1", t(&[1.0, 2.0]));
    let w2 = store.add("w2", t(&[0.5, -0.5]));
    let mut tape = Tape::new();
    let a = tape.param(&store, w1);
    let b = tape.no_grad(|tp| {
        let p = tp.param(&store, w2);
        tp.relu(p).unwrap()
    });
    assert!(tape.grad_enabled(), "no_grad restores the previous mode");
    assert!(!tape.needs_grad(b));
    let prod = tape.mul(a, b).unwrap();
    let l = tape.sum_all(prod).unwrap();
    let g = tape.backward(l).unwrap();
    assert!(g.get(b).is_none());
    g.accumulate_into(&mut store).unwrap();
    assert_eq!(store.grad(w1).data(), &[0.5, 0.0]);
    assert_eq!(store.grad(w2).data(), &[0.0, 0.0], "w2 was read under no_grad");
}

#[test]
fn frozen_param_adds_the_keyed_noise_and_gets_no_gradient() {
    let mut store = ParamStore::new();
    let w = store.add("w", t(&[1.0, -1.0, 0.0, 2.0]));
    let key = NoiseKey { seed: 9, step: 4, stream: stream::TASK2, sample: 0 };
    let mut tape = Tape::new();
    let noisy = tape.frozen_param(&store, w, Some(WeightNoise { key, b: 0.01, offset: 100 })).unwrap();
    let clean = tape.frozen_param(&store, w, None).unwrap();
    assert_eq!(tape.value(clean), store.value(w));
    for i in 0..4 {
        let want = store.value(w).data()[i] + key.uniform(100 + i as u32, 0.01);
        assert_eq!(tape.value(noisy).data()[i], want);
    }
    let x = tape.input(t(&[1.0, 1.0, 1.0, 1.0]));
    let y = tape.mul(x, noisy).unwrap();
    let l = tape.sum_all(y).unwrap();
    let g = tape.backward(l).unwrap();
    assert_eq!(g.get(x).unwrap(), tape.value(noisy));
    assert!(g.get(noisy).is_none());
}

#[test]
fn set_grad_enabled_false_makes_constants() {
    let mut tape = Tape::new();
    tape.set_grad_enabled(false);
    let x = tape.input(t(&[1.0]));
    let y = tape.scale(x, 3.0).unwrap();
    assert!(!tape.needs_grad(x) && !tape.needs_grad(y));
    assert_eq!(tape.value(y).data(), &[3.0]);
}

#[test]
fn conv_backward_skips_inputs_without_gradient() {
    use mtcool::backend::cpu::conv::Conv2dCfg;
    // A constant image into a trainable conv: the weight gets a gradient, the image none.
    let mut tape = Tape::new();
    let x = tape.constant(Tensor::full(&[1, 1, 4, 4], 0.5));
    let w = tape.input(Tensor::full(&[2, 1, 3, 3], 0.1));
    let y = tape.conv2d(x, w, None, Conv2dCfg { stride: 1, padding: 1 }).unwrap();
    let l = tape.sum_all(y).unwrap();
    let g = tape.backward(l).unwrap();
    assert!(g.get(x).is_none());
    // dL/dw[c,0,i,j] = Σ over outputs of the input under tap (i, j): corner taps see 3×3 inputs of 0.5.
    assert_eq!(g.get(w).unwrap().data()[0], 9.0 * 0.5);
}
