//! `mtcool flatness`: how flat each task's trained minimum is with respect to each extractor.
//!
//! MT-CooL trains task t with the other task's extractor perturbed by ε ~ U(−b, b), aiming at a minimum
//! that stays good while the other task moves its weights. This probe measures that on trained runs:
//! task t's test loss and main metric with the other task's extractor ("other") or its own ("own")
//! perturbed by U(−r, r) per weight, over radii r and noise draws. The noise is the training noise
//! (Philox, added inside the forward ops through `Read::Frozen`), so a probe at r = b sees exactly the
//! kind of perturbation training used; "own" is the control: how sharp the same loss is in general.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use super::data::{self, TaskData, TaskKind};
use super::report::evaluate_pass;
use super::{TrainConfig, EVAL_BATCH};
use crate::backend::Backend;
use crate::checkpoint;
use crate::metrics::MetricKind;
use crate::model::{Fusion, Method, MultiTaskModel, Read, TaskId};
use crate::mtl::mtcool::Mode;
use crate::noise::NoiseKey;

/// The methods with one extractor per task, the only ones where "the other task's extractor" exists.
pub const METHODS: [Method; 3] = [Method::Mtcool, Method::Independent, Method::Ctan];

/// Noise streams of the probe: far from training's (1, 2) and dropout's (0xD0), so a probe never
/// replays a draw the run trained with.
const PROBE_STREAM: u32 = 0xF1A0_0000;

/// Which extractor a probe perturbs, relative to the task it evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Other,
    Own,
}

/// A run folder ready to probe.
pub struct LoadedRun {
    /// The folder name (the legend and table label).
    pub label: String,
    pub dir: PathBuf,
    pub cfg: TrainConfig,
    pub model: MultiTaskModel,
    pub test: Box<dyn TaskData>,
}

/// The cheap checks of a run folder (exists, config.json, a probeable method, model.safetensors), so
/// that every `--run` is checked before the first (slow) evaluation.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    ensure!(dir.is_dir(), "--run {}: no such folder", dir.display());
    let path = dir.join("config.json");
    ensure!(path.is_file(), "--run {}: not a run folder (no config.json)", dir.display());
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let cfg: TrainConfig =
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid run config", path.display()))?;
    if !METHODS.contains(&cfg.method) {
        let names: Vec<String> = METHODS.iter().map(name).collect();
        bail!(
            "--run {}: method {} has one extractor for both tasks, so there is no other task's extractor to \
             perturb; the flatness probe works on runs of {}",
            dir.display(),
            name(&cfg.method),
            names.join(", ")
        );
    }
    ensure!(dir.join("model.safetensors").is_file(), "--run {}: no model.safetensors in it", dir.display());
    Ok(cfg)
}

/// Loads a run folder as `eval_run_on` does (its model on `backend`, its test split rebuilt from
/// config.json, `data_dir` and `limit_test` overriding the run's own settings).
pub fn load_run(
    dir: &Path,
    data_dir: Option<PathBuf>,
    limit_test: Option<usize>,
    backend: &Backend,
) -> Result<LoadedRun> {
    let mut cfg = read_config(dir)?;
    let mut model = checkpoint::load(&dir.join("model.safetensors"))?;
    ensure!(model.cfg == cfg.model_config(), "model.safetensors does not match config.json in {}", dir.display());
    model.store.to_backend(backend)?;
    if data_dir.is_some() {
        cfg.data.data_dir = data_dir;
    }
    if limit_test.is_some() {
        cfg.data.limit_test = limit_test;
    }
    let test = data::load_test(&cfg.data)?;
    ensure!(!test.is_empty(), "--run {}: the test split is empty", dir.display());
    let label = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(LoadedRun { label, dir: dir.to_path_buf(), cfg, model, test })
}

