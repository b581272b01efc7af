//! `mtcool predict`: a trained model on image files. Inputs are files or folders (PNG, JPEG, BMP, TIFF,
//! and MNIST-style IDX image files, each of whose images is one input), prepared as the checkpoint's
//! `mtcool.inputs` record says ([`Inputs::prepare`]); outputs go to one folder:
//!
//! * `predictions.csv` — one row per input: per classification task its predicted class and each class's
//!   probability (softmax), with `--logits` the raw logits too; per segmentation task its mask's path;
//! * `predictions.json` — the same per input, as records;
//! * `masks/<k>-<task>/<name>.png` — per segmentation task, the arg-max class of each pixel as its grey
//!   value (0, 1, 2, …) at the model's input size; `--overlay` adds `overlays/<k>-<task>/<name>.png`,
//!   the input with the classes coloured; `--logits` adds `logits/<k>-<task>/<name>.f32`, the raw
//!   logits as little-endian f32 in [classes, H, W] order.
//!
//! A bad input (unreadable, wrong channel count, an empty folder) is one line on stderr; the others are
//! still processed and the command then fails, saying how many inputs failed.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::DynamicImage;
use serde::Serialize;

use crate::checkpoint::write_atomic;
use crate::data::folder::IMAGE_EXTS;
use crate::data::mnist::parse_idx_images;
use crate::data::refuge::{denormalise_rgb, ext};
use crate::metrics::argmax_dim1;
use crate::predict::Predictor;
use crate::preprocess::Inputs;
use crate::{viz, Tensor};

pub struct Options {
    pub out: PathBuf,
    pub logits: bool,
    pub overlay: bool,
    pub batch_size: usize,
}

/// One input: its display name, the unique stem its output files take, and the image.
struct Item {
    name: String,
    stem: String,
    image: DynamicImage,
}

#[derive(Serialize)]
struct TaskOut {
    task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mask: Option<String>,
}

#[derive(Serialize)]
struct Record {
    file: String,
    tasks: Vec<TaskOut>,
}

/// How many inputs were predicted and which failed (name, one-line reason).
pub struct Outcome {
    pub done: usize,
    pub failed: Vec<(String, String)>,
}

