//! Attention modules between tasks.
//!
//! `CrossAttention` (CTAN, and MT-CooL's `--fusion attention`): queries from one task's features,
//! keys and values from the other task's, all by 1×1 convolutions:
//! ```text
//! Q = Wq·x_q [B, dk, N]   K = Wk·x_kv [B, dk, M]   V = Wv·x_kv [B, C, M]
//! out = V · softmax(QᵀK / √dk)ᵀ  → [B, C, N], reshaped like x_q
//! ```
//! N, M are the positions of a feature map; a feature vector [B, d] is read as d one-channel tokens.
//! Keys and values come from x_kv average-pooled (2×2 steps) until at most `MAX_KEYS` positions remain,
//! so full-resolution fundus features cost O(N · 256), not O(N²).
//!
//! `MtanTower` (MTAN, Liu et al. 2019, simplified): one per task over a shared extractor's stage
//! outputs L_0, L_1, L_2. Task t keeps u_j = L_j ⊙ σ(a_j) with a_0 = Gate_t0(L_0) and
//! a_j = Gate_tj([L_j, v_j]), v_j = relu(Bridge_j(resize(u_{j−1}))): task-specific 1×1 gates, bridges
//! (3×3 conv, or a linear layer into a vector level) shared by the tasks, as in the paper's code.

use anyhow::Result;

use rand::Rng;

use super::layers::{Conv2d, Level, Linear, ParamGroup, Read};
use crate::params::ParamStore;
use crate::settings::Conv2dCfg;
use crate::tape::{Tape, Var};

/// Most key/value positions of a cross attention (see the module notes).
pub const MAX_KEYS: usize = 256;

const ONE: Conv2dCfg = Conv2dCfg { stride: 1, padding: 0 };
const SAME3: Conv2dCfg = Conv2dCfg { stride: 1, padding: 1 };

/// [B, C, H, W] as is; [B, d] as [B, 1, d, 1].
fn as_map(tape: &mut Tape, x: Var) -> Result<Var> {
    let s = tape.value(x).shape().to_vec();
    if s.len() == 2 {
        tape.reshape(x, &[s[0], 1, s[1], 1])
    } else {
        Ok(x)
    }
}

pub struct CrossAttention {
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    dk: usize,
}

impl CrossAttention {
    /// For queries of `level`'s shape and keys/values from `others` feature sets of that shape (the
    /// other tasks'). Maps are joined along channels (k, v read `others`·C channels), vectors along
    /// their tokens; with one other task both are the plain two-task module. Parameters go into `group`.
    pub fn new(
        store: &mut ParamStore,
        group: &mut ParamGroup,
        name: &str,
        level: Level,
        others: usize,
        rng: &mut impl Rng,
    ) -> Self {
        let c = if level.vector { 1 } else { level.channels };
        let c_kv = if level.vector { 1 } else { others.max(1) * c };
        let dk = (c / 2).max(4);
        let q = Conv2d::new(store, group, &format!("{name}.query"), c, dk, 1, ONE, rng);
        let k = Conv2d::new(store, group, &format!("{name}.key"), c_kv, dk, 1, ONE, rng);
        let v = Conv2d::new(store, group, &format!("{name}.value"), c_kv, c, 1, ONE, rng);
        CrossAttention { q, k, v, dk }
    }

    /// Attention output for queries `xq` over keys/values from `xkv` (the other tasks' features,
    /// each shaped like `xq`), shaped like `xq`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        group: &ParamGroup,
        xq: Var,
        xkv: &[Var],
    ) -> Result<Var> {
        let shape = tape.value(xq).shape().to_vec();
        // Vectors [B, d] join as more tokens ([B, Σd]); maps [B, C, H, W] as more channels.
        let joined = if xkv.len() == 1 { xkv[0] } else { tape.concat_channels(xkv)? };
        let (mq, mut mkv) = (as_map(tape, xq)?, as_map(tape, joined)?);
        loop {
            let s = tape.value(mkv).shape();
            if s[2] * s[3] <= MAX_KEYS || s[2] < 2 || s[3] < 2 {
                break;
            }
            mkv = tape.avg_pool2d(mkv, 2, 2)?;
        }
        let tokens = |tape: &mut Tape, conv: &Conv2d, x: Var| -> Result<Var> {
            let y = conv.forward(tape, store, group, x, Read::Train)?;
            let s = tape.value(y).shape().to_vec();
            tape.reshape(y, &[s[0], s[1], s[2] * s[3]])
        };
        let q = tokens(tape, &self.q, mq)?; // [B, dk, N]
        let q = tape.scale(q, 1.0 / (self.dk as f32).sqrt())?; // on Q: smaller than the scores
        let k = tokens(tape, &self.k, mkv)?; // [B, dk, M]
        let v = tokens(tape, &self.v, mkv)?; // [B, C, M]
        let scores = tape.bmm(q, true, k, false)?; // [B, N, M]
        let p = tape.softmax_lastdim(scores)?;
        let out = tape.bmm(v, false, p, true)?; // [B, C, N]
        tape.reshape(out, &shape)
    }
}

