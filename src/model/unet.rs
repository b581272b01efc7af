//! A small U-Net extractor for fundus images, and the pixel-level and image-level heads.
//!
//! Extractor (level widths b, 2b, 4b for base width b; `width` scales each level's count and rounds
//! it on its own, so a fractional width moves the parameter count in small steps), input
//! [B, C, H, W] with H, W divisible by 4 (shown for width 1):
//! ```text
//! e0 = relu(conv3×3 C→b)                              [b,  H,   W]
//! e1 = relu(conv3×3 b→2b (maxpool e0))                [2b, H/2, W/2]
//! m  = relu(conv3×3 4b→4b (relu(conv3×3 2b→4b (maxpool e1))))   [4b, H/4, W/4]
//! d1 = relu(conv3×3 6b→2b (concat(up2(m), e1)))       [2b, H/2, W/2]
//! d0 = relu(conv3×3 3b→b  (concat(up2(d1), e0)))      [b,  H,   W]   ← features
//! ```
//! Heads: segmentation = conv1×1 d→classes per pixel; classification = global average pool, fc d→h,
//! relu, fc h→classes.

use anyhow::Result;

use rand::Rng;

use super::layers::{Conv2d, Level, Linear, ParamGroup, Read, StageState, STAGES};
use crate::params::ParamStore;
use crate::settings::Conv2dCfg;
use crate::tape::{Tape, Var};

const SAME3: Conv2dCfg = Conv2dCfg { stride: 1, padding: 1 };

pub struct UNetExtractor {
    convs: Vec<Conv2d>,
    pub group: ParamGroup,
    pub out_dim: usize,
    widths: [usize; 3],
}

impl UNetExtractor {
    /// `widths`: the channels of the three levels (full, half and quarter resolution).
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_channels: usize,
        widths: [usize; 3],
        rng: &mut impl Rng,
    ) -> Self {
        let [b0, b1, b2] = widths.map(|w| w.max(1));
        let mut group = ParamGroup::default();
        let specs = [
            ("enc0", in_channels, b0),
            ("enc1", b0, b1),
            ("mid0", b1, b2),
            ("mid1", b2, b2),
            ("dec1", b2 + b1, b1),
            ("dec0", b1 + b0, b0),
        ];
        let convs = specs
            .iter()
            .map(|&(name, cin, cout)| {
                Conv2d::new(store, &mut group, &format!("{prefix}.{name}"), cin, cout, 3, SAME3, rng)
            })
            .collect();
        UNetExtractor { convs, group, out_dim: b0, widths: [b0, b1, b2] }
    }

    /// What each stage outputs: e1 [b1, H/2, W/2], m [b2, H/4, W/4], d0 [b0, H, W].
    pub fn levels(&self) -> [Level; STAGES] {
        let [b0, b1, b2] = self.widths;
        [Level::map(b1, None), Level::map(b2, None), Level::map(b0, None)]
    }

    /// Stage 0: e0, e1 (e0 kept for the decoder); stage 1: the bottleneck m (the stage's input, e1 as
    /// the caller may have changed it, is kept); stage 2: the decoder.
    pub fn stage(&self, tape: &mut Tape, store: &ParamStore, i: usize, st: &mut StageState, read: Read) -> Result<()> {
        let g = &self.group;
        let conv_relu =
            |tape: &mut Tape, i: usize, h: Var| -> Result<Var> { self.convs[i].forward_relu(tape, store, g, h, read) };
        st.h = match i {
            0 => {
                let e0 = conv_relu(tape, 0, st.h)?;
                st.skips.push(e0);
                let p0 = tape.max_pool2d(e0, 2, 2)?;
                conv_relu(tape, 1, p0)?
            }
            1 => {
                st.skips.push(st.h);
                let p1 = tape.max_pool2d(st.h, 2, 2)?;
                let m = conv_relu(tape, 2, p1)?;
                conv_relu(tape, 3, m)?
            }
            _ => {
                let (e0, e1) = (st.skips[0], st.skips[1]);
                let u1 = tape.upsample_nearest(st.h, 2)?;
                let c1 = tape.concat_channels(&[u1, e1])?;
                let d1 = conv_relu(tape, 4, c1)?;
                let u0 = tape.upsample_nearest(d1, 2)?;
                let c0 = tape.concat_channels(&[u0, e0])?;
                conv_relu(tape, 5, c0)?
            }
        };
        Ok(())
    }
}

/// Per-pixel logits: conv1×1 features → classes.
pub struct SegHead {
    conv: Conv2d,
    pub group: ParamGroup,
}

impl SegHead {
    pub fn new(store: &mut ParamStore, prefix: &str, in_dim: usize, classes: usize, rng: &mut impl Rng) -> Self {
        let mut group = ParamGroup::default();
        let conv = Conv2d::new(
            store,
            &mut group,
            &format!("{prefix}.conv"),
            in_dim,
            classes,
            1,
            Conv2dCfg { stride: 1, padding: 0 },
            rng,
        );
        SegHead { conv, group }
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, z: Var) -> Result<Var> {
        self.conv.forward(tape, store, &self.group, z, Read::Train)
    }
}

/// Image-level logits: global average pool, fc, relu, fc.
pub struct PoolHead {
    fc1: Linear,
    fc2: Linear,
    pub group: ParamGroup,
}

impl PoolHead {
    pub fn new(
        store: &mut ParamStore,
        prefix: &str,
        in_dim: usize,
        hidden: usize,
        classes: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let mut group = ParamGroup::default();
        let fc1 = Linear::new(store, &mut group, &format!("{prefix}.fc1"), in_dim, hidden, rng);
        let fc2 = Linear::new(store, &mut group, &format!("{prefix}.fc2"), hidden, classes, rng);
        PoolHead { fc1, fc2, group }
    }

    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, z: Var) -> Result<Var> {
        let h = tape.global_avg_pool(z)?;
        let h = self.fc1.forward(tape, store, &self.group, h, Read::Train)?;
        let h = tape.relu(h)?;
        self.fc2.forward(tape, store, &self.group, h, Read::Train)
    }
}
