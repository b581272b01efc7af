//! Counter-based noise: Philox-4x32-10 (Salmon et al., SC'11, "Random123").
//!
//! MT-CooL perturbs the other task's extractor weights with ε ~ U(-b, b) per element. The noise is a pure
//! function of (seed, step t, task, sample k, element index), so the GPU kernels (`kernels/philox.cuh`)
//! can add it while reading weights and produce bit-identical values to this CPU code.
//!
//! Layout: counter = (index, k, task, t), key = (seed low 32 bits, seed high 32 bits). The first output
//! word u becomes ((u >> 8) + 0.5) · 2⁻²⁴ ∈ (0, 1] (f32 rounding), then b · (2·that − 1) ∈ (−b, b]. Indices above 2³²
//! are not supported (no tensor here comes close).

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox-4x32 with 10 rounds: the raw block function.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (ctr, key);
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Maps a 32-bit word to (0, 1], exactly as the CUDA code does (only the top 1/2²⁵ of words round up to
/// exactly 1.0 in f32, so ε = +b is possible but ε = −b is not).
#[inline]
pub fn u32_to_unit(u: u32) -> f32 {
    ((u >> 8) as f32 + 0.5) * (1.0 / 16_777_216.0)
}

/// Which stream of random numbers a draw belongs to; the `task` counter word.
pub mod stream {
    /// Weight noise on task 1's extractor (drawn while task 2 trains).
    pub const TASK1: u32 = 1;
    /// Weight noise on task 2's extractor.
    pub const TASK2: u32 = 2;
    /// Dropout masks.
    pub const DROPOUT: u32 = 0xD0;
    /// Weight noise on task t's extractor (0-based t; task 1 is TASK1, task 2 TASK2, …; below DROPOUT
    /// for every t < MAX_TASKS).
    pub fn task(t: usize) -> u32 {
        TASK1 + t as u32
    }
}

/// Where a noise draw sits in the run: seed, outer step t, stream (task), sample k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoiseKey {
    pub seed: u64,
    pub step: u32,
    pub stream: u32,
    pub sample: u32,
}

impl NoiseKey {
    /// The uniform (0, 1) value for one element index.
    #[inline]
    pub fn unit(&self, index: u32) -> f32 {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        u32_to_unit(philox4x32_10([index, self.sample, self.stream, self.step], key)[0])
    }

    /// ε ∈ (−b, b) for one element index.
    #[inline]
    pub fn uniform(&self, index: u32, b: f32) -> f32 {
        b * (2.0 * self.unit(index) - 1.0)
    }

    /// Returns `w + ε` for every element; element i draws index `offset + i`, `offset` being where `w`
    /// starts inside its extractor's flat parameter vector θ (so no two weights share a draw).
    pub fn perturb(&self, w: &[f32], b: f32, offset: u32) -> Vec<f32> {
        let mut out = w.to_vec();
        let (blocks, tail) = out.as_chunks_mut::<LANES>();
        for (j, block) in blocks.iter_mut().enumerate() {
            let first = offset.wrapping_add((j * LANES) as u32);
            let units = self.units(first);
            for (v, u) in block.iter_mut().zip(units) {
                *v += b * (2.0 * u - 1.0);
            }
        }
        let done = (w.len() / LANES * LANES) as u32;
        for (i, v) in tail.iter_mut().enumerate() {
            *v += self.uniform(offset.wrapping_add(done + i as u32), b);
        }
        out
    }

    /// `unit` of the LANES indices first, first + 1, …: the same values, computed lane-wise so that
    /// the rounds vectorise (AVX-512 or AVX2 when present; the noise was ~5 % of a MultiMNIST step).
    fn units(&self, first: u32) -> [f32; LANES] {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let ctr = [self.sample, self.stream, self.step];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was just detected.
                return unsafe { units_avx512(first, ctr, key) };
            }
            if is_x86_feature_detected!("avx2") {
                // SAFETY: the feature was just detected.
                return unsafe { units_avx2(first, ctr, key) };
            }
        }
        units_lanes(first, ctr, key)
    }
}

/// Elements per vectorised noise block.
const LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn units_avx512(first: u32, ctr: [u32; 3], key: [u32; 2]) -> [f32; LANES] {
    units_lanes(first, ctr, key)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn units_avx2(first: u32, ctr: [u32; 3], key: [u32; 2]) -> [f32; LANES] {
    units_lanes(first, ctr, key)
}

/// `philox4x32_10` word 0 → `u32_to_unit` for counters (first + l, ctr…), l < LANES, lane-wise.
#[inline(always)]
fn units_lanes(first: u32, [c1, c2, c3]: [u32; 3], key: [u32; 2]) -> [f32; LANES] {
    let mut c: [[u32; LANES]; 4] =
        [std::array::from_fn(|l| first.wrapping_add(l as u32)), [c1; LANES], [c2; LANES], [c3; LANES]];
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let mut next = [[0u32; LANES]; 4];
        for l in 0..LANES {
            let p0 = (M0 as u64) * (c[0][l] as u64);
            let p1 = (M1 as u64) * (c[2][l] as u64);
            next[0][l] = ((p1 >> 32) as u32) ^ c[1][l] ^ k[0];
            next[1][l] = p1 as u32;
            next[2][l] = ((p0 >> 32) as u32) ^ c[3][l] ^ k[1];
            next[3][l] = p0 as u32;
        }
        c = next;
    }
    c[0].map(u32_to_unit)
}

/// Noise for one parameter tensor: the draw, the radius b, and the tensor's offset within θ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightNoise {
    pub key: NoiseKey,
    pub b: f32,
    pub offset: u32,
}
