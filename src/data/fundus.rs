//! A built-in synthetic fundus dataset: colour retinal photographs rendered in-process from a seed, with
//! the labels of two medical multi-task benchmarks. Nothing is downloaded.
//!
//! * seg+cls, modelled on REFUGE: optic cup/disc segmentation ([`Mask::CupDisc`]: 0 background,
//!   1 disc rim = disc minus cup, 2 cup) and glaucoma classification (`glaucoma`, 0/1).
//! * seg+seg, modelled on HRF-AV: artery/vein segmentation ([`Mask::ArteryVein`]: 0 background,
//!   1 artery, 2 vein) and binary vessel segmentation ([`Mask::Vessel`]: 1 = artery or vein).
//!
//! Image `i` depends only on `(seed, i)` and the image size, never on `n`, through its own
//! `StdRng::seed_from_u64(splitmix64(splitmix64(seed) ^ i))`. Each image is, in order of rendering:
//! 1. an orange-red background with a per-image tint, low-frequency texture (three random plane waves)
//!    and a darker macula about 0.3·size temporal to the disc;
//! 2. optionally a faint pale peripapillary halo around the disc;
//! 3. the optic disc, a yellowish axis-aligned ellipse centred in the left or right third, radius
//!    0.10–0.155 of the size (horizontal semi-axis ×0.90–1.02, vertical ×1.0–1.12), blended in with a
//!    soft (logistic, σ ≈ 0.4–0.7 px at 64²) edge;
//! 4. the cup, a whiter ellipse inside the disc with a softer edge: its vertical semi-axis is
//!    `vcdr` × the disc's, its horizontal one `vcdr` × 0.85–1.0 × the disc's, offset from the disc
//!    centre by at most half of `(1 − vcdr)` × the disc, which keeps it strictly inside the disc;
//! 5. vessel trees grown from the cup margin: a superior and an inferior temporal arcade bending
//!    towards the macula and up to two nasal vessels, each as an artery/vein pair, with one or two
//!    levels of branches, tapering, drawn anti-aliased (arteries thinner and lighter red, veins wider
//!    and darker; arteries are drawn on top where they cross);
//! 6. illumination (exposure, vignetting, a linear gradient), the circular field of view on black,
//!    Gaussian pixel noise, and 8-bit quantisation.
//!
//! The masks are geometric: a pixel is cup/disc when its centre is inside the ellipse, and artery or
//! vein when its centre is within the vessel's half-width of the centre line, so vessels pass over the
//! disc in the image but not in the cup/disc mask. The true vertical cup-to-disc ratio is drawn as
//! U(0.62, 0.85) with probability `glaucoma_rate` and U(0.30, 0.55) otherwise; the glaucoma label is
//! `vcdr > VCDR_THRESHOLD`, then flipped with probability `label_noise`. With the defaults about 12% of
//! labels are 1, a fifth of them flipped healthy eyes, so even the true vCDR ranks the noisy labels with
//! an AUROC of only about 0.91 (1.0 on clean labels: use `label_noise: 0` for a clean evaluation set).
//!
//! Images are stored normalised per channel, `(byte/255 − MEAN[c]) / STD[c]`, with the fixed constants
//! [`MEAN`] and [`STD`] measured on 4000 images of 64² (seed 0), black corners included. `raw_rgb`
//! inverts this exactly. Generating 1000 images of 64² takes about 0.3 s of one core (release).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::Tensor;

/// Per-channel (R, G, B) mean of the pixels scaled to [0, 1].
pub const MEAN: [f32; 3] = [0.4052, 0.1827, 0.0817];
/// Per-channel (R, G, B) standard deviation of the pixels scaled to [0, 1].
pub const STD: [f32; 3] = [0.2771, 0.1426, 0.0761];

/// A vertical cup-to-disc ratio above this is glaucoma (before label noise).
pub const VCDR_THRESHOLD: f32 = 0.6;

/// Cup/disc mask classes.
pub const DISC_RIM: u8 = 1;
pub const CUP: u8 = 2;
/// Artery/vein mask classes.
pub const ARTERY: u8 = 1;
pub const VEIN: u8 = 2;

