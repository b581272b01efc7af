//! MultiLeNet (Sener & Koltun 2018) for MultiMNIST. Extractor: conv5×5 1→10, max-pool 2, relu,
//! conv5×5 10→20, max-pool 2, relu, fc 320→50, relu. Head: fc d→50, relu, fc 50→10.
//! `width` multiplies every hidden size (channels and the 50s), so parameter counts can be matched.

use anyhow::Result;

use rand::Rng;

use super::layers::{Conv2d, Level, Linear, ParamGroup, Read, StageState, STAGES};
use crate::params::ParamStore;
use crate::settings::Conv2dCfg;
use crate::tape::{Tape, Var};

/// Hidden sizes scaled by `width` (at least 1).
fn scaled(base: usize, width: f32) -> usize {
    ((base as f32 * width).round() as usize).max(1)
}

pub struct LeNetExtractor {
    conv1: Conv2d,
    conv2: Conv2d,
    fc: Linear,
    /// The extractor's parameters as one flat θ (noise indices, b-box).
    pub group: ParamGroup,
    pub out_dim: usize,
}

impl LeNetExtractor {
    pub fn new(store: &mut ParamStore, prefix: &str, width: f32, rng: &mut impl Rng) -> Self {
        let (c1, c2, d) = (scaled(10, width), scaled(20, width), scaled(50, width));
        let mut group = ParamGroup::default();
        let cfg = Conv2dCfg { stride: 1, padding: 0 };
        let conv1 = Conv2d::new(store, &mut group, &format!("{prefix}.conv1"), 1, c1, 5, cfg, rng);
        let conv2 = Conv2d::new(store, &mut group, &format!("{prefix}.conv2"), c1, c2, 5, cfg, rng);
        let fc = Linear::new(store, &mut group, &format!("{prefix}.fc"), c2 * 4 * 4, d, rng);
        LeNetExtractor { conv1, conv2, fc, group, out_dim: d }
    }

    /// What each stage outputs: [c1, 12, 12], [c2, 4, 4], then the feature vector.
    pub fn levels(&self) -> [Level; STAGES] {
        let (c1, c2) = (self.conv1.out_channels(), self.conv2.out_channels());
        [Level::map(c1, Some(144)), Level::map(c2, Some(16)), Level::vector(self.out_dim)]
    }

    /// Runs stage `i` on `st.h`: conv1-pool-relu, conv2-pool-relu, flatten-fc-relu.
    pub fn stage(&self, tape: &mut Tape, store: &ParamStore, i: usize, st: &mut StageState, read: Read) -> Result<()> {
        let g = &self.group;
        let h = st.h;
        st.h = match i {
            0 | 1 => {
                let conv = if i == 0 { &self.conv1 } else { &self.conv2 };
                let h = conv.forward_max_pool(tape, store, g, h, read)?;
                tape.relu(h)?
            }
            _ => {
                let b = tape.value(h).shape()[0];
                let flat = tape.value(h).numel() / b;
                let h = tape.reshape(h, &[b, flat])?;
                let h = self.fc.forward(tape, store, g, h, read)?;
                tape.relu(h)?
            }
        };
        Ok(())
    }
}

pub struct LeNetHead {
    fc1: Linear,
    fc2: Linear,
    pub group: ParamGroup,
}

impl LeNetHead {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_dim: usize,
        width: f32,
        classes: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let mut group = ParamGroup::default();
        let hidden = scaled(50, width);
        let fc1 = Linear::new(store, &mut group, &format!("{prefix}.fc1"), in_dim, hidden, rng);
        let fc2 = Linear::new(store, &mut group, &format!("{prefix}.fc2"), hidden, classes, rng);
        LeNetHead { fc1, fc2, group }
    }

    /// features [B, in_dim] → logits [B, classes]. Heads are always read trainable (or under no-grad).
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, z: Var) -> Result<Var> {
        let h = self.fc1.forward(tape, store, &self.group, z, Read::Train)?;
        let h = tape.relu(h)?;
        self.fc2.forward(tape, store, &self.group, h, Read::Train)
    }
}
