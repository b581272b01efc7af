use std::time::Instant;
fn main() {
    let shapes = [(512usize, 512usize, 512usize), (10, 25, 576), (256, 50, 320), (64, 64, 1024), (20, 250, 256), (1000, 20, 300)];
    for (m, n, k) in shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; n * k];
        let mut c = vec![0f32; m * n];
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            for _ in 0..10 { mtcool::backend::cpu::gemm::sgemm_with_threads(1, false, true, m, n, k, 1.0, &a, k, &b, k, 0.0, &mut c, n); }
            best = best.min(t.elapsed().as_secs_f64() / 10.0);
        }
        println!("{m}x{n}x{k} NT: {:.1} GFLOP/s", 2.0 * (m * n * k) as f64 / best / 1e9);
    }
}
