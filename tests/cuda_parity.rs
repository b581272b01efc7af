//! Every CUDA kernel against its CPU reference, on random never-zero inputs of odd sizes (including
//! one larger than a full grid, to exercise the grid-stride loops). Outputs are poisoned with NaN
//! before each run. Tolerance: rel_err ≤ 1e-5; noise and optimiser steps must match bit for bit.
//! Without a usable GPU (no libcuda, no device, or no compiled kernels) each test prints a skip line.

use mtcool::backend::cpu::elementwise as cpu;
use mtcool::backend::cuda::{Gpu, GpuBox, GpuTensor};
use mtcool::device::{self, Device, DeviceChoice};
use mtcool::noise::{NoiseKey, WeightNoise};
use mtcool::optim::{adam_update, sgd_update, AdamConfig, SgdConfig};
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIZES: &[usize] = &[1, 7, 1000, 65537, 3_000_017];
const TOL: f64 = 1e-5;

fn gpu() -> Option<Gpu> {
    match device::select(DeviceChoice::Auto).expect("device selection") {
        (Device::Cuda(ordinal), _) => Some(Gpu::new(ordinal).expect("opening the GPU")),
        (Device::Cpu, msg) => {
            println!("skipping CUDA parity, no usable GPU: {msg}");
            None
        }
    }
}

/// Values in ±[0.1, 2): random sign, never zero.
fn nonzero(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let v: f32 = rng.random_range(0.1..2.0);
            if rng.random_bool(0.5) {
                -v
            } else {
                v
            }
        })
        .collect();
    Tensor::new(shape, data).unwrap()
}

fn poisoned(g: &Gpu, shape: &[usize]) -> GpuTensor {
    g.upload(&Tensor::full(shape, f32::NAN)).unwrap()
}

fn close(what: &str, got: &Tensor, want: &Tensor) {
    assert!(got.all_finite(), "{what}: non-finite output (unwritten elements?)");
    let e = got.rel_err(want);
    assert!(e <= TOL, "{what}: rel_err {e:e} > {TOL:e}");
}

fn bit_exact(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    if let Some(i) = (0..got.numel()).find(|&i| got.data()[i].to_bits() != want.data()[i].to_bits()) {
        panic!("{what}: element {i}: gpu {:e} != cpu {:e}", got.data()[i], want.data()[i]);
    }
}

#[test]
fn elementwise_binary_and_unary() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(1);
    for &n in SIZES {
        let (a, b) = (nonzero(&[n], &mut rng), nonzero(&[n], &mut rng));
        let (da, db) = (g.upload(&a).unwrap(), g.upload(&b).unwrap());
        let mut y = poisoned(&g, &[n]);

        g.add_into(&da, &db, &mut y).unwrap();
        close(&format!("add n={n}"), &g.download(&y).unwrap(), &cpu::add(&a, &b));
        let mut y = poisoned(&g, &[n]);
        g.sub_into(&da, &db, &mut y).unwrap();
        close(&format!("sub n={n}"), &g.download(&y).unwrap(), &cpu::sub(&a, &b));
        let mut y = poisoned(&g, &[n]);
        g.mul_into(&da, &db, &mut y).unwrap();
        close(&format!("mul n={n}"), &g.download(&y).unwrap(), &cpu::mul(&a, &b));
        let mut y = poisoned(&g, &[n]);
        g.scale_into(&da, -1.7, &mut y).unwrap();
        close(&format!("scale n={n}"), &g.download(&y).unwrap(), &cpu::scale(&a, -1.7));

        let mut y = poisoned(&g, &[n]);
        g.relu_into(&da, &mut y).unwrap();
        close(&format!("relu n={n}"), &g.download(&y).unwrap(), &cpu::relu(&a));
        let mut y = poisoned(&g, &[n]);
        g.relu_backward_into(&db, &da, &mut y).unwrap();
        close(&format!("relu_backward n={n}"), &g.download(&y).unwrap(), &cpu::relu_backward(&b, &a));

        // Wider inputs for the logistic, so both branches and the tails are exercised.
        let x = cpu::scale(&a, 5.0);
        let dx = g.upload(&x).unwrap();
        let mut y = poisoned(&g, &[n]);
        g.sigmoid_into(&dx, &mut y).unwrap();
        let s = cpu::sigmoid(&x);
        close(&format!("sigmoid n={n}"), &g.download(&y).unwrap(), &s);
        let ds = g.upload(&s).unwrap();
        let mut y = poisoned(&g, &[n]);
        g.sigmoid_backward_into(&db, &ds, &mut y).unwrap();
        close(&format!("sigmoid_backward n={n}"), &g.download(&y).unwrap(), &cpu::sigmoid_backward(&b, &s));
    }
    // The allocating forms go through the same kernels.
    let a = nonzero(&[3, 5], &mut rng);
    let da = g.upload(&a).unwrap();
    close("relu (allocating)", &g.download(&g.relu(&da).unwrap()).unwrap(), &cpu::relu(&a));
    g.synchronize().unwrap();
}

