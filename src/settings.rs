//! Settings of ops that every layer above the backends names (models, losses): they belong to the op,
//! not to one backend, so models and training code import them from here.

/// Stride and zero padding of a 2-d convolution (the same in both spatial dimensions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dCfg {
    pub stride: usize,
    pub padding: usize,
}

/// How soft Dice turns logits into probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiceMode {
    /// Elementwise sigmoid; every channel is an independent binary mask.
    Binary,
    /// Softmax over dim 1; the target is one-hot.
    MultiClass,
}
