use std::time::Instant;
fn main() {
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..1000 { std::thread::scope(|s| { s.spawn(|| std::hint::black_box(1)); }); }
        println!("scope+spawn+join: {:.1} us", t.elapsed().as_secs_f64() * 1e3);
    }
}