/// A value's command-line spelling (`Method::Mtcool` → "mtcool").
fn name(v: &impl ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// `--radii`: comma-separated half-widths r ≥ 0, sorted and deduplicated (the plot's x order).
pub fn parse_radii(text: &str) -> Result<Vec<f32>> {
    ensure!(!text.trim().is_empty(), "--radii is empty: give radii like 0,1e-3,1e-2");
    let mut radii = vec![];
    for item in text.split(',').map(str::trim) {
        ensure!(!item.is_empty(), "--radii {text:?} has an empty entry");
        let r: f32 = item.parse().map_err(|_| anyhow::anyhow!("--radii: {item:?} is not a number"))?;
        ensure!(r.is_finite(), "--radii: {item} is not finite");
        ensure!(r >= 0.0, "--radii: {item} is negative (a radius is the half-width of U(−r, r))");
        radii.push(if r == 0.0 { 0.0 } else { r }); // -0 is 0
    }
    radii.sort_by(f32::total_cmp);
    radii.dedup();
    Ok(radii)
}

/// What to probe: radii, noise draws per radius > 0, and the seed of the noise keys.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    pub radii: Vec<f32>,
    pub draws: u32,
    pub seed: u64,
}

impl Options {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.radii.is_empty(), "--radii is empty: give radii like 0,1e-3,1e-2");
        ensure!(self.radii.iter().all(|r| r.is_finite() && *r >= 0.0), "--radii must be finite and ≥ 0");
        ensure!(self.draws >= 1, "--draws must be at least 1");
        Ok(())
    }
}

/// Mean and sample standard deviation of some draws, with the draws themselves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub std: f64,
    pub values: Vec<f64>,
}

impl Stat {
    fn of(values: Vec<f64>) -> Stat {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var =
            if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        Stat { mean, std: var.sqrt(), values }
    }
}

/// One (run, task, probe, radius) cell.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub run: String,
    /// 1 or 2.
    pub task: usize,
    pub probe: Probe,
    pub r: f64,
    pub loss: Stat,
    /// "acc" (classification) or "dice" (segmentation: the mean over its regions' Dice).
    pub metric_name: String,
    pub metric: Stat,
}

/// What `config.json` says about a probed run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunInfo {
    pub label: String,
    pub dir: String,
    pub task: TaskKind,
    pub method: Method,
    /// MT-CooL's mode, radius b and fusion (null for other methods, which have none).
    pub mode: Option<Mode>,
    pub b: Option<f64>,
    pub fusion: Option<Fusion>,
    pub seed: u64,
    pub epochs: u32,
    pub test_examples: usize,
}

/// The probe's result: what `<stem>.json` holds (with the command and device).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flatness {
    pub radii: Vec<f64>,
    pub draws: u32,
    pub seed: u64,
    pub runs: Vec<RunInfo>,
    pub rows: Vec<Row>,
}

/// An f32 as the f64 of its shortest decimal (1e-3, not 0.0010000000474974513, in the JSON).
fn decimal(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::NAN)
}

/// The noise of one (task, probe, radius, draw). The radius enters by value (its bits), not by its
/// place in `--radii`, so a radius gives the same numbers whatever other radii are listed; the run does
/// not enter at all, so runs of one architecture (vanilla / noreg / full) meet the same perturbations
/// and their curves differ by the weights alone.
fn key(seed: u64, task: usize, probe: Probe, r: f32, draw: u32) -> NoiseKey {
    let family = (task as u32) << 1 | (probe == Probe::Own) as u32;
    NoiseKey { seed, step: r.to_bits(), stream: PROBE_STREAM | family, sample: draw }
}

/// (loss, main metric) from a finished task's metrics; a metric left out as non-finite is NaN.
fn scores(m: &super::Metrics, kind: &MetricKind) -> (f64, f64) {
    let loss = m.get("loss").copied().unwrap_or(f64::NAN);
    let metric = match kind {
        MetricKind::Classify => m.get("acc").copied().unwrap_or(f64::NAN),
        MetricKind::Segment(_) => super::report::mean_dice(m),
    };
    (loss, metric)
}

