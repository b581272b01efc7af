//! How an image file becomes a model input, written into every checkpoint (`mtcool.inputs`, versioned)
//! so that `mtcool predict`, the C ABI and a PyTorch user all prepare images exactly as training did,
//! and what each head reads (the fusion order a checkpoint does not show by its tensor names).

use anyhow::{bail, Result};
use image::imageops::FilterType;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::data::refuge::normalise_chw;
use crate::data::{fundus, multimnist};
use crate::model::multitask::{Fusion, Method, ModelConfig};
use crate::train::data::{self, TaskKind};
use crate::train::TrainConfig;

/// Version of the `mtcool.inputs` record; bumped when a field changes meaning.
pub const INPUTS_VERSION: u32 = 1;
/// The checkpoint metadata key holding [`Inputs`] as JSON.
pub const INPUTS_KEY: &str = "mtcool.inputs";

/// How a source image is resized to the model's input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Pixel-centre nearest neighbour, `src = floor((dst + 0.5) · in / out)` (PyTorch `nearest-exact`).
    NearestExact,
    /// Bilinear with a support that widens when shrinking (the `image` crate's `Triangle` filter,
    /// PIL's `BILINEAR`); skipped when the image already has the input size.
    Bilinear,
}

/// What a checkpoint's model expects and predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub version: u32,
    /// The training job (`--task`).
    pub task: TaskKind,
    /// One name per task, in head order.
    pub task_names: Vec<String>,
    /// Per task, the name of each class index.
    pub class_names: Vec<Vec<String>>,
    /// Per task: "classify" (logits [B, classes]) or "segment" (logits [B, classes, H, W]).
    pub task_kinds: Vec<String>,
    /// Input tensor: [B, channels, height, width], f32, NCHW.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub resize: Resize,
    /// Per channel: `x = (byte / 255 − mean[c]) / std[c]` after resizing (channels: grey, or R, G, B).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Per head, what it reads, in order: e.g. `concat[F1, F2]` (MT-CooL: every head sees every task's
    /// features, task 1's first), `F` (the shared extractor), `F2` (its own extractor).
    pub head_inputs: Vec<String>,
}

impl Inputs {
    /// The record of a training run's model (`cfg` resolved: a folder task's manifest read).
    pub fn for_run(cfg: &TrainConfig) -> Inputs {
        let setup = data::setup(&cfg.data);
        let model = cfg.model_config();
        let (channels, size, resize, mean, std) = match cfg.data.task {
            TaskKind::Multimnist => {
                (1, multimnist::SIDE, Resize::NearestExact, vec![multimnist::MEAN], vec![multimnist::STD])
            }
            TaskKind::Folder => {
                let (mean, std) = cfg.data.folder.as_ref().map(|m| m.mean_std()).unwrap_or_default();
                (setup.in_channels, cfg.data.size, Resize::Bilinear, mean, std)
            }
            _ => (3, cfg.data.size, Resize::Bilinear, fundus::MEAN.to_vec(), fundus::STD.to_vec()),
        };
        Inputs {
            version: INPUTS_VERSION,
            task: cfg.data.task,
            task_names: setup.names.clone(),
            class_names: class_names(cfg),
            task_kinds: model
                .tasks
                .iter()
                .map(|t| {
                    if matches!(t, crate::model::TaskSpec::Segment { .. }) { "segment" } else { "classify" }.to_string()
                })
                .collect(),
            channels,
            height: size,
            width: size,
            resize,
            mean,
            std,
            head_inputs: head_inputs(&model),
        }
    }

    /// An image as the model's input, [channels, height, width] values (CHW). An image with another
    /// channel count than the model's (grey for an RGB model, say) is an error, not a silent
    /// conversion; an alpha channel is dropped.
    pub fn prepare(&self, img: &DynamicImage) -> Result<Vec<f32>> {
        let have = img.color().channel_count() as usize;
        let colour = if img.color().has_alpha() { have - 1 } else { have };
        if colour != self.channels {
            bail!(
                "has {colour} colour channel(s) ({:?}); this model takes {} ({})",
                img.color(),
                self.channels,
                if self.channels == 1 { "grey" } else { "RGB" }
            );
        }
        let (w, h) = (self.width as u32, self.height as u32);
        let bytes: Vec<u8> = match self.channels {
            1 => self.resized(&img.to_luma8(), w, h),
            _ => self.resized(&img.to_rgb8(), w, h),
        };
        Ok(normalise_chw(&bytes, self.channels, &self.mean, &self.std))
    }

    fn resized<P>(&self, img: &image::ImageBuffer<P, Vec<u8>>, w: u32, h: u32) -> Vec<u8>
    where
        P: image::Pixel<Subpixel = u8> + 'static,
    {
        if img.dimensions() == (w, h) {
            return img.as_raw().clone();
        }
        match self.resize {
            Resize::Bilinear => image::imageops::resize(img, w, h, FilterType::Triangle).into_raw(),
            Resize::NearestExact => {
                let (iw, ih) = img.dimensions();
                let src =
                    |d: u32, n_in: u32, n_out: u32| ((2 * d as u64 + 1) * n_in as u64 / (2 * n_out as u64)) as u32;
                let mut out = Vec::with_capacity((w * h) as usize * P::CHANNEL_COUNT as usize);
                for y in 0..h {
                    for x in 0..w {
                        out.extend_from_slice(img.get_pixel(src(x, iw, w), src(y, ih, h)).channels());
                    }
                }
                out
            }
        }
    }
}

/// What each head reads, in the order its input channels are stacked.
pub fn head_inputs(cfg: &ModelConfig) -> Vec<String> {
    let n = cfg.tasks.len();
    let feats: Vec<String> = (1..=n).map(|t| format!("F{t}")).collect();
    (0..n)
        .map(|t| match cfg.method {
            Method::Mtcool => match cfg.fusion {
                Fusion::Concat => format!("concat[{}]", feats.join(", ")),
                Fusion::Add => format!("sum[{}]", feats.join(", ")),
                Fusion::Attention => {
                    let others: Vec<&str> = (0..n).filter(|&o| o != t).map(|o| feats[o].as_str()).collect();
                    format!("concat[{}, attention({}; {})]", feats[t], feats[t], others.join(", "))
                }
            },
            m if m.shares_extractor() => "F".to_string(),
            _ => feats[t].clone(),
        })
        .collect()
}

fn class_names(cfg: &TrainConfig) -> Vec<Vec<String>> {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match cfg.data.task {
        TaskKind::Multimnist => vec![(0..10).map(|d| d.to_string()).collect(); 2],
        TaskKind::Fundus => vec![names(&["background", "disc rim", "cup"]), names(&["no glaucoma", "glaucoma"])],
        TaskKind::FundusAv => vec![names(&["background", "artery", "vein"]), names(&["background", "vessel"])],
        TaskKind::Fundus3 => vec![
            names(&["background", "disc rim", "cup"]),
            names(&["background", "vessel"]),
            names(&["no glaucoma", "glaucoma"]),
        ],
        TaskKind::Folder => cfg.data.folder.iter().flat_map(|m| m.tasks.iter().map(|t| t.classes.clone())).collect(),
    }
}
