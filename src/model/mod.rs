//! Models: layers that own parameter handles (`layers.rs`), the MultiLeNet extractor and head
//! (`lenet.rs`), and the two-task models built from them (`multitask.rs`).

pub mod layers;
pub mod lenet;
pub mod multitask;

pub use layers::Read;
pub use multitask::{Fusion, Method, MultiTaskModel, TaskId};