/// Probes every run: per task, probe and radius, `draws` noisy evaluations of the test split (one
/// clean evaluation at r = 0, shared by both probes).
pub fn probe(runs: &[LoadedRun], opts: &Options) -> Result<Flatness> {
    opts.validate()?;
    ensure!(runs.len() < 1 << 16, "at most 65535 runs at once");
    let mut rows = vec![];
    let mut infos = vec![];
    // Folder names label the runs; two alike (same name, other parents) are told apart by their paths.
    let label = |run: &LoadedRun| match runs.iter().filter(|r| r.label == run.label).count() {
        1 => run.label.clone(),
        _ => run.dir.display().to_string(),
    };
    for run in runs {
        ensure!(
            METHODS.contains(&run.cfg.method),
            "run {}: method {} cannot be probed",
            run.label,
            name(&run.cfg.method)
        );
        rows.extend(probe_run(run, &label(run), opts)?);
        let mtcool = run.cfg.method == Method::Mtcool;
        infos.push(RunInfo {
            label: label(run),
            dir: run.dir.display().to_string(),
            task: run.cfg.data.task,
            method: run.cfg.method,
            mode: mtcool.then_some(run.cfg.mode),
            b: mtcool.then_some(decimal(run.cfg.b)),
            fusion: mtcool.then_some(run.cfg.fusion),
            seed: run.cfg.seed,
            epochs: run.cfg.epochs,
            test_examples: run.test.len(),
        });
    }
    Ok(Flatness {
        radii: opts.radii.iter().map(|&r| decimal(r)).collect(),
        draws: opts.draws,
        seed: opts.seed,
        runs: infos,
        rows,
    })
}

/// The rows of one run, labelled `label`.
fn probe_run(run: &LoadedRun, label: &str, opts: &Options) -> Result<Vec<Row>> {
    let setup = data::setup(&run.cfg.data);
    let n = setup.n_tasks();
    let pass = |reads: &[Read]| evaluate_pass(&run.model, run.test.as_ref(), &setup, EVAL_BATCH, reads);
    // One clean pass scores every task.
    let m = pass(&vec![Read::Train; n])?;
    let clean: Vec<(f64, f64)> = (0..n).map(|t| scores(&m[t].finish(), &setup.metrics[t])).collect();
    let mut rows = vec![];
    for (t, &clean) in clean.iter().enumerate() {
        let metric_name = if setup.metrics[t] == MetricKind::Classify { "acc" } else { "dice" };
        for probe in [Probe::Other, Probe::Own] {
            // Extractor i is task i's (a probeable method has one per task); "other" perturbs every
            // other task's extractor, each with its own draw.
            let perturbed: Vec<usize> =
                if probe == Probe::Own { vec![t] } else { TaskId(t).others(n).map(|o| o.0).collect() };
            for &r in &opts.radii {
                let draws: Vec<(f64, f64)> = if r == 0.0 {
                    vec![clean]
                } else {
                    (0..opts.draws)
                        .map(|d| {
                            let mut reads = vec![Read::Train; n];
                            for (rank, &e) in perturbed.iter().enumerate() {
                                let mut k = key(opts.seed, t, probe, r, d);
                                k.sample += (rank as u32) << 16; // the first perturbed extractor: the two-task key
                                reads[e] = Read::Frozen(Some((k, r)));
                            }
                            Ok(scores(&pass(&reads)?[t].finish(), &setup.metrics[t]))
                        })
                        .collect::<Result<_>>()?
                };
                rows.push(Row {
                    run: label.to_string(),
                    task: t + 1,
                    probe,
                    r: decimal(r),
                    loss: Stat::of(draws.iter().map(|d| d.0).collect()),
                    metric_name: metric_name.into(),
                    metric: Stat::of(draws.iter().map(|d| d.1).collect()),
                });
            }
        }
    }
    Ok(rows)
}

/// The results as a markdown table.
pub fn markdown_table(f: &Flatness) -> String {
    let mut s = String::from("| run | task | probe | r | loss (mean ± std) | metric | mean ± std |\n");
    s += "|---|---:|---|---:|---:|---|---:|\n";
    for row in &f.rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.4} ± {:.4} | {} | {:.4} ± {:.4} |\n",
            row.run.replace('|', "\\|"),
            row.task,
            name_of(row.probe),
            row.r,
            row.loss.mean,
            row.loss.std,
            row.metric_name,
            row.metric.mean,
            row.metric.std
        );
    }
    s
}

fn name_of(p: Probe) -> &'static str {
    match p {
        Probe::Other => "other",
        Probe::Own => "own",
    }
}

/// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` (a folder as stem means `<folder>/flatness`);
/// returns their paths.
pub fn write(f: &Flatness, stem: &Path, command: &str, device: &str) -> Result<[PathBuf; 3]> {
    let stem = if stem.is_dir() { stem.join("flatness") } else { stem.to_path_buf() };
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let path = |ext: &str| {
        let mut s = stem.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    let mut json = serde_json::to_value(f)?;
    json["command"] = command.into();
    json["device"] = device.into();
    let radii: Vec<String> = f.radii.iter().map(|r| r.to_string()).collect();
    let md = format!(
        "# Flatness probe\n\n`{command}`: radii {}; {} noise draw(s) per radius > 0 (seed {}); {device}\n\n{}",
        radii.join(", "),
        f.draws,
        f.seed,
        markdown_table(f)
    );
    let paths = [path(".json"), path(".md"), path(".svg")];
    checkpoint::write_atomic(&paths[0], (serde_json::to_string_pretty(&json)? + "\n").as_bytes())?;
    checkpoint::write_atomic(&paths[1], md.as_bytes())?;
    checkpoint::write_atomic(&paths[2], svg(f).as_bytes())?;
    Ok(paths)
}

/// Line colours, one per run (matplotlib's tab10).
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;")
}

/// Where radius r sits between `left` and `right`: log scale over the radii > 0, with r = 0 (no log
/// position) at the left edge, set apart by a gap with a break mark.
fn x_scale(radii: &[f64], left: f64, right: f64) -> impl Fn(f64) -> f64 {
    let pos: Vec<f64> = radii.iter().filter(|&&r| r > 0.0).map(|&r| r.log10()).collect();
    let (lo, hi) =
        (pos.iter().copied().fold(f64::INFINITY, f64::min), pos.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let start = if radii.contains(&0.0) && !pos.is_empty() { left + 0.12 * (right - left) } else { left };
    move |r: f64| match r {
        _ if pos.is_empty() => (left + right) / 2.0,
        0.0 => left,
        _ if hi - lo < 1e-12 => (start + right) / 2.0,
        _ => start + (right - start) * (r.log10() - lo) / (hi - lo),
    }
}

/// One panel: task `t`'s mean test loss against r (± one std as a bar), a line per run × probe.
fn panel(f: &Flatness, t: usize, x0: f64, title: &str) -> String {
    let (w, h, l, r, top, bottom) = (420.0, 300.0, 64.0, 16.0, 34.0, 46.0);
    let (left, right, y_top, y_bot) = (x0 + l, x0 + w - r, top, h - bottom);
    let rows: Vec<&Row> = f.rows.iter().filter(|row| row.task == t + 1).collect();
    let ys: Vec<f64> = rows.iter().map(|row| row.loss.mean).filter(|v| v.is_finite()).collect();
    let (mut lo, mut hi) =
        (ys.iter().copied().fold(f64::INFINITY, f64::min), ys.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    } else if hi - lo < 1e-12 {
        (lo, hi) = (lo - 0.05 * lo.abs().max(1e-3), hi + 0.05 * hi.abs().max(1e-3));
    } else {
        (lo, hi) = (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo));
    }
    let px = x_scale(&f.radii, left, right);
    let py = |v: f64| y_bot - (y_bot - y_top) * (v - lo) / (hi - lo);
    let mut s = format!(
        "<rect x='{x0}' y='0' width='{w}' height='{h}' fill='white' stroke='#ccc'/>\
         <text x='{}' y='20' text-anchor='middle' font-size='13'>{}</text>\
         <line x1='{left}' y1='{y_bot}' x2='{right}' y2='{y_bot}' stroke='#444'/>\
         <line x1='{left}' y1='{y_top}' x2='{left}' y2='{y_bot}' stroke='#444'/>\
         <text x='{}' y='{}' font-size='11' text-anchor='middle'>r (log scale; 0 at the left edge)</text>\
         <text x='{}' y='{}' font-size='11' text-anchor='middle' transform='rotate(-90 {} {})'>test loss</text>",
        x0 + w / 2.0,
        escape(title),
        (left + right) / 2.0,
        h - 8.0,
        x0 + 14.0,
        (y_top + y_bot) / 2.0,
        x0 + 14.0,
        (y_top + y_bot) / 2.0
    );
    for &rad in &f.radii {
        let x = px(rad);
        s += &format!(
            "<line x1='{x:.1}' y1='{y_bot}' x2='{x:.1}' y2='{}' stroke='#444'/>\
             <text x='{x:.1}' y='{}' font-size='10' text-anchor='middle'>{rad}</text>",
            y_bot + 4.0,
            y_bot + 16.0
        );
    }
    if f.radii.contains(&0.0) && f.radii.iter().any(|&r| r > 0.0) {
        // The axis break between r = 0 and the log-scaled radii.
        let xb = (px(0.0) + px(f.radii[1])) / 2.0 - 6.0;
        for dx in [0.0, 5.0] {
            s += &format!(
                "<line x1='{}' y1='{}' x2='{}' y2='{}' stroke='#444'/>",
                xb + dx,
                y_bot + 5.0,
                xb + dx + 4.0,
                y_bot - 5.0
            );
        }
    }
    let decimals = ((4.0 / (hi - lo)).log10().ceil().max(0.0) as usize + 1).min(6);
    for i in 0..=4 {
        let v = lo + (hi - lo) * i as f64 / 4.0;
        s += &format!(
            "<line x1='{}' y1='{y:.1}' x2='{left}' y2='{y:.1}' stroke='#444'/>\
             <text x='{}' y='{:.1}' font-size='10' text-anchor='end'>{v:.decimals$}</text>",
            left - 4.0,
            left - 6.0,
            py(v) + 3.0,
            y = py(v)
        );
    }
    for (ri, run) in f.runs.iter().enumerate() {
        let color = COLORS[ri % COLORS.len()];
        for probe in [Probe::Other, Probe::Own] {
            let pts: Vec<(f64, &Row)> = rows
                .iter()
                .filter(|row| row.run == run.label && row.probe == probe && row.loss.mean.is_finite())
                .map(|row| (px(row.r), *row))
                .collect();
            let dash = if probe == Probe::Own { " stroke-dasharray='6,4'" } else { "" };
            let line: Vec<String> = pts.iter().map(|(x, row)| format!("{x:.1},{:.1}", py(row.loss.mean))).collect();
            s +=
                &format!("<polyline fill='none' stroke='{color}' stroke-width='2'{dash} points='{}'/>", line.join(" "));
            for (x, row) in &pts {
                let (m, sd) = (row.loss.mean, row.loss.std);
                s += &format!("<circle cx='{x:.1}' cy='{:.1}' r='3' fill='{color}'/>", py(m));
                if sd > 0.0 && sd.is_finite() {
                    let (a, b) = (py((m - sd).max(lo)), py((m + sd).min(hi)));
                    s += &format!("<line x1='{x:.1}' y1='{a:.1}' x2='{x:.1}' y2='{b:.1}' stroke='{color}'/>");
                }
            }
        }
    }
    s
}

