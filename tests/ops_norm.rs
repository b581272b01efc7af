//! Batch norm (CPU reference): hand-computed forwards, finite-difference backwards, running stats.

mod common;

use common::{assert_close_abs, dot, fd_grad, nonzero, t};
use mtcool::backend::cpu::norm::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn train_forward_hand_2d() {
    // x is [N=2, C=2] = [[1, 2], [3, 6]].
    // Channel 0 holds {1, 3}: mean 2, biased var ((−1)² + 1²)/2 = 1, x̂ = [−1, 1].
    // Channel 1 holds {2, 6}: mean 4, biased var (4 + 4)/2 = 4, std 2, x̂ = [−1, 1].
    // gamma = [2, 0.5], beta = [0.5, −1], eps = 0:
    //   channel 0: 2·[−1, 1] + 0.5 = [−1.5, 2.5]; channel 1: 0.5·[−1, 1] − 1 = [−1.5, −0.5].
    let x = t(&[2, 2], &[1.0, 2.0, 3.0, 6.0]);
    let (y, stats) = batch_norm_train_forward(&x, &t(&[2], &[2.0, 0.5]), &t(&[2], &[0.5, -1.0]), 0.0);
    assert_eq!(y.shape(), [2, 2]);
    assert_close_abs(y.data(), &[-1.5, -1.5, 2.5, -0.5], 1e-6);
    assert_close_abs(&stats.mean, &[2.0, 4.0], 1e-6);
    assert_close_abs(&stats.var, &[1.0, 4.0], 1e-6);
    assert_close_abs(&stats.invstd, &[1.0, 0.5], 1e-6);
}

#[test]
fn train_forward_hand_4d() {
    // x is [N=2, C=2, H=1, W=2]:
    //   n=0: c0 = [1, 3], c1 = [0, 0];   n=1: c0 = [1, 3], c1 = [4, 4].
    // Channel 0 over N and W: {1, 3, 1, 3}: mean 2, var 1 → x̂ = [−1, 1, −1, 1].
    // Channel 1: {0, 0, 4, 4}: mean 2, var 4, std 2 → x̂ = [−1, −1, 1, 1].
    // With eps = 1 the invstds are 1/√2 and 1/√5; gamma = 1, beta = 0 gives x̂ · invstd.
    let x = t(&[2, 2, 1, 2], &[1.0, 3.0, 0.0, 0.0, 1.0, 3.0, 4.0, 4.0]);
    let (ones, zeros) = (Tensor::full(&[2], 1.0), Tensor::zeros(&[2]));
    let (y, stats) = batch_norm_train_forward(&x, &ones, &zeros, 0.0);
    assert_close_abs(y.data(), &[-1.0, 1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0], 1e-6);
    assert_close_abs(&stats.var, &[1.0, 4.0], 1e-6);

    let (y, stats) = batch_norm_train_forward(&x, &ones, &zeros, 1.0);
    let (a, b) = (1.0 / 2f32.sqrt(), 2.0 / 5f32.sqrt());
    assert_close_abs(&stats.invstd, &[a, 1.0 / 5f32.sqrt()], 1e-6);
    assert_close_abs(y.data(), &[-a, a, -b, -b, -a, a, b, b], 1e-6);
}

fn check_train_backward(shape: &[usize], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = shape[1];
    let x = Tensor::randn(shape, 1.5, &mut rng);
    let gamma = nonzero(&[c], &mut rng);
    let beta = nonzero(&[c], &mut rng);
    let r = nonzero(shape, &mut rng);
    let eps = 1e-3;

    let (_, stats) = batch_norm_train_forward(&x, &gamma, &beta, eps);
    let (dx, dgamma, dbeta) = batch_norm_train_backward(&r, &x, &gamma, &stats);

    let h = 1e-2;
    let fx = fd_grad(&x, h, |x| dot(&batch_norm_train_forward(x, &gamma, &beta, eps).0, &r));
    let fg = fd_grad(&gamma, h, |g| dot(&batch_norm_train_forward(&x, g, &beta, eps).0, &r));
    let fb = fd_grad(&beta, h, |b| dot(&batch_norm_train_forward(&x, &gamma, b, eps).0, &r));
    assert!(dx.rel_err(&fx) < 1e-2, "dx rel err {} for shape {shape:?}", dx.rel_err(&fx));
    assert!(dgamma.rel_err(&fg) < 1e-2, "dgamma rel err {}", dgamma.rel_err(&fg));
    assert!(dbeta.rel_err(&fb) < 1e-2, "dbeta rel err {}", dbeta.rel_err(&fb));
}

