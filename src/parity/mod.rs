//! The GPU parity suite: every kernel against its CPU reference on random (never zero) inputs and odd
//! shapes, every fresh GPU buffer filled with NaN (`Gpu::set_poison`) so an output element no kernel
//! writes fails, error = ‖gpu − cpu‖∞ / ‖cpu‖∞ per case.
//! Runs from the built binary (`mtcool check parity --device cuda`, for GPU hosts without Rust) and from
//! `tests/cuda_parity.rs`. One file per kernel family, named like `kernels/<family>.cu`.

pub mod attention;
pub mod concat;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod linear;
pub mod loss;
pub mod noise;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod upsample;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::cuda::{Gpu, GpuTensor};
use crate::Tensor;

/// Tolerances on the relative error, by arithmetic.
pub const F32_TOL: f64 = 1e-4;
pub const TF32_TOL: f64 = 3e-3;
pub const BF16_TOL: f64 = 2e-2;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub kernel: String,
    pub case: String,
    /// Every kernel launched since the previous outcome: what produced the checked output (a fused
    /// op's helper kernels, e.g. the reductions behind a loss, are attributed here).
    pub launched: Vec<String>,
    pub max_rel_err: f64,
    pub tol: f64,
    pub pass: bool,
}

/// What a family's `run` works with: the GPU, a seeded RNG, and the outcomes so far.
pub struct Ctx<'a> {
    pub gpu: &'a Gpu,
    pub rng: StdRng,
    pub outcomes: Vec<Outcome>,
}

impl<'a> Ctx<'a> {
    pub fn new(gpu: &'a Gpu, seed: u64) -> Self {
        Ctx { gpu, rng: StdRng::seed_from_u64(seed), outcomes: vec![] }
    }

    /// Random values in ±[0.1, 1.1): never zero.
    pub fn nonzero(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                let v: f32 = self.rng.random_range(0.1..1.1);
                if self.rng.random_bool(0.5) {
                    v
                } else {
                    -v
                }
            })
            .collect();
        Tensor::new(shape, data).expect("shape")
    }

    /// A device tensor filled with NaN: any element a kernel fails to write shows up as non-finite.
    pub fn upload(&self, t: &Tensor) -> Result<GpuTensor> {
        self.gpu.upload(t)
    }

    /// Records `got` (downloaded) against `want` with tolerance `tol`; non-finite output fails.
    pub fn check(&mut self, kernel: &str, case: &str, got: &GpuTensor, want: &Tensor, tol: f64) -> Result<()> {
        let got = self.gpu.download(got)?;
        let err = if got.shape() != want.shape() || !got.all_finite() { f64::INFINITY } else { got.rel_err(want) };
        self.record(kernel, case, err, tol);
        Ok(())
    }

    /// Records a bit-for-bit comparison (error 0 or ∞).
    pub fn check_exact(&mut self, kernel: &str, case: &str, got: &GpuTensor, want: &Tensor) -> Result<()> {
        let got = self.gpu.download(got)?;
        let same =
            got.shape() == want.shape() && got.data().iter().zip(want.data()).all(|(a, b)| a.to_bits() == b.to_bits());
        self.record(kernel, case, if same { 0.0 } else { f64::INFINITY }, 0.0);
        Ok(())
    }

    /// Records a scalar result (e.g. a loss) against its reference.
    pub fn check_scalar(&mut self, kernel: &str, case: &str, got: f32, want: f32, tol: f64) {
        let err = if got.is_finite() {
            (got as f64 - want as f64).abs() / (want as f64).abs().max(1e-12)
        } else {
            f64::INFINITY
        };
        self.record(kernel, case, err, tol);
    }

    fn record(&mut self, kernel: &str, case: &str, err: f64, tol: f64) {
        let launched = self.gpu.take_launched().into_iter().map(String::from).collect();
        self.outcomes.push(Outcome {
            kernel: kernel.into(),
            case: case.into(),
            launched,
            max_rel_err: err,
            tol,
            pass: err <= tol,
        });
    }
}

/// One kernel's part in the suite: the cases it was checked in (named, or launched for), its worst
/// error relative to each case's tolerance, and whether every one of those cases passed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelSummary {
    pub kernel: &'static str,
    pub cases: usize,
    pub max_rel_err: f64,
    /// max over its cases of error / tolerance (≤ 1 passes; exact cases count 0 or ∞).
    pub worst_ratio: f64,
    pub pass: bool,
}

/// Every kernel of the fatbin ([`crate::kernels::KERNEL_NAMES`]) with its cases; a kernel no case
/// ran has `cases == 0` and does not pass.
pub fn per_kernel(outcomes: &[Outcome]) -> Vec<KernelSummary> {
    crate::kernels::KERNEL_NAMES
        .iter()
        .map(|&kernel| {
            let mine: Vec<&Outcome> =
                outcomes.iter().filter(|o| o.kernel == kernel || o.launched.iter().any(|l| l == kernel)).collect();
            let ratio = |o: &Outcome| if o.max_rel_err == 0.0 { 0.0 } else { o.max_rel_err / o.tol };
            KernelSummary {
                kernel,
                cases: mine.len(),
                max_rel_err: mine.iter().map(|o| o.max_rel_err).fold(0.0, f64::max),
                worst_ratio: mine.iter().map(|o| ratio(o)).fold(0.0, f64::max),
                pass: !mine.is_empty() && mine.iter().all(|o| o.pass),
            }
        })
        .collect()
}

/// Runs every family; returns one outcome per (kernel, case). A family that stops on an error (a
/// failed launch) is recorded as one failing outcome, charged to the last kernel it launched, and the
/// next family runs: the report then lists every kernel that fails, not only the first. (On a card a
/// faulting kernel usually breaks the context, and the families after it fail too.)
/// A kernel family's name and its cases.
type Family = (&'static str, fn(&mut Ctx) -> Result<()>);

/// Turns poisoning off again when the suite ends, however it ends.
struct Unpoison<'a>(&'a Gpu);

impl Drop for Unpoison<'_> {
    fn drop(&mut self) {
        self.0.set_poison(false);
    }
}

pub fn run_all(gpu: &Gpu, seed: u64) -> Result<Vec<Outcome>> {
    let mut c = Ctx::new(gpu, seed);
    gpu.take_launched();
    gpu.set_poison(true);
    let _unpoison = Unpoison(gpu);
    let families: [Family; 12] = [
        ("elementwise", elementwise::run),
        ("noise", noise::run),
        ("optim", optim::run),
        ("conv", conv::run),
        ("linear", linear::run),
        ("pool", pool::run),
        ("norm", norm::run),
        ("loss", loss::run),
        ("upsample", upsample::run),
        ("concat", concat::run),
        ("dropout", dropout::run),
        ("attention", attention::run),
    ];
    for (family, run) in families {
        if let Err(e) = run(&mut c) {
            let launched: Vec<String> = gpu.take_launched().into_iter().map(String::from).collect();
            c.outcomes.push(Outcome {
                kernel: launched.last().cloned().unwrap_or_else(|| family.to_string()),
                case: format!("the {family} family stopped here: {e:#}"),
                launched,
                max_rel_err: f64::INFINITY,
                tol: 0.0,
                pass: false,
            });
        }
    }
    gpu.synchronize()?;
    Ok(c.outcomes)
}
