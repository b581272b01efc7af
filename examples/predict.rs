//! Embedding mtcool: load a trained checkpoint and predict both digits of MultiMNIST test images.
//!
//!     cargo run --release -- train --epochs 1 --out runs/demo
//!     cargo run --release --example predict -- runs/demo/model.safetensors

use anyhow::{Context, Result};
use mtcool::data::mnist::{default_mnist_dir, load_mnist, Split};
use mtcool::data::multimnist;
use mtcool::predict::Predictor;

fn main() -> Result<()> {
    let path = std::env::args().nth(1).context("usage: predict <model.safetensors>")?;
    let predictor = Predictor::load(&path)?;

    let test = multimnist::build(&load_mnist(&default_mnist_dir(), Split::Test)?, 2, Some(8));
    let (images, left, right) = test.batch(&(0..test.len()).collect::<Vec<_>>());
    for (i, p) in predictor.predict(&images)?.into_iter().enumerate() {
        println!("image {i}: predicted ({}, {}), true ({}, {})", p[0], p[1], left[i], right[i]);
    }
    Ok(())
}