/// How to generate a [`FundusSet`].
#[derive(Clone, Debug, PartialEq)]
pub struct FundusConfig {
    /// Image side in pixels (square images), at least 32.
    pub size: usize,
    /// Number of images.
    pub n: usize,
    pub seed: u64,
    /// Probability that an image is drawn with a glaucomatous cup (vCDR above the threshold).
    pub glaucoma_rate: f32,
    /// Probability that a glaucoma label is flipped.
    pub label_noise: f32,
}

impl Default for FundusConfig {
    fn default() -> Self {
        FundusConfig { size: 64, n: 1000, seed: 0, glaucoma_rate: 0.10, label_noise: 0.03 }
    }
}

/// Which segmentation mask to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// 0 background, 1 disc rim, 2 cup.
    CupDisc,
    /// 0 background, 1 artery, 2 vein.
    ArteryVein,
    /// 0 background, 1 vessel.
    Vessel,
}

/// A generated set of `len()` square fundus images with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct FundusSet {
    /// Side of every image.
    pub size: usize,
    /// `n·3·H·W`, normalised with [`MEAN`] and [`STD`].
    pub images: Vec<f32>,
    /// `n·H·W`, classes 0/1/2 (see [`Mask::CupDisc`]).
    pub cup_disc: Vec<u8>,
    /// `n`, 0/1 (label noise included).
    pub glaucoma: Vec<u8>,
    /// `n`, the true vertical cup-to-disc ratio (cup vertical diameter / disc vertical diameter).
    pub vcdr: Vec<f32>,
    /// `n·H·W`, classes 0/1/2 (see [`Mask::ArteryVein`]).
    pub artery_vein: Vec<u8>,
    /// `n·H·W`, 0/1.
    pub vessel: Vec<u8>,
}

