//! Models: layers that own parameter handles (`layers.rs`), the MultiLeNet extractor and head
//! (`lenet.rs`), the U-Net extractor and its heads (`unet.rs`), and the two-task models built from them
//! (`multitask.rs`).

pub mod layers;
pub mod lenet;
pub mod multitask;
pub mod unet;

pub use layers::Read;
pub use multitask::{Arch, Fusion, Method, ModelConfig, MultiTaskModel, TaskId, TaskSpec};