#[test]
fn train_backward_matches_finite_difference() {
    check_train_backward(&[3, 2, 2, 3], 1);
    check_train_backward(&[5, 3], 2);
}

#[test]
fn eval_backward_matches_finite_difference() {
    let mut rng = StdRng::seed_from_u64(3);
    let shape = [2, 3, 2, 2];
    let x = Tensor::randn(&shape, 1.0, &mut rng);
    let gamma = nonzero(&[3], &mut rng);
    let beta = nonzero(&[3], &mut rng);
    let rm = Tensor::randn(&[3], 0.5, &mut rng);
    let rv = Tensor::uniform(&[3], 0.5, 2.0, &mut rng);
    let r = nonzero(&shape, &mut rng);
    let eps = 1e-5;

    let (dx, dgamma, dbeta) = batch_norm_eval_backward(&r, &x, &gamma, &rm, &rv, eps);
    let h = 1e-2;
    let f = |x: &Tensor, g: &Tensor, b: &Tensor| dot(&batch_norm_eval_forward(x, g, b, &rm, &rv, eps), &r);
    let fx = fd_grad(&x, h, |x| f(x, &gamma, &beta));
    let fg = fd_grad(&gamma, h, |g| f(&x, g, &beta));
    let fb = fd_grad(&beta, h, |b| f(&x, &gamma, b));
    assert!(dx.rel_err(&fx) < 1e-2, "dx rel err {}", dx.rel_err(&fx));
    assert!(dgamma.rel_err(&fg) < 1e-2, "dgamma rel err {}", dgamma.rel_err(&fg));
    assert!(dbeta.rel_err(&fb) < 1e-2, "dbeta rel err {}", dbeta.rel_err(&fb));
}

#[test]
fn eval_forward_hand() {
    // [N=2, C=1]: x = [1, 5], running mean 3, running var 3, eps 1 → invstd 1/2:
    // x̂ = [−1, 1]; gamma 4, beta 1 → [−3, 5].
    let y = batch_norm_eval_forward(
        &t(&[2, 1], &[1.0, 5.0]),
        &t(&[1], &[4.0]),
        &t(&[1], &[1.0]),
        &t(&[1], &[3.0]),
        &t(&[1], &[3.0]),
        1.0,
    );
    assert_close_abs(y.data(), &[-3.0, 5.0], 1e-6);
}

#[test]
fn eval_with_batch_stats_matches_train() {
    let mut rng = StdRng::seed_from_u64(4);
    let shape = [4, 3, 3, 2];
    let x = Tensor::randn(&shape, 2.0, &mut rng);
    let gamma = nonzero(&[3], &mut rng);
    let beta = nonzero(&[3], &mut rng);
    let eps = 1e-5;
    let (y_train, stats) = batch_norm_train_forward(&x, &gamma, &beta, eps);
    let rm = Tensor::new(&[3], stats.mean.clone()).unwrap();
    let rv = Tensor::new(&[3], stats.var.clone()).unwrap();
    let y_eval = batch_norm_eval_forward(&x, &gamma, &beta, &rm, &rv, eps);
    assert!(y_eval.rel_err(&y_train) < 1e-6, "rel err {}", y_eval.rel_err(&y_train));
}

#[test]
fn running_stats_update_hand() {
    // Batch: channel 0 = {1, 3} (mean 2, biased var 1, unbiased 1·2/1 = 2),
    //        channel 1 = {2, 6} (mean 4, biased var 4, unbiased 8).
    // Running mean [0, 1], running var [1, 1], momentum 0.1:
    //   mean = 0.9·[0, 1] + 0.1·[2, 4] = [0.2, 1.3]
    //   var  = 0.9·[1, 1] + 0.1·[2, 8] = [1.1, 1.7]
    let x = t(&[2, 2], &[1.0, 2.0, 3.0, 6.0]);
    let (_, stats) = batch_norm_train_forward(&x, &Tensor::full(&[2], 1.0), &Tensor::zeros(&[2]), 1e-5);
    let mut rm = t(&[2], &[0.0, 1.0]);
    let mut rv = t(&[2], &[1.0, 1.0]);
    update_running_stats(&mut rm, &mut rv, &stats, 2, 0.1);
    assert_close_abs(rm.data(), &[0.2, 1.3], 1e-6);
    assert_close_abs(rv.data(), &[1.1, 1.7], 1e-6);
}