impl FundusSet {
    /// Generates the set described by `cfg`. Panics if `cfg.size < 32`.
    pub fn generate(cfg: &FundusConfig) -> FundusSet {
        assert!(cfg.size >= 32, "fundus images need size >= 32, got {}", cfg.size);
        let (s, n) = (cfg.size, cfg.n);
        let px = s * s;
        let lut: Vec<[f32; 3]> =
            (0..=255u32).map(|v| std::array::from_fn(|c| (v as f32 / 255.0 - MEAN[c]) / STD[c])).collect();
        let mut set = FundusSet {
            size: s,
            images: vec![0.0; n * 3 * px],
            cup_disc: vec![0; n * px],
            glaucoma: Vec::with_capacity(n),
            vcdr: Vec::with_capacity(n),
            artery_vein: vec![0; n * px],
            vessel: vec![0; n * px],
        };
        let mut rgb = vec![0u8; 3 * px];
        for i in 0..n {
            let m = i * px..(i + 1) * px;
            let (glaucoma, vcdr) =
                render(cfg, i, &mut rgb, &mut set.cup_disc[m.clone()], &mut set.artery_vein[m.clone()]);
            set.glaucoma.push(glaucoma);
            set.vcdr.push(vcdr);
            for (v, &av) in set.vessel[m].iter_mut().zip(&set.artery_vein[i * px..(i + 1) * px]) {
                *v = (av > 0) as u8;
            }
            let img = &mut set.images[i * 3 * px..(i + 1) * 3 * px];
            for (p, rgb) in rgb.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    img[c * px + p] = lut[rgb[c] as usize][c];
                }
            }
        }
        set
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.glaucoma.len()
    }

    pub fn is_empty(&self) -> bool {
        self.glaucoma.is_empty()
    }

    /// The images at `idx` as a `[B, 3, H, W]` tensor. Panics if an index is out of range.
    pub fn image_batch(&self, idx: &[usize]) -> Tensor {
        let n = 3 * self.size * self.size;
        let mut data = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            data.extend_from_slice(&self.images[i * n..(i + 1) * n]);
        }
        Tensor::new(&[idx.len(), 3, self.size, self.size], data).expect("batch shape agrees by construction")
    }

    /// The `H·W` label map of image `i`.
    pub fn mask(&self, which: Mask, i: usize) -> &[u8] {
        let px = self.size * self.size;
        let all = match which {
            Mask::CupDisc => &self.cup_disc,
            Mask::ArteryVein => &self.artery_vein,
            Mask::Vessel => &self.vessel,
        };
        &all[i * px..(i + 1) * px]
    }

    /// The label maps of the images at `idx`, `B·H·W` in (n, h, w) order.
    pub fn mask_batch(&self, which: Mask, idx: &[usize]) -> Vec<u32> {
        idx.iter().flat_map(|&i| self.mask(which, i).iter().map(|&v| v as u32)).collect()
    }

    /// Image `i` as 8-bit RGB, interleaved, row-major (`H·W·3`): the normalisation inverted exactly.
    pub fn raw_rgb(&self, i: usize) -> Vec<u8> {
        super::refuge::raw_rgb(&self.images, i, self.size)
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An axis-aligned ellipse in pixel coordinates (pixel `(x, y)` has its centre at `(x + 0.5, y + 0.5)`).
#[derive(Clone, Copy, Debug)]
struct Ellipse {
    cx: f32,
    cy: f32,
    rx: f32,
    ry: f32,
}

impl Ellipse {
    fn rho2(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = ((x - self.cx) / self.rx, (y - self.cy) / self.ry);
        dx * dx + dy * dy
    }

    /// Soft coverage in [0, 1]: a logistic of the (approximate) signed distance to the boundary, with
    /// softness `sigma` pixels; exactly 0.5 on the boundary.
    fn soft(&self, x: f32, y: f32, sigma: f32) -> f32 {
        let far = 1.0 + 12.0 * sigma / self.rx.min(self.ry);
        let rho2 = self.rho2(x, y);
        if rho2 > far * far {
            return 0.0;
        }
        let rho = rho2.sqrt();
        let d = ((x - self.cx) * (x - self.cx) + (y - self.cy) * (y - self.cy)).sqrt();
        let sd = if rho < 1e-6 { -self.rx.min(self.ry) } else { d * (1.0 - 1.0 / rho) };
        let z = sd / sigma;
        if z > 12.0 {
            0.0
        } else {
            1.0 / (1.0 + z.exp())
        }
    }
}

/// One straight piece of a vessel centre line with its half-widths at both ends.
struct Seg {
    ax: f32,
    ay: f32,
    bx: f32,
    by: f32,
    ha: f32,
    hb: f32,
    artery: bool,
}

/// A vessel to grow. `phi` is the heading in the canonical frame (temporal = +x, image y down); the
/// image direction is `(side · cos phi, sin phi)`.
struct Branch {
    x: f32,
    y: f32,
    phi: f32,
    curv: f32,
    hw: f32,
    len: f32,
    artery: bool,
    depth: u8,
}

fn gauss(rng: &mut StdRng) -> f32 {
    rng.sample(StandardNormal)
}

/// An approximately standard normal number (Irwin–Hall: the sum of four 16-bit uniforms, rescaled) from
/// a SplitMix64 state: the pixel noise needs millions of draws and no tails.
fn fast_gauss(state: &mut u64) -> f32 {
    *state = state.wrapping_add(1);
    let z = splitmix64(*state);
    let sum: u32 = (0..4).map(|k| ((z >> (16 * k)) & 0xFFFF) as u32).sum();
    (sum as f32 / 65536.0 - 2.0) * 3f32.sqrt()
}

/// Grows `root` and its branches into segments, stopping at the edge of the field of view.
fn grow(rng: &mut StdRng, root: Branch, side: f32, field: &Ellipse, segs: &mut Vec<Seg>) {
    const STEP: f32 = 0.7;
    const MIN_HW: f32 = 0.35;
    let mut stack = vec![root];
    while let Some(b) = stack.pop() {
        let n_children = match b.depth {
            0 => rng.random_range(1..=3),
            1 => rng.random_range(0..=1),
            _ => 0,
        };
        let mut at: Vec<f32> = (0..n_children).map(|_| rng.random_range(0.15..0.75) * b.len).collect();
        at.sort_by(|a, b| b.total_cmp(a)); // popped from the back: nearest first
        let (mut x, mut y, mut phi, mut curv) = (b.x, b.y, b.phi, b.curv);
        let mut s = 0.0;
        let width = |s: f32| b.hw * (1.0 - 0.45 * s / b.len);
        while s < b.len {
            phi += curv * STEP + 0.06 * gauss(rng) * STEP.sqrt();
            curv += 0.002 * gauss(rng);
            let (nx, ny) = (x + side * phi.cos() * STEP, y + phi.sin() * STEP);
            segs.push(Seg { ax: x, ay: y, bx: nx, by: ny, ha: width(s), hb: width(s + STEP), artery: b.artery });
            (x, y) = (nx, ny);
            s += STEP;
            if field.rho2(x, y) > 1.0 {
                break;
            }
            while at.last().is_some_and(|&a| a <= s) {
                at.pop();
                let hw = width(s) * rng.random_range(0.6..0.8);
                if hw >= MIN_HW {
                    let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                    stack.push(Branch {
                        x,
                        y,
                        phi: phi + sign * rng.random_range(0.4..1.0),
                        curv: rng.random_range(-0.02..0.02),
                        hw,
                        len: (b.len - s).max(b.len * 0.3) * rng.random_range(0.35..0.7),
                        artery: b.artery,
                        depth: b.depth + 1,
                    });
                }
            }
        }
    }
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    std::array::from_fn(|c| a[c] + (b[c] - a[c]) * t)
}

/// Renders image `i` of `cfg` into `rgb` (H·W·3 bytes) and its masks; returns (glaucoma label, vCDR).
fn render(cfg: &FundusConfig, i: usize, rgb: &mut [u8], cup_disc: &mut [u8], av: &mut [u8]) -> (u8, f32) {
    let s = cfg.size;
    let sf = s as f32;
    let u = sf / 64.0; // pixel lengths below are quoted for 64² and scale with the size
    let mut rng = StdRng::seed_from_u64(splitmix64(splitmix64(cfg.seed) ^ i as u64));
    let r = &mut rng;

    // Labels first, so they depend on nothing else.
    let glaucomatous = r.random::<f32>() < cfg.glaucoma_rate;
    let vcdr: f32 = if glaucomatous { r.random_range(0.62..0.85) } else { r.random_range(0.30..0.55) };
    let flip = r.random::<f32>() < cfg.label_noise;
    let glaucoma = ((vcdr > VCDR_THRESHOLD) ^ flip) as u8;

    // Geometry.
    let fr = sf * r.random_range(0.46..0.48);
    let field = Ellipse {
        cx: sf * (0.5 + r.random_range(-0.01..0.01)),
        cy: sf * (0.5 + r.random_range(-0.01..0.01)),
        rx: fr,
        ry: fr,
    };
    let side: f32 = if r.random_bool(0.5) { 1.0 } else { -1.0 }; // +1: disc on the left, macula to the right
    let dr = sf * r.random_range(0.10..0.155);
    let disc = Ellipse {
        cx: sf * (0.5 - side * r.random_range(0.16..0.20)),
        cy: sf * (0.5 + r.random_range(-0.06..0.06)),
        rx: dr * r.random_range(0.90..1.02),
        ry: dr * r.random_range(1.0..1.12),
    };
    let (ox, oy) = loop {
        let (a, b) = (r.random_range(-1.0f32..1.0), r.random_range(-1.0f32..1.0));
        if a * a + b * b <= 1.0 {
            break (a, b);
        }
    };
    let slack = 0.5 * (1.0 - vcdr);
    let cup = Ellipse {
        cx: disc.cx + slack * disc.rx * ox,
        cy: disc.cy + slack * disc.ry * oy,
        rx: vcdr * disc.rx * r.random_range(0.85..1.0),
        ry: vcdr * disc.ry,
    };
    let halo_scale = r.random_range(1.12..1.3);
    let halo = Ellipse { rx: disc.rx * halo_scale, ry: disc.ry * halo_scale, ..disc };
    let halo_a = if r.random_bool(0.5) { r.random_range(0.05..0.2) } else { 0.0 };
    let disc_a = r.random_range(0.6..0.9);
    let cup_a = r.random_range(0.5..0.85);
    let disc_sigma = u * r.random_range(0.4..0.7);
    let cup_sigma = u * r.random_range(0.5..0.9);
    let fovea = (disc.cx + side * sf * r.random_range(0.27..0.33), disc.cy + sf * r.random_range(-0.03..0.03));
    let fovea_sigma = sf * r.random_range(0.06..0.09);
    let fovea_a = r.random_range(0.15..0.3);

    // Colours (reflectance, before illumination).
    let bg = [r.random_range(0.72..0.86), r.random_range(0.30..0.40), r.random_range(0.10..0.18)];
    let disc_col = [r.random_range(0.95..1.0), r.random_range(0.72..0.82), r.random_range(0.40..0.50)];
    let cup_col = [1.0, r.random_range(0.90..0.97), r.random_range(0.72..0.85)];
    let art_col = [r.random_range(0.70..0.80), r.random_range(0.16..0.22), r.random_range(0.09..0.13)];
    let vein_col = [r.random_range(0.42..0.52), r.random_range(0.08..0.12), r.random_range(0.06..0.09)];
    let vessel_a = r.random_range(0.8..0.95);
    let waves: Vec<[f32; 4]> = (0..3)
        .map(|_| {
            let k = std::f32::consts::TAU * r.random_range(1.0..3.5) / sf;
            let th = r.random_range(0.0..std::f32::consts::TAU);
            [k * th.cos(), k * th.sin(), r.random_range(0.0..std::f32::consts::TAU), r.random_range(0.02..0.05)]
        })
        .collect();
    let exposure = r.random_range(0.85..1.0);
    let vignette = r.random_range(0.25..0.45);
    let (gx, gy) = (r.random_range(-0.08..0.08), r.random_range(-0.08..0.08));
    let noise = r.random_range(0.01..0.02);

    // Vessels: two temporal arcades and up to two nasal vessels, each an artery/vein pair.
    let mut segs = Vec::new();
    let kappa = r.random_range(1.0..1.6) / (0.5 * sf);
    let trunks: [(f32, f32, f32, f32); 4] = [
        // (heading, curvature, length, probability)
        (-std::f32::consts::FRAC_PI_2 + 0.3, kappa, 0.8 * sf, 1.0),
        (std::f32::consts::FRAC_PI_2 - 0.3, -kappa, 0.8 * sf, 1.0),
        (-std::f32::consts::FRAC_PI_2 - 0.6, 0.0, 0.4 * sf, 0.85),
        (std::f32::consts::FRAC_PI_2 + 0.6, 0.0, 0.4 * sf, 0.85),
    ];
    for (phi0, curv, len, p) in trunks {
        for artery in [true, false] {
            if !r.random_bool(p as f64) {
                continue;
            }
            let phi = phi0 + r.random_range(-0.25..0.25);
            // Emerge at the cup margin: the cup's radius in this direction, times 0.75–1.
            let (dx, dy) = (phi.cos() / cup.rx, phi.sin() / cup.ry);
            let start = r.random_range(0.75..1.0) / (dx * dx + dy * dy).sqrt();
            let hw = u * if artery { r.random_range(0.7..0.9) } else { r.random_range(0.95..1.2) };
            let root = Branch {
                x: cup.cx + side * phi.cos() * start,
                y: cup.cy + phi.sin() * start,
                phi,
                curv: curv * r.random_range(0.8..1.2),
                hw: hw.max(0.6),
                len: len * r.random_range(0.85..1.1),
                artery,
                depth: 0,
            };
            grow(r, root, side, &field, &mut segs);
        }
    }
    let px = s * s;
    let mut cov_a = vec![0f32; px];
    let mut cov_v = vec![0f32; px];
    for g in &segs {
        let h = g.ha.max(g.hb) + 1.0;
        let x0 = (g.ax.min(g.bx) - h).floor().max(0.0) as usize;
        let y0 = (g.ay.min(g.by) - h).floor().max(0.0) as usize;
        let x1 = ((g.ax.max(g.bx) + h).ceil().max(0.0) as usize).min(s);
        let y1 = ((g.ay.max(g.by) + h).ceil().max(0.0) as usize).min(s);
        let (dx, dy) = (g.bx - g.ax, g.by - g.ay);
        let l2 = (dx * dx + dy * dy).max(1e-12);
        let cov = if g.artery { &mut cov_a } else { &mut cov_v };
        for y in y0..y1 {
            for x in x0..x1 {
                let (qx, qy) = (x as f32 + 0.5 - g.ax, y as f32 + 0.5 - g.ay);
                let t = ((qx * dx + qy * dy) / l2).clamp(0.0, 1.0);
                let (ex, ey) = (qx - t * dx, qy - t * dy);
                let d = (ex * ex + ey * ey).sqrt();
                let c = (g.ha + t * (g.hb - g.ha) - d + 0.5).clamp(0.0, 1.0);
                let o = &mut cov[y * s + x];
                *o = o.max(c);
            }
        }
    }

    // Pixels. Separable factors (texture waves, macula) are tabulated per column and per row.
    let centres: Vec<f32> = (0..s).map(|k| k as f32 + 0.5).collect();
    let wave_x: Vec<Vec<(f32, f32)>> =
        waves.iter().map(|w| centres.iter().map(|&c| (w[0] * c + w[2]).sin_cos()).collect()).collect();
    let wave_y: Vec<Vec<(f32, f32)>> =
        waves.iter().map(|w| centres.iter().map(|&c| (w[1] * c).sin_cos()).collect()).collect();
    let gauss_1d = |c0: f32| -> Vec<f32> {
        centres.iter().map(|&c| (-(c - c0) * (c - c0) / (2.0 * fovea_sigma * fovea_sigma)).exp()).collect()
    };
    let (mac_x, mac_y) = (gauss_1d(fovea.0), gauss_1d(fovea.1));
    let mut noise_rng = splitmix64(r.random::<u64>());
    for y in 0..s {
        for x in 0..s {
            let p = y * s + x;
            let (fx, fy) = (centres[x], centres[y]);
            let in_disc = disc.rho2(fx, fy) <= 1.0;
            cup_disc[p] = if in_disc && cup.rho2(fx, fy) <= 1.0 {
                CUP
            } else if in_disc {
                DISC_RIM
            } else {
                0
            };
            av[p] = if cov_a[p] >= 0.5 {
                ARTERY
            } else if cov_v[p] >= 0.5 {
                VEIN
            } else {
                0
            };

            let mut tex = 0.0;
            for (w, (wx, wy)) in waves.iter().zip(wave_x.iter().zip(&wave_y)) {
                let ((sx, cx), (sy, cy)) = (wx[x], wy[y]);
                tex += w[3] * (sx * cy + cx * sy); // sin(kx·x + phase + ky·y)
            }
            let shade = (1.0 + tex) * (1.0 - fovea_a * mac_x[x] * mac_y[y]);
            let mut c: [f32; 3] = std::array::from_fn(|k| bg[k] * shade);
            if halo_a > 0.0 {
                c = mix(c, disc_col, halo_a * halo.soft(fx, fy, 2.0 * disc_sigma));
            }
            c = mix(c, disc_col, disc_a * disc.soft(fx, fy, disc_sigma));
            c = mix(c, cup_col, cup_a * cup.soft(fx, fy, cup_sigma));
            c = mix(c, vein_col, vessel_a * cov_v[p]);
            c = mix(c, art_col, vessel_a * cov_a[p]);

            let (rx, ry) = ((fx - field.cx) / fr, (fy - field.cy) / fr);
            let r2 = rx * rx + ry * ry;
            let fov = if r2 < 0.81 { 1.0 } else { (fr * (1.0 - r2.sqrt()) + 0.5).clamp(0.0, 1.0) };
            let light = fov * exposure * (1.0 - vignette * r2) * (1.0 + gx * rx + gy * ry);
            for k in 0..3 {
                let v = c[k] * light + noise * fast_gauss(&mut noise_rng);
                rgb[3 * p + k] = (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    (glaucoma, vcdr)
}
