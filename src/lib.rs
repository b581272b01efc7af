//! mtcool: a training engine for cooperative multi-task learning (MT-CooL), written from scratch.
//!
//! Layers, one direction of dependency: `cli` → `train`/`mtl` → `model` → `tape` → `backend` → kernels.

pub mod backend;
pub mod capi;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod device;
pub mod gradcheck;
pub mod info;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod mtl;
pub mod noise;
pub mod optim;
pub mod params;
pub mod parity;
pub mod predict;
pub mod predict_files;
pub mod preprocess;
pub mod profile;
pub mod settings;
pub mod tape;
pub mod tensor;
pub mod train;
pub mod viz;

pub use tensor::Tensor;
