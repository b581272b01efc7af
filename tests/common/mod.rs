//! Helpers shared by the integration tests (`mod common;` in each): tensors and finite differences for
//! the `ops_*` CPU reference tests, and the real-MNIST location for the data and training tests. Not
//! every test file uses every helper, hence the `#[allow(dead_code)]`s.

use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::Rng;

/// A tensor of `shape` holding a copy of `data`.
#[allow(dead_code)]
pub fn t(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape, data.to_vec()).unwrap()
}

/// Random entries with |v| in [0.5, 1.5) and a random sign: never zero.
#[allow(dead_code)]
pub fn nonzero(shape: &[usize], rng: &mut StdRng) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let m: f32 = rng.random_range(0.5..1.5);
            if rng.random_bool(0.5) {
                m
            } else {
                -m
            }
        })
        .collect();
    Tensor::new(shape, data).unwrap()
}

/// ⟨a, b⟩ (e.g. Σ r·y) accumulated in f64; the shapes must match.
#[allow(dead_code)]
pub fn dot(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data().iter().zip(b.data()).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// Central finite-difference gradient of the scalar `f` at `x`, one element at a time. Divides by
/// the step actually taken in f32 (x + eps) − (x − eps), not by 2·eps.
#[allow(dead_code)]
pub fn fd_grad(x: &Tensor, eps: f32, f: impl Fn(&Tensor) -> f64) -> Tensor {
    let mut g = Tensor::zeros(x.shape());
    for i in 0..x.numel() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp.data_mut()[i] += eps;
        xm.data_mut()[i] -= eps;
        let h = xp.data()[i] as f64 - xm.data()[i] as f64;
        g.data_mut()[i] = ((f(&xp) - f(&xm)) / h) as f32;
    }
    g
}

/// Same shape and relative error `got.rel_err(want)` ≤ `tol`.
#[allow(dead_code)]
pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.shape(), want.shape());
    let e = got.rel_err(want);
    assert!(e <= tol, "rel err {e:e} > {tol:e}\n got  {:?}\n want {:?}", got.data(), want.data());
}

/// Same length and every element within `tol` absolutely: |a[i] − b[i]| ≤ tol.
#[allow(dead_code)]
pub fn assert_close_abs(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "element {i}: {x} vs {y} (got {a:?}, want {b:?})");
    }
}

/// The real MNIST folder (`default_mnist_dir()`) when all four IDX files are there (raw or .gz). When
/// they are not, tests skip with a message, except under CI (CI=true), where that is a failure.
#[allow(dead_code)]
pub fn real_mnist_dir() -> Option<std::path::PathBuf> {
    let dir = mtcool::data::mnist::default_mnist_dir();
    let have =
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
            .iter()
            .all(|f| dir.join(f).is_file() || dir.join(format!("{f}.gz")).is_file());
    if have {
        return Some(dir);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("MNIST not found in {} and CI=true: the dataset must be present in CI", dir.display());
    }
    eprintln!("skipping real-MNIST test: no dataset in {} (set MTCOOL_MNIST_DIR)", dir.display());
    None
}

/// Runs the built `mtcool` binary with `args`.
#[allow(dead_code)]
pub fn run_mtcool(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mtcool")).args(args).output().expect("run mtcool")
}

/// Fails with the command's stdout and stderr unless it succeeded.
#[allow(dead_code)]
pub fn assert_ok(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A JSON file's contents.
#[allow(dead_code)]
pub fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Re-evaluates a finished run folder in process (`mtcool::train::eval_run`: reloads model.safetensors,
/// rebuilds the test split from config.json) and asserts that every metric in its summary.json comes
/// out numerically the same (summary.json's `null` is a NaN metric), and that no metric is missing or
/// extra. Returns how many metrics were compared.
#[allow(dead_code)]
pub fn assert_eval_reproduces(run: &std::path::Path) -> usize {
    let (_, metrics) = mtcool::train::eval_run(run, None).expect("re-evaluating the run");
    let summary = read_json(&run.join("summary.json"));
    let mut compared = 0;
    for (t, got) in metrics.iter().enumerate() {
        let want = summary["metrics"][t].as_object().expect("summary.json metrics");
        assert!(!want.is_empty(), "task {}: summary.json has no metrics", t + 1);
        let (mut a, mut b): (Vec<&String>, Vec<&String>) = (want.keys().collect(), got.keys().collect());
        a.sort();
        b.sort();
        assert_eq!(a, b, "task {}: metric names differ", t + 1);
        for (k, v) in want {
            let g = got[k];
            match v.as_f64() {
                Some(w) => assert!(g == w, "task {} {k}: re-evaluated {g} vs summary.json {w}", t + 1),
                None => assert!(g.is_nan(), "task {} {k}: re-evaluated {g} vs summary.json null", t + 1),
            }
            compared += 1;
        }
    }
    compared
}

/// The emulated device's counters (live allocs, live bytes, peak bytes, alloc calls, free calls,
/// launches, races, bytes to and from the device), read through its exported `mtcemu_stats` from the
/// libcuda this process already loaded (a child process started with LD_LIBRARY_PATH at emu/).
#[allow(dead_code)]
pub fn emu_stats() -> [u64; 9] {
    // SAFETY: dlopen with RTLD_NOLOAD only finds the loaded library; the symbol is the emulator's
    // `int mtcemu_stats(uint64_t out[9])`.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert!(!lib.is_null(), "libcuda.so.1 is not loaded");
        let f = libc::dlsym(lib, c"mtcemu_stats".as_ptr());
        assert!(!f.is_null(), "the loaded libcuda is not the emulator");
        let f: extern "C" fn(*mut [u64; 9]) -> i32 = std::mem::transmute(f);
        let mut s = [0u64; 9];
        assert_eq!(f(&mut s), 0);
        s
    }
}

/// Waits until the run folder `run` holds a checkpoint whose global step lies in `steps`, then kills
/// `child` (SIGKILL) and reaps it; fails if the run ends first or no such checkpoint appears in 5 min.
#[allow(dead_code)]
pub fn kill_after_checkpoint(child: &mut std::process::Child, run: &std::path::Path, steps: std::ops::Range<u32>) {
    let t0 = std::time::Instant::now();
    while !mtcool::train::resume::list(run).iter().any(|(n, _)| steps.contains(n)) {
        assert!(t0.elapsed() < std::time::Duration::from_secs(300), "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
}

/// The config `mtcool train` builds from these flags (`mtcool train` prepended).
#[allow(dead_code)]
pub fn train_config(flags: &[&str]) -> mtcool::train::TrainConfig {
    let mut argv = vec!["mtcool", "train"];
    argv.extend(flags);
    match <mtcool::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap().command {
        mtcool::cli::Command::Train(t) => t.config(),
        _ => unreachable!(),
    }
}