/// Runs the model on every input under `paths`, writing the outputs (see the module doc) to `opts.out`.
pub fn predict_files(predictor: &Predictor, inputs: &Inputs, paths: &[PathBuf], opts: &Options) -> Result<Outcome> {
    anyhow::ensure!(opts.batch_size > 0, "--batch-size must be at least 1");
    let mut failed = vec![];
    let mut fail = |name: String, why: String| {
        eprintln!("{name}: {why}");
        failed.push((name, why));
    };
    let files = expand(paths, &mut fail);
    fs::create_dir_all(&opts.out).with_context(|| format!("cannot create output folder {}", opts.out.display()))?;
    let slug = |t: usize| format!("{}-{}", t + 1, inputs.task_names[t].replace(['/', ' ', '\\'], "-"));
    for (t, kind) in inputs.task_kinds.iter().enumerate() {
        if kind == "segment" {
            fs::create_dir_all(opts.out.join("masks").join(slug(t)))?;
            if opts.overlay {
                fs::create_dir_all(opts.out.join("overlays").join(slug(t)))?;
            }
        }
        if opts.logits && kind == "segment" {
            fs::create_dir_all(opts.out.join("logits").join(slug(t)))?;
        }
    }
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    if files.len() <= opts.batch_size {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let (mut csv, mut records, mut stems) = (header(inputs, opts.logits), vec![], HashSet::new());
    let (c, h, w) = (inputs.channels, inputs.height, inputs.width);
    // Inputs waiting for their batch: (name, output stem, prepared input).
    let mut pending: Vec<(String, String, Vec<f32>)> = vec![];
    let flush =
        |pending: &mut Vec<(String, String, Vec<f32>)>, csv: &mut String, records: &mut Vec<Record>| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let data: Vec<f32> = pending.iter().flat_map(|(_, _, x)| x.iter().copied()).collect();
            let logits = predictor.logits(&Tensor::new(&[pending.len(), c, h, w], data)?)?;
            // Per task, the arg-max class of each image (classification) or pixel (segmentation), with the
            // metrics' tie rule.
            let preds: Vec<Vec<u32>> = logits.iter().map(|l| argmax_dim1(l).0).collect();
            for (i, (name, stem, x)) in pending.drain(..).enumerate() {
                let mut row = csv_field(&name);
                let mut tasks = vec![];
                for (t, l) in logits.iter().enumerate() {
                    let classes = l.shape()[1];
                    let names = &inputs.class_names[t];
                    let mut out = TaskOut {
                        task: inputs.task_names[t].clone(),
                        class: None,
                        label: None,
                        probabilities: None,
                        logits: None,
                        mask: None,
                    };
                    if inputs.task_kinds[t] == "segment" {
                        let px = h * w;
                        let v = &l.data()[i * classes * px..(i + 1) * classes * px];
                        let mask: Vec<u8> = preds[t][i * px..(i + 1) * px].iter().map(|&k| k as u8).collect();
                        let rel = PathBuf::from("masks").join(slug(t)).join(format!("{stem}.png"));
                        image::GrayImage::from_raw(w as u32, h as u32, mask.clone())
                            .expect("mask size")
                            .save(opts.out.join(&rel))
                            .with_context(|| format!("writing {}", rel.display()))?;
                        if opts.overlay {
                            let rgb = denormalise_rgb(&x, c, &inputs.mean, &inputs.std);
                            let rgb = overlay(&rgb, &mask);
                            viz::write_png(
                                opts.out.join("overlays").join(slug(t)).join(format!("{stem}.png")),
                                &rgb,
                                w,
                                h,
                            )?;
                        }
                        if opts.logits {
                            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                            let p = opts.out.join("logits").join(slug(t)).join(format!("{stem}.f32"));
                            fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
                        }
                        let rel = rel.to_string_lossy().into_owned();
                        row.push(',');
                        row.push_str(&csv_field(&rel));
                        out.mask = Some(rel);
                    } else {
                        let z = &l.data()[i * classes..(i + 1) * classes];
                        let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let e: Vec<f32> = z.iter().map(|&v| (v - m).exp()).collect();
                        let sum: f32 = e.iter().sum();
                        let p: Vec<f32> = e.iter().map(|v| v / sum).collect();
                        let k = preds[t][i] as usize;
                        let _ = write!(row, ",{k}");
                        p.iter().for_each(|v| {
                            let _ = write!(row, ",{v}");
                        });
                        if opts.logits {
                            z.iter().for_each(|v| {
                                let _ = write!(row, ",{v}");
                            });
                            out.logits = Some(z.to_vec());
                        }
                        out.class = Some(k);
                        out.label = names.get(k).cloned();
                        out.probabilities = Some(p);
                    }
                    tasks.push(out);
                }
                csv.push_str(&row);
                csv.push('\n');
                records.push(Record { file: name, tasks });
            }
            Ok(())
        };
    let mut done = 0;
    for file in files {
        let items = match read_items(&file, &mut stems) {
            Ok(items) => items,
            Err(e) => {
                bar.suspend(|| fail(file.display().to_string(), format!("{e:#}")));
                bar.inc(1);
                continue;
            }
        };
        for item in items {
            match inputs.prepare(&item.image) {
                Ok(x) => {
                    pending.push((item.name, item.stem, x));
                    done += 1;
                }
                Err(e) => bar.suspend(|| fail(item.name.clone(), format!("{e:#}"))),
            }
            if pending.len() >= opts.batch_size {
                flush(&mut pending, &mut csv, &mut records)?;
            }
        }
        bar.inc(1);
    }
    flush(&mut pending, &mut csv, &mut records)?;
    bar.finish_and_clear();
    write_atomic(&opts.out.join("predictions.csv"), csv.as_bytes())?;
    write_atomic(&opts.out.join("predictions.json"), serde_json::to_string_pretty(&records)?.as_bytes())?;
    Ok(Outcome { done, failed })
}

