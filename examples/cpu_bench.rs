//! CPU conv / linear speed on the MultiLeNet layers at batch 256: the fast (im2col + sgemm) functions
//! against the `*_naive` reference loops, forward and both backwards, in GFLOP/s.
//!
//!   cargo run --release --example cpu_bench [-- --batch 256 --runs 9 --fast-only --only conv1]
//!
//! Each timing is the median of several runs after one warm-up run (the fastest run is shown too,
//! for noisy machines). `MTCOOL_THREADS` sets the threads of the fast path (the naive loops are
//! single-threaded).

use std::time::Instant;

use mtcool::backend::cpu::conv::*;
use mtcool::backend::cpu::linear::*;
use mtcool::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// (median, fastest) wall time of `runs` calls of `f`, in seconds, after one warm-up call.
fn time_secs(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

struct Row {
    name: String,
    flops: f64,
    /// (median, fastest) seconds.
    fast: (f64, f64),
    naive: Option<(f64, f64)>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (batch, runs) = (arg("--batch", 256), arg("--runs", 9));
    let fast_only = args.iter().any(|a| a == "--fast-only");
    // `--only TEXT`: bench only the layers whose name contains TEXT (e.g. for profiling one layer).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned().unwrap_or_default();
    let naive_runs = 3;
    let mut rng = StdRng::seed_from_u64(0);
    let mut rows: Vec<Row> = Vec::new();

    // (name, Ci, H, Co, k, padding, batch): MultiLeNet's conv5×5 layers, then the fundus U-Net's
    // 3×3 "same" layers (batch 16, 64²).
    let layers = [
        ("conv1 1→10 28²", 1, 28, 10, 5, 0, batch),
        ("conv2 10→20 12²", 10, 12, 20, 5, 0, batch),
        ("unet enc0 3→8 64²", 3, 64, 8, 3, 1, 16),
        ("unet enc1 8→16 32²", 8, 32, 16, 3, 1, 16),
        ("unet mid1 32→32 16²", 32, 16, 32, 3, 1, 16),
        ("unet dec1 48→16 32²", 48, 32, 16, 3, 1, 16),
        ("unet dec0 24→8 64²", 24, 64, 8, 3, 1, 16),
    ];
    for (name, ci, hw, co, k, padding, batch) in layers {
        if !name.contains(&only) {
            continue;
        }
        let cfg = Conv2dCfg { stride: 1, padding };
        let x = Tensor::randn(&[batch, ci, hw, hw], 1.0, &mut rng);
        let w = Tensor::randn(&[co, ci, k, k], 0.2, &mut rng);
        let b = Tensor::randn(&[co], 0.1, &mut rng);
        let y = conv2d_forward(&x, &w, Some(&b), cfg);
        let dy = Tensor::randn(y.shape(), 1.0, &mut rng);
        let flops = 2.0 * (y.numel() * ci * k * k) as f64;
        let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
        let mut bench = |what: &str, fast: &dyn Fn() -> Tensor, naive: &dyn Fn() -> Tensor| {
            let name = format!("{name} {what}");
            if !name.contains(&only) {
                return;
            }
            rows.push(Row {
                name,
                flops,
                fast: time_secs(runs, || drop(fast())),
                naive: (!fast_only).then(|| time_secs(naive_runs, || drop(naive()))),
            });
        };
        bench("fwd", &|| conv2d_forward(&x, &w, Some(&b), cfg), &|| conv2d_forward_naive(&x, &w, Some(&b), cfg));
        bench("bwd data", &|| conv2d_backward_data(&dy, &w, &xs, cfg), &|| {
            conv2d_backward_data_naive(&dy, &w, &xs, cfg)
        });
        bench("bwd weight", &|| conv2d_backward_weight(&dy, &x, &ws, cfg), &|| {
            conv2d_backward_weight_naive(&dy, &x, &ws, cfg)
        });
    }

    for (name, fin, fout) in [("fc1 320→50", 320, 50), ("fc2 50→50", 50, 50), ("fc3 50→10", 50, 10)] {
        let x = Tensor::randn(&[batch, fin], 1.0, &mut rng);
        let w = Tensor::randn(&[fout, fin], 0.1, &mut rng);
        let b = Tensor::randn(&[fout], 0.1, &mut rng);
        let dy = Tensor::randn(&[batch, fout], 1.0, &mut rng);
        let macs = (batch * fin * fout) as f64;
        if !name.contains(&only) {
            continue;
        }
        rows.push(Row {
            name: format!("{name} fwd"),
            flops: 2.0 * macs,
            fast: time_secs(runs, || drop(linear_forward(&x, &w, Some(&b)))),
            naive: (!fast_only).then(|| time_secs(naive_runs, || drop(linear_forward_naive(&x, &w, Some(&b))))),
        });
        rows.push(Row {
            name: format!("{name} bwd (dx+dw+db)"),
            flops: 4.0 * macs,
            fast: time_secs(runs, || drop(linear_backward(&x, &w, &dy))),
            naive: (!fast_only).then(|| time_secs(naive_runs, || drop(linear_backward_naive(&x, &w, &dy)))),
        });
    }

    // Memory-bound ops on the conv outputs (MFLOP column: millions of input elements).
    for (name, c, hw) in [("pool1 10×24²", 10, 24), ("pool2 20×8²", 20, 8)] {
        if !name.contains(&only) {
            continue;
        }
        let x = Tensor::randn(&[batch, c, hw, hw], 1.0, &mut rng);
        let (y, argmax) = mtcool::backend::cpu::pool::max_pool2d_forward(&x, 2, 2);
        let elems = x.numel() as f64;
        let fast = time_secs(runs, || drop(mtcool::backend::cpu::pool::max_pool2d_forward(&x, 2, 2)));
        rows.push(Row { name: format!("{name} max_pool fwd"), flops: elems, fast, naive: None });
        let fast = time_secs(runs, || drop(mtcool::backend::cpu::pool::max_pool2d_backward(&y, &argmax, x.shape())));
        rows.push(Row { name: format!("{name} max_pool bwd"), flops: elems, fast, naive: None });
        let fast = time_secs(runs, || drop(mtcool::backend::cpu::elementwise::add_channel_bias_backward(&x)));
        rows.push(Row { name: format!("{name} bias bwd"), flops: elems, fast, naive: None });
    }

    // SGEMM 1024³, the yardstick of the FMA-peak target.
    if "sgemm 1024³".contains(&only) || only.is_empty() {
        let m = 1024;
        let a: Vec<f32> = Tensor::randn(&[m, m], 1.0, &mut rng).data().to_vec();
        let b: Vec<f32> = Tensor::randn(&[m, m], 1.0, &mut rng).data().to_vec();
        let mut c = vec![0f32; m * m];
        let fast = time_secs(runs, || {
            mtcool::backend::cpu::gemm::sgemm(false, false, m, m, m, 1.0, &a, m, &b, m, 0.0, &mut c, m)
        });
        rows.push(Row { name: "sgemm 1024³".into(), flops: 2.0 * (m * m * m) as f64, fast, naive: None });
    }

    let threads = mtcool::backend::cpu::gemm::num_threads();
    println!(
        "MultiLeNet layers, batch {batch}, fast path on {threads} thread(s), median of {runs} (naive: {naive_runs})"
    );
    println!(
        "{:<30} {:>7} {:>9} {:>8} {:>9} {:>10} {:>8} {:>8}",
        "layer", "MFLOP", "fast ms", "GFLOP/s", "(best ms)", "naive ms", "GFLOP/s", "speedup"
    );
    let (mut fast_total, mut naive_total) = (0.0, 0.0);
    for r in &rows {
        let (fast, best) = r.fast;
        fast_total += fast;
        let gf = |t: f64| r.flops / t / 1e9;
        let (naive_ms, naive_gf, speedup) = match r.naive {
            Some((t, _)) => {
                naive_total += t;
                (format!("{:.2}", t * 1e3), format!("{:.2}", gf(t)), format!("{:.1}x", t / fast))
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<30} {:>7.1} {:>9.3} {:>8.2} {:>9.3} {:>10} {:>8} {:>8}",
            r.name,
            r.flops / 1e6,
            fast * 1e3,
            gf(fast),
            best * 1e3,
            naive_ms,
            naive_gf,
            speedup
        );
    }
    let peak = mtcool::backend::cpu::gemm::fma_peak(threads, 0.2);
    println!("FMA peak ({}, {threads} threads): {peak:.1} GFLOP/s", mtcool::backend::cpu::gemm::isa().name());
    print!("total (one fwd + bwd of these layers): fast {:.2} ms", fast_total * 1e3);
    if !fast_only {
        print!(", naive {:.1} ms ({:.1}x)", naive_total * 1e3, naive_total / fast_total);
    }
    println!();
}