#[test]
fn channel_bias_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(2);
    let shapes: &[&[usize]] =
        &[&[1, 1], &[7, 3], &[2, 3, 5, 7], &[3, 5, 65537], &[1, 1000, 7, 1], &[9, 1, 333, 5]];
    for &shape in shapes {
        let x = nonzero(shape, &mut rng);
        let bias = nonzero(&[shape[1]], &mut rng);
        let (dx, dbias) = (g.upload(&x).unwrap(), g.upload(&bias).unwrap());
        let mut y = poisoned(&g, shape);
        g.add_channel_bias_into(&dx, &dbias, &mut y).unwrap();
        close(
            &format!("add_channel_bias {shape:?}"),
            &g.download(&y).unwrap(),
            &cpu::add_channel_bias(&x, &bias),
        );

        let mut db = poisoned(&g, &[shape[1]]);
        g.add_channel_bias_backward_into(&dx, &mut db).unwrap();
        let want = cpu::add_channel_bias_backward(&x);
        close(&format!("add_channel_bias_backward {shape:?}"), &g.download(&db).unwrap(), &want);
    }
}

#[test]
fn noise_is_bit_identical_to_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(3);
    let keys = [
        NoiseKey { seed: 0, step: 0, stream: 1, sample: 0 },
        NoiseKey { seed: 0x0123_4567_89ab_cdef, step: 7, stream: 2, sample: 3 },
        NoiseKey { seed: u64::MAX, step: u32::MAX, stream: 0xD0, sample: u32::MAX },
    ];
    for key in keys {
        for &n in SIZES {
            let b = 0.05f32;
            let mut out = poisoned(&g, &[n]);
            g.noise_uniform_into(key, b, &mut out).unwrap();
            let want: Vec<f32> = (0..n).map(|i| key.uniform(i as u32, b)).collect();
            bit_exact(
                &format!("noise_uniform {key:?} n={n}"),
                &g.download(&out).unwrap(),
                &Tensor::new(&[n], want).unwrap(),
            );

            let w = nonzero(&[n], &mut rng);
            let dw = g.upload(&w).unwrap();
            let mut out = poisoned(&g, &[n]);
            let offset = 12_345;
            g.add_noise_into(&dw, WeightNoise { key, b, offset }, &mut out).unwrap();
            let want = Tensor::new(&[n], key.perturb(w.data(), b, offset)).unwrap();
            bit_exact(&format!("add_noise {key:?} n={n}"), &g.download(&out).unwrap(), &want);
        }
    }
}

#[test]
fn sgd_step_matches_cpu_with_and_without_projection() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(4);
    let cfg = SgdConfig { lr: 0.05, momentum: 0.9, weight_decay: 1e-3 };
    for &n in SIZES {
        for project in [false, true] {
            let b = 0.02f32;
            let mut theta = nonzero(&[n], &mut rng);
            let mut vel = Tensor::zeros(&[n]);
            let snap = theta.clone();
            let (mut dtheta, mut dvel, dsnap) =
                (g.upload(&theta).unwrap(), g.upload(&vel).unwrap(), g.upload(&snap).unwrap());
            for step in 0..3 {
                let grad = nonzero(&[n], &mut rng);
                let dgrad = g.upload(&grad).unwrap();
                let bbox = project.then_some(GpuBox { snapshot: &dsnap, b });
                g.sgd_step(&mut dtheta, &mut dvel, &dgrad, cfg, bbox).unwrap();
                let cbox = project.then_some((snap.data(), b));
                sgd_update(theta.data_mut(), grad.data(), vel.data_mut(), cfg, cbox);
                let what = format!("sgd_step n={n} project={project} step={step}");
                bit_exact(&format!("{what} θ"), &g.download(&dtheta).unwrap(), &theta);
                bit_exact(&format!("{what} velocity"), &g.download(&dvel).unwrap(), &vel);
            }
        }
    }
}

#[test]
fn adam_step_matches_cpu_with_and_without_projection() {
    let Some(g) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(5);
    let cfg = AdamConfig { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-3 };
    for &n in SIZES {
        for project in [false, true] {
            let b = 0.015f32;
            let mut theta = nonzero(&[n], &mut rng);
            let (mut m, mut v) = (Tensor::zeros(&[n]), Tensor::zeros(&[n]));
            let snap = theta.clone();
            let mut dtheta = g.upload(&theta).unwrap();
            let (mut dm, mut dv, dsnap) =
                (g.upload(&m).unwrap(), g.upload(&v).unwrap(), g.upload(&snap).unwrap());
            for t in 1..=3 {
                let grad = nonzero(&[n], &mut rng);
                let dgrad = g.upload(&grad).unwrap();
                let bc1 = 1.0 - cfg.beta1.powi(t);
                let bc2 = 1.0 - cfg.beta2.powi(t);
                let bbox = project.then_some(GpuBox { snapshot: &dsnap, b });
                g.adam_step(&mut dtheta, &mut dm, &mut dv, &dgrad, cfg, bc1, bc2, bbox).unwrap();
                let cbox = project.then_some((snap.data(), b));
                adam_update(theta.data_mut(), grad.data(), m.data_mut(), v.data_mut(), cfg, bc1, bc2, cbox);
                let what = format!("adam_step n={n} project={project} t={t}");
                bit_exact(&format!("{what} θ"), &g.download(&dtheta).unwrap(), &theta);
                bit_exact(&format!("{what} m"), &g.download(&dm).unwrap(), &m);
                bit_exact(&format!("{what} v"), &g.download(&dv).unwrap(), &v);
            }
        }
    }
}
