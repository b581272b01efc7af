//! Central finite-difference gradient checks of every tape op on random shapes and random (never zero)
//! inputs. Used by `mtcool check grad` and by `tests/gradcheck.rs`.
//!
//! For an op f and random weights R of f's output shape, L(x) = Σ f(x)·R (summed in f64). The tape's
//! backward seeded with R gives ∂L/∂x; each element is compared with (L(x + h) − L(x − h)) / 2h.
//! Error = max |analytic − numeric| / max(max |numeric|, 1e-3), per input, the worst over inputs.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::backend::cpu::loss::one_hot;
use crate::backend::dispatch::{Labels, LayerNoise};
use crate::noise::{stream, NoiseKey};
use crate::settings::{Conv2dCfg, DiceMode};
use crate::tape::{Tape, Var};
use crate::Tensor;

type Build = Box<dyn Fn(&mut Tape, &[Var]) -> anyhow::Result<Var>>;

/// One op under test: inputs (those with `check` true are differentiated), how to build the op.
pub struct Case {
    pub name: String,
    pub inputs: Vec<Tensor>,
    pub check: Vec<bool>,
    pub tol: f64,
    pub build: Build,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub name: String,
    pub shapes: String,
    pub max_rel_err: f64,
    pub tol: f64,
    pub pass: bool,
}

const H: f32 = 5e-3;

fn weighted_sum(t: &Tensor, r: &Tensor) -> f64 {
    t.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn forward(case: &Case, inputs: &[Tensor]) -> (Tape, Vec<Var>, Var) {
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs
        .iter()
        .zip(&case.check)
        .map(|(t, &c)| if c { tape.input(t.clone()) } else { tape.constant(t.clone()) })
        .collect();
    let out = (case.build)(&mut tape, &vars).unwrap_or_else(|e| panic!("gradcheck case {}: {e:#}", case.name));
    (tape, vars, out)
}

/// Runs one case; `seed` fixes the output weights R.
pub fn run_case(case: &Case, seed: u64) -> Outcome {
    let (tape, vars, out) = forward(case, &case.inputs);
    let mut rng = StdRng::seed_from_u64(seed);
    let r = Tensor::uniform(tape.value(out).shape(), 0.5, 1.5, &mut rng);
    let grads = tape.backward_with(out, r.clone()).unwrap_or_else(|e| panic!("gradcheck case {}: {e:#}", case.name));
    let mut worst = 0.0f64;
    for (i, var) in vars.iter().enumerate().filter(|(i, _)| case.check[*i]) {
        let analytic = grads.get(*var).cloned().unwrap_or_else(|| Tensor::zeros(case.inputs[i].shape()));
        let mut numeric = vec![0.0f64; case.inputs[i].numel()];
        for (j, slot) in numeric.iter_mut().enumerate() {
            let loss_at = |delta: f32| {
                let mut inputs = case.inputs.clone();
                inputs[i].data_mut()[j] += delta;
                let (t, _, o) = forward(case, &inputs);
                weighted_sum(t.value(o), &r)
            };
            *slot = (loss_at(H) - loss_at(-H)) / (2.0 * H as f64);
        }
        let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
        let diff = analytic.data().iter().zip(&numeric).fold(0.0f64, |m, (&a, &n)| m.max((a as f64 - n).abs()));
        worst = worst.max(diff / scale);
    }
    let shapes = case.inputs.iter().map(|t| format!("{:?}", t.shape())).collect::<Vec<_>>().join(" ");
    Outcome { name: case.name.clone(), shapes, max_rel_err: worst, tol: case.tol, pass: worst <= case.tol }
}

/// Random values in ±[lo, hi]: never zero and never within `lo` of a kink at 0.
fn away_from_zero(shape: &[usize], lo: f32, hi: f32, rng: &mut StdRng) -> Tensor {
    let mut t = Tensor::uniform(shape, lo, hi, rng);
    t.data_mut().iter_mut().for_each(|v| {
        if rng.random_bool(0.5) {
            *v = -*v
        }
    });
    t
}

/// Distinct values spaced well beyond the step h, shuffled: max-pool has no ties or near-ties.
fn distinct(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.05 + 0.01).collect();
    v.shuffle(rng);
    Tensor::new(shape, v).expect("shape")
}