/// The CSV header: `file`, then per task its columns.
fn header(inputs: &Inputs, logits: bool) -> String {
    let mut h = "file".to_string();
    for (t, name) in inputs.task_names.iter().enumerate() {
        if inputs.task_kinds[t] == "segment" {
            let _ = write!(h, ",{}", csv_field(&format!("{name}: mask")));
            continue;
        }
        let _ = write!(h, ",{}", csv_field(&format!("{name}: class")));
        for c in &inputs.class_names[t] {
            let _ = write!(h, ",{}", csv_field(&format!("{name}: p({c})")));
        }
        if logits {
            for c in &inputs.class_names[t] {
                let _ = write!(h, ",{}", csv_field(&format!("{name}: logit({c})")));
            }
        }
    }
    h + "\n"
}

fn csv_field(s: &str) -> String {
    match s.contains([',', '"', '\n']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_string(),
    }
}

/// Files to read: each path itself, or a folder's image and IDX files in name order. A folder without
/// any, or a path that does not exist, is reported through `fail`.
fn expand(paths: &[PathBuf], fail: &mut impl FnMut(String, String)) -> Vec<PathBuf> {
    let mut files = vec![];
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = match fs::read_dir(p) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.is_file() && (is_image(f) || is_idx(f)))
                    .collect(),
                Err(e) => {
                    fail(p.display().to_string(), format!("cannot read folder: {e}"));
                    continue;
                }
            };
            if found.is_empty() {
                fail(
                    p.display().to_string(),
                    "no images (.png/.jpg/.jpeg/.bmp/.tif/.tiff or IDX) in this folder".into(),
                );
            }
            found.sort();
            files.extend(found);
        } else if p.exists() {
            files.push(p.clone());
        } else {
            fail(p.display().to_string(), "no such file or folder".into());
        }
    }
    files
}

fn is_image(p: &Path) -> bool {
    IMAGE_EXTS.contains(&ext(p).as_str())
}

fn is_idx(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n.to_string_lossy().contains("idx3-ubyte"))
}

/// The inputs of one file: an image, or every image of an IDX file (named `file#k`).
fn read_items(path: &Path, stems: &mut HashSet<String>) -> Result<Vec<Item>> {
    let mut unique = |base: String| {
        let mut s = base.clone();
        let mut k = 2;
        while !stems.insert(s.clone()) {
            s = format!("{base}-{k}");
            k += 1;
        }
        s
    };
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
    if is_idx(path) {
        let bytes = fs::read(path).context("cannot read")?;
        let (pixels, n, rows, cols) = parse_idx_images(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok((0..n)
            .map(|k| {
                let px = pixels[k * rows * cols..(k + 1) * rows * cols].to_vec();
                let image =
                    DynamicImage::ImageLuma8(image::GrayImage::from_raw(cols as u32, rows as u32, px).expect("size"));
                Item { name: format!("{}#{k}", path.display()), stem: unique(format!("{stem}-{k}")), image }
            })
            .collect());
    }
    let image = crate::data::refuge::open_image(path)?;
    Ok(vec![Item { name: path.display().to_string(), stem: unique(stem), image }])
}

/// `rgb` with each non-background class painted half-transparently in its own colour.
fn overlay(rgb: &[u8], mask: &[u8]) -> Vec<u8> {
    const COLOURS: [[u8; 3]; 6] =
        [[0, 0, 0], [230, 40, 40], [40, 90, 255], [40, 200, 60], [240, 200, 30], [200, 60, 220]];
    let mut out = rgb.to_vec();
    for (p, &k) in mask.iter().enumerate() {
        if k > 0 {
            let col = COLOURS[k as usize % COLOURS.len()];
            for c in 0..3 {
                out[3 * p + c] = ((out[3 * p + c] as u16 + col[c] as u16) / 2) as u8;
            }
        }
    }
    out
}

/// Fails with one line when some inputs failed (after the rest were written).
pub fn check(outcome: &Outcome) -> Result<()> {
    if !outcome.failed.is_empty() {
        bail!(
            "{} of {} input(s) failed (listed above); the others' predictions were written",
            outcome.failed.len(),
            outcome.failed.len() + outcome.done
        );
    }
    Ok(())
}
