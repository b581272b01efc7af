//! Parity cases for kernels/loss.cu: softmax cross-entropy (plain and class-weighted; forward, backward
//! and the fused pass), soft Dice (Binary and MultiClass), sum_all / mean_all. Losses via check_scalar.

use anyhow::Result;
use rand::Rng;

use super::pool::nchw_shapes;
use super::{Ctx, F32_TOL};
use crate::backend::cpu::elementwise as cpu_ew;
use crate::backend::cpu::loss::{self as cpu, DiceMode};
use crate::Tensor;

const DLOSS: f32 = 0.7;
const DICE_EPS: f32 = 1e-3;

/// The NCHW shapes, [N, C] classification shapes, and one with more items than a reduction chunk.
fn loss_shapes() -> Vec<Vec<usize>> {
    let mut shapes: Vec<Vec<usize>> = nchw_shapes().iter().map(|s| s.to_vec()).collect();
    shapes.extend([vec![3, 17], vec![1, 3], vec![64, 10], vec![2, 3, 128, 128]]);
    shapes
}

fn labels(c: &mut Ctx, count: usize, classes: usize) -> Vec<u32> {
    (0..count).map(|_| c.rng.random_range(0..classes as u32)).collect()
}

pub fn run(c: &mut Ctx) -> Result<()> {
    for shape in loss_shapes() {
        cross_entropy_cases(c, &shape)?;
        dice_cases(c, &shape)?;
    }
    // Sizes around one chunk (4096), and one above 4096² (two chunked passes before the finish).
    for n in [1, 7, 4096, 4097, 1_000_003, 17_000_003] {
        let case = format!("n={n}");
        let x = c.nonzero(&[n]);
        let gx = c.upload(&x)?;
        let out = c.gpu.sum_all(&gx)?;
        c.check("sum_all", &case, &out, &cpu_ew::sum_all(&x), F32_TOL)?;
        let out = c.gpu.mean_all(&gx)?;
        c.check("mean_all", &case, &out, &cpu_ew::mean_all(&x), F32_TOL)?;
    }
    Ok(())
}

fn cross_entropy_cases(c: &mut Ctx, shape: &[usize]) -> Result<()> {
    let (n, ch, inner) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let logits = Tensor::uniform(shape, -4.0, 4.0, &mut c.rng);
    let targets = labels(c, n * inner, ch);
    let weights = Tensor::uniform(&[ch], 0.25, 2.0, &mut c.rng);
    let (glogits, gtargets, gweights) = (c.upload(&logits)?, c.gpu.upload_labels(&targets)?, c.upload(&weights)?);
    for weighted in [false, true] {
        let case = format!("{shape:?} weighted={weighted}");
        let w = weighted.then_some(weights.data());
        let gw = weighted.then_some(&gweights);
        let (want_loss, want_probs) = cpu::softmax_cross_entropy_forward(&logits, &targets, w);
        let want_dx = cpu::softmax_cross_entropy_backward(&want_probs, &targets, w, DLOSS);

        let (loss, probs) = c.gpu.softmax_cross_entropy_forward(&glogits, &gtargets, gw)?;
        let got = c.gpu.download(&loss)?.data()[0];
        c.check_scalar("softmax_cross_entropy_forward loss", &case, got, want_loss, F32_TOL);
        c.check("softmax_cross_entropy_forward probs", &case, &probs, &want_probs, F32_TOL)?;

        let dx = c.gpu.softmax_cross_entropy_backward(&c.upload(&want_probs)?, &gtargets, gw, DLOSS)?;
        c.check("softmax_cross_entropy_backward", &case, &dx, &want_dx, F32_TOL)?;

        let (loss, dlogits) = c.gpu.softmax_cross_entropy_fused(&glogits, &gtargets, gw, DLOSS)?;
        let got = c.gpu.download(&loss)?.data()[0];
        c.check_scalar("softmax_cross_entropy_fused loss", &case, got, want_loss, F32_TOL);
        c.check("softmax_cross_entropy_fused dlogits", &case, &dlogits, &want_dx, F32_TOL)?;
    }
    // Correct counts: integer logits make ties (the first maximum wins), and a NaN never wins.
    let mut tied = logits.map(|v| v.round());
    if tied.numel() > 3 {
        tied.data_mut()[3] = f32::NAN;
    }
    for (what, x) in [("", &logits), (" ties+NaN", &tied)] {
        let got = c.gpu.download(&c.gpu.count_correct(&c.upload(x)?, &gtargets)?)?.data()[0];
        let want = cpu::count_correct(x, &targets) as f32;
        c.check_scalar("count_correct", &format!("{shape:?}{what}"), got, want, 0.0);
    }
    // The convenience form that downloads the loss.
    let (got, _) = c.gpu.softmax_cross_entropy_forward_host(&glogits, &gtargets, None)?;
    let (want, _) = cpu::softmax_cross_entropy_forward(&logits, &targets, None);
    c.check_scalar("softmax_cross_entropy_forward_host", &format!("{shape:?}"), got, want, F32_TOL);
    Ok(())
}

fn dice_cases(c: &mut Ctx, shape: &[usize]) -> Result<()> {
    let (n, ch, inner) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let logits = Tensor::uniform(shape, -4.0, 4.0, &mut c.rng);
    for mode in [DiceMode::Binary, DiceMode::MultiClass] {
        let case = format!("{shape:?} {mode:?}");
        let target = match mode {
            DiceMode::Binary => {
                let bits = (0..logits.numel()).map(|_| if c.rng.random_bool(0.4) { 1.0 } else { 0.0 }).collect();
                Tensor::new(shape, bits)?
            }
            DiceMode::MultiClass => {
                let mut nhw = vec![n];
                nhw.extend_from_slice(&shape[2..]);
                let y = labels(c, n * inner, ch);
                cpu::one_hot(&y, ch, &nhw)
            }
        };
        let (glogits, gtarget) = (c.upload(&logits)?, c.upload(&target)?);
        let (want_loss, want_probs) = cpu::soft_dice_forward(&logits, &target, mode, DICE_EPS);
        let (loss, probs) = c.gpu.soft_dice_forward(&glogits, &gtarget, mode, DICE_EPS)?;
        let got = c.gpu.download(&loss)?.data()[0];
        c.check_scalar("soft_dice_forward loss", &case, got, want_loss, F32_TOL);
        c.check("soft_dice_forward probs", &case, &probs, &want_probs, F32_TOL)?;

        let want_dx = cpu::soft_dice_backward(&logits, &want_probs, &target, mode, DICE_EPS, DLOSS);
        let dx = c.gpu.soft_dice_backward(&glogits, &c.upload(&want_probs)?, &gtarget, mode, DICE_EPS, DLOSS)?;
        c.check("soft_dice_backward", &case, &dx, &want_dx, F32_TOL)?;
    }
    Ok(())
}