/// The plot: one panel per task (test loss against r), and a legend of the runs and probes below.
pub fn svg(f: &Flatness) -> String {
    let same_task = f.runs.windows(2).all(|w| w[0].task == w[1].task);
    let names =
        f.runs.first().filter(|_| same_task).map(|r| data::builtin_setup(r.task).names).filter(|n| !n.is_empty());
    let title = |t: usize| match &names {
        Some(n) => format!("task {}: {}, test loss", t + 1, n[t]),
        None => format!("task {}, test loss", t + 1),
    };
    let legend_h = 20.0 * (f.runs.len() + 1) as f64 + 12.0;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='860' height='{}' font-family='sans-serif'>{}{}",
        300.0 + legend_h,
        panel(f, 0, 0.0, &title(0)),
        panel(f, 1, 440.0, &title(1))
    );
    let y0 = 300.0 + 20.0;
    for (ri, run) in f.runs.iter().enumerate() {
        let (y, color) = (y0 + 20.0 * ri as f64, COLORS[ri % COLORS.len()]);
        s += &format!(
            "<line x1='20' y1='{y}' x2='50' y2='{y}' stroke='{color}' stroke-width='2'/>\
             <text x='58' y='{}' font-size='12'>{}</text>",
            y + 4.0,
            escape(&run.label)
        );
    }
    let y = y0 + 20.0 * f.runs.len() as f64;
    s += &format!(
        "<line x1='20' y1='{y}' x2='50' y2='{y}' stroke='#444' stroke-width='2'/>\
         <text x='58' y='{}' font-size='12'>other: the other task&apos;s extractor perturbed</text>\
         <line x1='340' y1='{y}' x2='370' y2='{y}' stroke='#444' stroke-width='2' stroke-dasharray='6,4'/>\
         <text x='378' y='{}' font-size='12'>own: the task&apos;s own extractor perturbed</text></svg>\n",
        y + 4.0,
        y + 4.0
    );
    s
}