/// Inputs (x, w, b) of a one-input-channel kh×kw convolution for the fused conv ops: w's first tap
/// dominant (|w| in `big`), the other taps and the bias small (|·| in `small`), so the outputs stay
/// far from the ReLU's kink, or (with `distinct` x) in the pooling windows' order, by margins well
/// beyond the step H even under the noisy cases' ε (|ε| ≤ 0.3).
fn fused_conv_inputs(
    x: Tensor,
    [kh, kw]: [usize; 2],
    co: usize,
    big: (f32, f32),
    small: (f32, f32),
    rng: &mut StdRng,
) -> Vec<Tensor> {
    let mut wt = away_from_zero(&[co, 1, kh, kw], small.0, small.1, rng);
    for o in 0..co {
        wt.data_mut()[o * kh * kw] = away_from_zero(&[1], big.0, big.1, rng).data()[0];
    }
    vec![x, wt, away_from_zero(&[co], small.0, small.1, rng)]
}

fn case(name: &str, inputs: Vec<Tensor>, check: Vec<bool>, tol: f64, build: Build) -> Case {
    Case { name: name.to_string(), inputs, check, tol, build }
}

/// Every op, on shapes drawn from `rng`.
pub fn cases(rng: &mut StdRng) -> Vec<Case> {
    let mut d = |lo: usize, hi: usize| rng.random_range(lo..=hi);
    let (n, c, h, w) = (d(1, 3), d(1, 3), d(3, 6), d(3, 6));
    let (c2, k, feat, out) = (d(1, 3), d(2, 3), d(2, 6), d(2, 5));
    let classes = d(2, 4);
    let seed = d(0, 1 << 20) as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let r = &mut rng;
    let x4 = |r: &mut StdRng| Tensor::randn(&[n, c, h, w], 1.0, r);
    let labels =
        |count: usize, r: &mut StdRng| (0..count).map(|_| r.random_range(0..classes as u32)).collect::<Vec<u32>>();
    let all = |k: usize| vec![true; k];
    let conv_cfg = |stride, padding| Conv2dCfg { stride, padding };
    let cls_targets = labels(n, r);
    let pix_targets = labels(n * h * w, r);
    let weights: Vec<f32> = (0..classes).map(|_| r.random_range(0.5..2.0)).collect();
    let bin_target =
        Tensor::new(&[n, 1, h, w], (0..n * h * w).map(|_| r.random_range(0..2) as f32).collect()).expect("shape");
    let mc_target = one_hot(&pix_targets, classes, &[n, h, w]);
    let (cls_targets, pix_targets) = (Labels::from(&cls_targets[..]), Labels::from(&pix_targets[..]));
    let weights = Tensor::new(&[classes], weights).expect("shape");
    let drop_key = NoiseKey { seed, step: 3, stream: stream::DROPOUT, sample: 0 };
    let (bn_mean, bn_var) = (Tensor::randn(&[c], 0.5, r), Tensor::uniform(&[c], 0.5, 2.0, r));
    let (uh, uw) = (h + d(1, 5), w + d(0, 5));
    let (ph, pw) = (2 * h, 2 * w);
    let tn = |transposed: bool| if transposed { "t" } else { "n" };
    let mut all_cases = vec![
        case("add", vec![x4(r), x4(r)], all(2), 1e-2, Box::new(|t, v| t.add(v[0], v[1]))),
        case("sub", vec![x4(r), x4(r)], all(2), 1e-2, Box::new(|t, v| t.sub(v[0], v[1]))),
        case("mul", vec![x4(r), x4(r)], all(2), 1e-2, Box::new(|t, v| t.mul(v[0], v[1]))),
        case("scale", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.scale(v[0], -1.7))),
        case("relu", vec![away_from_zero(&[n, c, h, w], 0.05, 2.0, r)], all(1), 1e-2, Box::new(|t, v| t.relu(v[0]))),
        case("sigmoid", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.sigmoid(v[0]))),
        case(
            "add_channel_bias",
            vec![x4(r), Tensor::randn(&[c], 1.0, r)],
            all(2),
            1e-2,
            Box::new(|t, v| t.add_channel_bias(v[0], v[1])),
        ),
        case("sum_all", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.sum_all(v[0]))),
        case("mean_all", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.mean_all(v[0]))),
        case("reshape", vec![x4(r)], all(1), 1e-2, Box::new(move |t, v| t.reshape(v[0], &[n, c * h * w]))),
        case(
            "conv2d",
            vec![x4(r), Tensor::randn(&[c2, c, k, k], 0.5, r), Tensor::randn(&[c2], 0.5, r)],
            all(3),
            1e-2,
            Box::new(move |t, v| t.conv2d(v[0], v[1], Some(v[2]), conv_cfg(1, 0))),
        ),
        case(
            "conv2d_stride2_pad1",
            vec![x4(r), Tensor::randn(&[c2, c, k, k], 0.5, r)],
            all(2),
            1e-2,
            Box::new(move |t, v| t.conv2d(v[0], v[1], None, conv_cfg(2, 1))),
        ),
        case(
            "conv_transpose2d",
            vec![x4(r), Tensor::randn(&[c, c2, k, k], 0.5, r), Tensor::randn(&[c2], 0.5, r)],
            all(3),
            1e-2,
            Box::new(move |t, v| t.conv_transpose2d(v[0], v[1], Some(v[2]), conv_cfg(2, 0))),
        ),
        case(
            "matmul",
            vec![Tensor::randn(&[n + 1, feat], 1.0, r), Tensor::randn(&[feat, out], 1.0, r)],
            all(2),
            1e-2,
            Box::new(|t, v| t.matmul(v[0], v[1])),
        ),
        case(
            "linear",
            vec![Tensor::randn(&[n, feat], 1.0, r), Tensor::randn(&[out, feat], 0.5, r), Tensor::randn(&[out], 0.5, r)],
            all(3),
            1e-2,
            Box::new(|t, v| t.linear(v[0], v[1], Some(v[2]))),
        ),
    ];
    // bmm on every transpose: a stored [n, m, k] or [n, k, m], b [n, k, out] or [n, out, k].
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa = if ta { [n, feat, c2 + 1] } else { [n, c2 + 1, feat] };
        let sb = if tb { [n, out, feat] } else { [n, feat, out] };
        let name = if (ta, tb) == (false, false) { "bmm".into() } else { format!("bmm_{}{}", tn(ta), tn(tb)) };
        let inputs = vec![Tensor::randn(&sa, 1.0, r), Tensor::randn(&sb, 1.0, r)];
        all_cases.push(case(&name, inputs, all(2), 1e-2, Box::new(move |t, v| t.bmm(v[0], ta, v[1], tb))));
    }
    all_cases.extend([
        case(
            "softmax_lastdim",
            vec![Tensor::randn(&[n, c, w], 2.0, r)],
            all(1),
            1e-2,
            Box::new(|t, v| t.softmax_lastdim(v[0])),
        ),
        case(
            "sigmoid_gate",
            vec![x4(r), Tensor::randn(&[n, c, h, w], 2.0, r)],
            all(2),
            1e-2,
            Box::new(|t, v| t.sigmoid_gate(v[0], v[1])),
        ),
        case("max_pool2d", vec![distinct(&[n, c, h, w], r)], all(1), 1e-2, Box::new(|t, v| t.max_pool2d(v[0], 2, 2))),
        case(
            "conv2d_relu",
            // |w x| ≥ 0.5 against ≤ 0.35 from the rest: outputs ≥ 0.15 from 0.
            fused_conv_inputs(away_from_zero(&[n, 1, h, w], 0.5, 2.0, r), [2, 2], c2, (1.0, 2.0), (0.01, 0.05), r),
            all(3),
            1e-2,
            Box::new(move |t, v| t.conv2d_relu(v[0], v[1], Some(v[2]), conv_cfg(1, 0), None)),
        ),
        case(
            "conv2d_max_pool2d",
            // Distinct x (0.05 apart) through a dominant tap ≥ 2: window gaps ≥ 0.07, no near-ties.
            fused_conv_inputs(distinct(&[n, 1, h, w], r), [1, 2], c2, (2.0, 3.0), (0.001, 0.005), r),
            all(3),
            1e-2,
            Box::new(move |t, v| t.conv2d_max_pool(v[0], v[1], Some(v[2]), conv_cfg(1, 0), None)),
        ),
        case("avg_pool2d", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.avg_pool2d(v[0], 2, 1))),
        case("global_avg_pool", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.global_avg_pool(v[0]))),
        case("upsample_nearest", vec![x4(r)], all(1), 1e-2, Box::new(|t, v| t.upsample_nearest(v[0], 2))),
        case("upsample_bilinear", vec![x4(r)], all(1), 1e-2, Box::new(move |t, v| t.upsample_bilinear(v[0], uh, uw))),
        case(
            "upsample_bilinear_x2",
            vec![x4(r)],
            all(1),
            1e-2,
            Box::new(move |t, v| t.upsample_bilinear(v[0], ph, pw)),
        ),
        case(
            "batch_norm_train",
            vec![
                Tensor::randn(&[n + 1, c, h, w], 1.0, r),
                Tensor::uniform(&[c], 0.5, 1.5, r),
                Tensor::randn(&[c], 0.5, r),
            ],
            all(3),
            2e-2,
            Box::new(|t, v| Ok(t.batch_norm_train(v[0], v[1], v[2], 1e-5)?.0)),
        ),
        case(
            "batch_norm_eval",
            vec![x4(r), Tensor::uniform(&[c], 0.5, 1.5, r), Tensor::randn(&[c], 0.5, r)],
            all(3),
            1e-2,
            Box::new(move |t, v| t.batch_norm_eval(v[0], v[1], v[2], &bn_mean, &bn_var, 1e-5)),
        ),
        case(
            "concat_channels",
            vec![x4(r), Tensor::randn(&[n, c2, h, w], 1.0, r)],
            all(2),
            1e-2,
            Box::new(|t, v| t.concat_channels(&[v[0], v[1]])),
        ),
        case("dropout", vec![x4(r)], all(1), 1e-2, Box::new(move |t, v| t.dropout(v[0], 0.3, drop_key))),
        case(
            "softmax_cross_entropy",
            vec![Tensor::randn(&[n, classes], 2.0, r)],
            all(1),
            1e-2,
            Box::new(move |t, v| t.softmax_cross_entropy(v[0], &cls_targets, None)),
        ),
        case(
            "softmax_cross_entropy_weighted_2d",
            vec![Tensor::randn(&[n, classes, h, w], 2.0, r)],
            all(1),
            1e-2,
            Box::new(move |t, v| t.softmax_cross_entropy(v[0], &pix_targets, Some(&weights))),
        ),
        case(
            "soft_dice_binary",
            vec![Tensor::randn(&[n, 1, h, w], 2.0, r)],
            all(1),
            1e-2,
            Box::new(move |t, v| t.soft_dice(v[0], &bin_target, DiceMode::Binary, 1.0)),
        ),
        case(
            "soft_dice_multiclass",
            vec![Tensor::randn(&[n, classes, h, w], 2.0, r)],
            all(1),
            1e-2,
            Box::new(move |t, v| t.soft_dice(v[0], &mc_target, DiceMode::MultiClass, 1.0)),
        ),
    ]);
    // The frozen noisy layers: only the input is differentiated (the weights are frozen).
    let noise = LayerNoise {
        key: NoiseKey { seed, step: 5, stream: stream::TASK2, sample: 1 },
        b: 0.3,
        w_offset: 7,
        b_offset: 1000,
    };
    all_cases.extend([
        case(
            "conv2d_noisy",
            vec![x4(r), Tensor::randn(&[c2, c, k, k], 0.5, r), Tensor::randn(&[c2], 0.5, r)],
            vec![true, false, false],
            1e-2,
            Box::new(move |t, v| t.conv2d_noisy(v[0], v[1], Some(v[2]), conv_cfg(1, 1), noise)),
        ),
        case(
            "conv2d_noisy_relu",
            // |w' x| ≥ 1.7 against ≤ 1.05 from the rest under ε: outputs ≥ 0.65 from 0.
            fused_conv_inputs(away_from_zero(&[n, 1, h, w], 1.0, 2.0, r), [1, 2], c2, (2.0, 3.0), (0.01, 0.05), r),
            vec![true, false, false],
            1e-2,
            Box::new(move |t, v| t.conv2d_relu(v[0], v[1], Some(v[2]), conv_cfg(1, 0), Some(noise))),
        ),
        case(
            "conv2d_noisy_max_pool2d",
            // 1×1: y = w'x + b' per channel with |w'| ≥ 0.7 on distinct x: window gaps ≥ 0.035.
            fused_conv_inputs(distinct(&[n, 1, h, w], r), [1, 1], c2, (1.0, 2.0), (0.01, 0.05), r),
            vec![true, false, false],
            1e-2,
            Box::new(move |t, v| t.conv2d_max_pool(v[0], v[1], Some(v[2]), conv_cfg(1, 0), Some(noise))),
        ),
        case(
            "linear_noisy",
            vec![Tensor::randn(&[n, feat], 1.0, r), Tensor::randn(&[out, feat], 0.5, r), Tensor::randn(&[out], 0.5, r)],
            vec![true, false, false],
            1e-2,
            Box::new(move |t, v| t.linear_noisy(v[0], v[1], Some(v[2]), noise)),
        ),
    ]);
    all_cases
}

/// Draws shapes from `seed` and checks every op.
pub fn run_all(seed: u64) -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    cases(&mut rng).iter().map(|c| run_case(c, seed ^ 0x5eed)).collect()
}
