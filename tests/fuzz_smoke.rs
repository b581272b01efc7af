//! Stable-Rust smoke fuzzing of the same targets as `fuzz/` (cargo-fuzz needs nightly): each target gets
//! `RUNS` inputs — valid seeds mutated by a seeded RNG (bit flips, interesting values, inserts, deletes,
//! truncation, splices) and some pure noise — and must not panic. Every seed must parse first (a reader
//! that rejected everything would survive any input), and each target reports how many of its mutated
//! inputs parsed and how many were rejected; both must happen. `MTCOOL_FUZZ_RUNS` changes the count;
//! `MTCOOL_FUZZ_SEEDS=DIR` also writes the seed inputs to DIR/<target>/ (a corpus for `cargo fuzz run`).

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../fuzz/targets.rs"]
mod targets;

const RUNS: usize = 20_000;

fn runs() -> usize {
    std::env::var("MTCOOL_FUZZ_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(RUNS)
}

/// One random mutation of `v`.
fn mutate(v: &mut Vec<u8>, rng: &mut StdRng) {
    const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];
    let len = v.len();
    let at = |rng: &mut StdRng| if len == 0 { 0 } else { rng.random_range(0..len) };
    match rng.random_range(0..8) {
        0 if len > 0 => {
            let i = at(rng);
            v[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = at(rng);
            v[i] = rng.random();
        }
        2 if len >= 8 => {
            let i = rng.random_range(0..=len - 8);
            let x = INTERESTING[rng.random_range(0..INTERESTING.len())];
            let bytes = if rng.random() { x.to_le_bytes() } else { x.to_be_bytes() };
            let w = [1, 2, 4, 8][rng.random_range(0..4)];
            v[i..i + w].copy_from_slice(&bytes[..w]);
        }
        3 => {
            let i = at(rng);
            let n = rng.random_range(1..=16);
            let ins: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            v.splice(i..i, ins);
        }
        4 if len > 0 => {
            let i = at(rng);
            let n = rng.random_range(1..=(len - i).min(64));
            v.drain(i..i + n);
        }
        5 => v.truncate(at(rng)),
        6 if len > 0 => {
            // Copy a chunk of the input over another place in it.
            let (i, j) = (at(rng), at(rng));
            let n = rng.random_range(1..=(len - i.max(j)).min(32));
            let chunk = v[i..i + n].to_vec();
            v[j..j + n].copy_from_slice(&chunk);
        }
        _ => {
            let i = at(rng);
            if i < len {
                v[i] = v[i].wrapping_add(rng.random_range(1..=4)).wrapping_sub(2);
            }
        }
    }
}

/// Runs `target` on `runs()` inputs derived from `seeds`; returns the executions count.
fn smoke(name: &str, seeds: &[Vec<u8>], target: fn(&[u8]) -> bool) -> usize {
    if let Some(dir) = std::env::var_os("MTCOOL_FUZZ_SEEDS") {
        let dir = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        seeds.iter().enumerate().for_each(|(i, s)| std::fs::write(dir.join(format!("seed-{i}")), s).unwrap());
    }
    let mut rng = StdRng::seed_from_u64(0xf022 ^ name.len() as u64);
    let start = Instant::now();
    let n = runs();
    let (mut parsed, mut rejected) = (0usize, 0usize);
    for i in 0..n {
        let input: Vec<u8> = if i < seeds.len() {
            seeds[i].clone()
        } else if rng.random_ratio(1, 20) {
            (0..rng.random_range(0..256)).map(|_| rng.random()).collect()
        } else {
            let mut v = seeds[rng.random_range(0..seeds.len())].clone();
            for _ in 0..rng.random_range(1..=4) {
                mutate(&mut v, &mut rng);
            }
            v
        };
        let Ok(ok) = catch_unwind(AssertUnwindSafe(|| target(&input))) else {
            let hex: String = input.iter().take(64).map(|b| format!("{b:02x}")).collect();
            panic!("{name}: input {i} ({} bytes, starting {hex}) panicked", input.len());
        };
        if i < seeds.len() {
            assert!(ok, "{name}: seed {i} does not parse: the reader rejects valid input");
        } else if ok {
            parsed += 1;
        } else {
            rejected += 1;
        }
    }
    eprintln!(
        "{name}: {n} executions in {:.1}s, no panic; of the mutated inputs {parsed} parsed, {rejected} were rejected",
        start.elapsed().as_secs_f64()
    );
    assert!(n <= seeds.len() || (parsed > 0 && rejected > 0), "{name}: {parsed} parsed, {rejected} rejected");
    n
}

fn idx(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend(payload);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_reader_survives_mutated_input() {
    let images = idx(&[2, 3, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    let labels = idx(&[4], &[0, 1, 9, 3]);
    let seeds = vec![gzip(&images), gzip(&labels), images, labels];
    assert_eq!(smoke("idx", &seeds, targets::idx), runs());
}

#[test]
fn image_decoders_survive_mutated_input() {
    let img = image::RgbImage::from_fn(6, 5, |x, y| image::Rgb([(x * 40) as u8, (y * 50) as u8, 200]));
    let mask = image::GrayImage::from_fn(6, 5, |x, _| image::Luma([[0, 128, 255][x as usize % 3]]));
    let encode = |img: image::DynamicImage, fmt| {
        let mut out = std::io::Cursor::new(vec![]);
        img.write_to(&mut out, fmt).unwrap();
        out.into_inner()
    };
    let seeds = vec![
        encode(img.clone().into(), image::ImageFormat::Png),
        encode(img.clone().into(), image::ImageFormat::Bmp),
        encode(img.into(), image::ImageFormat::Jpeg),
        encode(mask.clone().into(), image::ImageFormat::Png),
        encode(mask.into(), image::ImageFormat::Bmp),
    ];
    assert_eq!(smoke("image", &seeds, targets::image), runs());
}

#[test]
fn checkpoint_readers_survive_mutated_input() {
    // The smallest fundus model (U-Net base 1) as a model file and as a training checkpoint.
    let args = ["mtcool", "train", "--task", "fundus", "--width", "0.125", "--epochs", "1"];
    let cfg = match mtcool::cli::Cli::try_parse_from(args).unwrap().command {
        mtcool::cli::Command::Train(t) => t.config(),
        _ => unreachable!(),
    };
    let model = mtcool::model::MultiTaskModel::new(cfg.model_config(), 0);
    let pos = mtcool::train::resume::Position { epoch: 1, step_in_epoch: 2, global_step: 2, ..Default::default() };
    let ckpt = mtcool::train::resume::to_bytes(&model, &cfg.optimizer(), &cfg, &pos).unwrap();
    assert!(mtcool::train::resume::from_bytes(&ckpt, &cfg, 3).is_ok());
    let seeds = vec![mtcool::checkpoint::to_bytes(&model).unwrap(), ckpt];
    assert_eq!(smoke("checkpoint", &seeds, targets::checkpoint), runs());
}
