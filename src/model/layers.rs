//! Layers: each owns `ParamId`s in a `ParamStore` and records its forward on a tape. How parameters are
//! read is chosen per call (`Read`): trainable, or frozen — optionally with MT-CooL's weight noise.

use rand::Rng;

use anyhow::Result;

use crate::backend::dispatch::LayerNoise;
use crate::noise::{NoiseKey, WeightNoise};
use crate::params::{ParamId, ParamStore};
use crate::settings::Conv2dCfg;
use crate::tape::{Tape, Var};
use crate::Tensor;

/// How a forward pass reads a module's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Read {
    /// Trainable: gradients flow into the store.
    Train,
    /// Frozen, no gradient; with `Some((key, b))` every weight gets ε ~ U(−b, b), drawn at its index in
    /// the module's flat parameter vector (see `ParamGroup`).
    Frozen(Option<(NoiseKey, f32)>),
}

/// An ordered list of parameters seen as one flat vector θ (the noise index space and the b-box).
#[derive(Clone, Debug, Default)]
pub struct ParamGroup {
    ids: Vec<ParamId>,
    offsets: Vec<u32>,
    len: usize,
}

impl ParamGroup {
    pub fn push(&mut self, id: ParamId, numel: usize) {
        self.ids.push(id);
        self.offsets.push(self.len as u32);
        self.len += numel;
        assert!(self.len <= u32::MAX as usize, "parameter group exceeds the 2^32 noise index space");
    }
    pub fn ids(&self) -> &[ParamId] {
        &self.ids
    }
    /// Number of scalars in θ.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn offset(&self, id: ParamId) -> u32 {
        self.offsets[self.ids.iter().position(|&p| p == id).expect("param in group")]
    }

    /// Puts parameter `id` on the tape as `read` asks.
    pub fn read(&self, tape: &mut Tape, store: &ParamStore, id: ParamId, read: Read) -> Result<Var> {
        match read {
            Read::Train => Ok(tape.param(store, id)),
            Read::Frozen(noise) => {
                let noise = noise.map(|(key, b)| WeightNoise { key, b, offset: self.offset(id) });
                tape.frozen_param(store, id, noise)
            }
        }
    }

    /// A layer's weight and bias as `read` asks, and the noise its op should add to them: noisy frozen
    /// weights go on the tape clean, and the layer's kernel adds ε as it reads them (no perturbed copy).
    fn read_layer(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        weight: ParamId,
        bias: ParamId,
        read: Read,
    ) -> Result<(Var, Var, Option<LayerNoise>)> {
        match read {
            Read::Frozen(Some((key, b))) => {
                let (w, bv) = (tape.frozen_param(store, weight, None)?, tape.frozen_param(store, bias, None)?);
                let noise = LayerNoise { key, b, w_offset: self.offset(weight), b_offset: self.offset(bias) };
                Ok((w, bv, Some(noise)))
            }
            _ => Ok((self.read(tape, store, weight, read)?, self.read(tape, store, bias, read)?, None)),
        }
    }
}

/// PyTorch's default initialisation for conv and linear layers: U(−1/√fan_in, 1/√fan_in) for weights
/// (kaiming_uniform with a = √5) and biases.
fn default_init(shape: &[usize], fan_in: usize, rng: &mut impl Rng) -> Tensor {
    let bound = 1.0 / (fan_in as f32).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

/// Extractors run in `STAGES` stages, so cross-task modules can act between them (CTAN mixes the two
/// extractors after stages 0 and 1: "encoder" and "bottleneck"; MTAN gates every stage's output).
pub const STAGES: usize = 3;

/// What flows between stages: the current value and what later stages read again (U-Net skips).
pub struct StageState {
    pub h: Var,
    pub skips: Vec<Var>,
}

impl StageState {
    pub fn new(x: Var) -> Self {
        StageState { h: x, skips: vec![] }
    }
}

/// The shape of a stage's output: a feature map [B, channels, H, W] (with H·W when the architecture
/// fixes it) or a feature vector [B, channels].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    pub channels: usize,
    pub vector: bool,
    pub pixels: Option<usize>,
}

impl Level {
    pub fn map(channels: usize, pixels: Option<usize>) -> Self {
        Level { channels, vector: false, pixels }
    }
    pub fn vector(channels: usize) -> Self {
        Level { channels, vector: true, pixels: None }
    }
}

pub struct Conv2d {
    pub weight: ParamId,
    pub bias: ParamId,
    pub cfg: Conv2dCfg,
    out_channels: usize,
}

impl Conv2d {
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Registers `<name>.weight` [out, in, k, k] and `<name>.bias` [out].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        group: &mut ParamGroup,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        cfg: Conv2dCfg,
        rng: &mut impl Rng,
    ) -> Self {
        let fan_in = cin * k * k;
        let weight = store.add(&format!("{name}.weight"), default_init(&[cout, cin, k, k], fan_in, rng));
        let bias = store.add(&format!("{name}.bias"), default_init(&[cout], fan_in, rng));
        group.push(weight, cout * cin * k * k);
        group.push(bias, cout);
        Conv2d { weight, bias, cfg, out_channels: cout }
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, group: &ParamGroup, x: Var, read: Read) -> Result<Var> {
        match group.read_layer(tape, store, self.weight, self.bias, read)? {
            (w, b, None) => tape.conv2d(x, w, Some(b), self.cfg),
            (w, b, Some(noise)) => tape.conv2d_noisy(x, w, Some(b), self.cfg, noise),
        }
    }

    /// relu(`forward`), as one tape op (`Tape::conv2d_relu`).
    pub fn forward_relu(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        group: &ParamGroup,
        x: Var,
        read: Read,
    ) -> Result<Var> {
        let (w, b, noise) = group.read_layer(tape, store, self.weight, self.bias, read)?;
        tape.conv2d_relu(x, w, Some(b), self.cfg, noise)
    }

    /// `forward` then a 2×2 max-pool, as one tape op (`Tape::conv2d_max_pool`).
    pub fn forward_max_pool(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        group: &ParamGroup,
        x: Var,
        read: Read,
    ) -> Result<Var> {
        let (w, b, noise) = group.read_layer(tape, store, self.weight, self.bias, read)?;
        tape.conv2d_max_pool(x, w, Some(b), self.cfg, noise)
    }
}

pub struct Linear {
    pub weight: ParamId,
    pub bias: ParamId,
}

impl Linear {
    /// Registers `<name>.weight` [out, in] and `<name>.bias` [out].
    pub fn new(
        store: &mut ParamStore,
        group: &mut ParamGroup,
        name: &str,
        din: usize,
        dout: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let weight = store.add(&format!("{name}.weight"), default_init(&[dout, din], din, rng));
        let bias = store.add(&format!("{name}.bias"), default_init(&[dout], din, rng));
        group.push(weight, dout * din);
        group.push(bias, dout);
        Linear { weight, bias }
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, group: &ParamGroup, x: Var, read: Read) -> Result<Var> {
        match group.read_layer(tape, store, self.weight, self.bias, read)? {
            (w, b, None) => tape.linear(x, w, Some(b)),
            (w, b, Some(noise)) => tape.linear_noisy(x, w, Some(b), noise),
        }
    }
}
