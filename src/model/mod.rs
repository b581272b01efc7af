//! Models: layers that own parameter handles (`layers.rs`), the MultiLeNet extractor and head
//! (`lenet.rs`), the U-Net extractor and its heads (`unet.rs`), and the two-task models built from them
//! (`multitask.rs`), and the cross-task attention modules of MTAN, CTAN and MT-CooL's attention fusion
//! (`attention.rs`).

pub mod attention;
pub mod layers;
pub mod lenet;
pub mod multitask;
pub mod unet;

pub use layers::Read;
pub use multitask::{Arch, Fusion, Method, ModelConfig, MultiTaskModel, TaskId, TaskSpec};