/// A 1×1 gate producing the pre-sigmoid mask of a level (a linear layer for a vector level).
enum Gate {
    Conv(Conv2d),
    Dense(Linear),
}

/// From one level to the next, on the shared side of MTAN.
enum Bridge {
    /// Resize (max-pool or nearest upsampling to the next level's size), 3×3 conv, relu.
    Conv(Conv2d),
    /// Flatten, linear, relu (into a vector level).
    Dense(Linear),
}

/// The bridges MTAN's task towers share (one per level after the first).
pub struct MtanBridges {
    bridges: Vec<Bridge>,
    pub group: ParamGroup,
}

impl MtanBridges {
    pub fn new(store: &mut ParamStore, prefix: &str, levels: &[Level], rng: &mut impl Rng) -> Self {
        let mut group = ParamGroup::default();
        let bridges = levels
            .windows(2)
            .enumerate()
            .map(|(j, w)| {
                let name = format!("{prefix}.bridge{}", j + 1);
                let (from, to) = (w[0], w[1]);
                assert!(!from.vector, "MTAN: a vector level must be the last");
                if to.vector {
                    let flat = from.channels * from.pixels.expect("MTAN: a map before a vector level needs fixed H·W");
                    Bridge::Dense(Linear::new(store, &mut group, &name, flat, to.channels, rng))
                } else {
                    Bridge::Conv(Conv2d::new(store, &mut group, &name, from.channels, to.channels, 3, SAME3, rng))
                }
            })
            .collect();
        MtanBridges { bridges, group }
    }

    /// relu(Bridge_j(resize(u))) with `like` giving the target level's size.
    fn forward(&self, tape: &mut Tape, store: &ParamStore, j: usize, u: Var, like: Var) -> Result<Var> {
        let g = &self.group;
        let h = match &self.bridges[j - 1] {
            Bridge::Dense(fc) => {
                let b = tape.value(u).shape()[0];
                let flat = tape.value(u).numel() / b;
                let u = tape.reshape(u, &[b, flat])?;
                fc.forward(tape, store, g, u, Read::Train)?
            }
            Bridge::Conv(conv) => {
                let (from, to) = (tape.value(u).shape()[2], tape.value(like).shape()[2]);
                let u = if from > to {
                    tape.max_pool2d(u, from / to, from / to)?
                } else if to > from {
                    tape.upsample_nearest(u, to / from)?
                } else {
                    u
                };
                conv.forward(tape, store, g, u, Read::Train)?
            }
        };
        tape.relu(h)
    }
}

/// One task's attention masks over the shared extractor's levels.
pub struct MtanTower {
    gates: Vec<Gate>,
    pub group: ParamGroup,
}

impl MtanTower {
    pub fn new(store: &mut ParamStore, prefix: &str, levels: &[Level], rng: &mut impl Rng) -> Self {
        let mut group = ParamGroup::default();
        let gates = levels
            .iter()
            .enumerate()
            .map(|(j, l)| {
                let name = format!("{prefix}.gate{j}");
                let cin = if j == 0 { l.channels } else { 2 * l.channels };
                if l.vector {
                    Gate::Dense(Linear::new(store, &mut group, &name, cin, l.channels, rng))
                } else {
                    Gate::Conv(Conv2d::new(store, &mut group, &name, cin, l.channels, 1, ONE, rng))
                }
            })
            .collect();
        MtanTower { gates, group }
    }

    /// The task's features from the shared levels.
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, bridges: &MtanBridges, levels: &[Var]) -> Result<Var> {
        let mut u: Option<Var> = None;
        for (j, (&l, gate)) in levels.iter().zip(&self.gates).enumerate() {
            let gate_in = match u {
                None => l,
                Some(prev) => {
                    let v = bridges.forward(tape, store, j, prev, l)?;
                    tape.concat_channels(&[l, v])?
                }
            };
            let a = match gate {
                Gate::Conv(c) => c.forward(tape, store, &self.group, gate_in, Read::Train)?,
                Gate::Dense(fc) => fc.forward(tape, store, &self.group, gate_in, Read::Train)?,
            };
            u = Some(tape.sigmoid_gate(l, a)?);
        }
        Ok(u.expect("at least one level"))
    }
}
