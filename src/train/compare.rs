//! `mtcool compare`: train a list of methods × seeds on one task and write the comparison table.
//! With a validation split (`--val-fraction`) `table.md` reports each run's best validation epoch
//! (its model-best.safetensors) and `table-last.md` the last epoch; rows that differ only in `b`
//! (e.g. `mtcool-full+b=1e-4,mtcool-full+b=1e-3,…`) are also drawn against b in `b-sweep.svg`.
//!
//! Each run is an ordinary run folder `<out>/<row>-s<seed>/`; a run whose `summary.json` exists is not
//! trained again, so an interrupted comparison picks up where it stopped (a finished run lacking a
//! column's metric, e.g. one added since, is re-evaluated from its checkpoint; summary.json is kept). The table (`table.md`, mean ±
//! std over seeds of every test metric in %, parameters and their ratio to Joint's, seconds per run)
//! and the raw summaries (`results.json`) are written after every run.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::data::{self, DataConfig, TaskKind};
use super::report::{eval_run, Summary};
use super::{train_on, write_json, RunOptions, TrainConfig};
use crate::backend::Backend;
use crate::metrics::{MetricKind, Regions};
use crate::model::{Method, MultiTaskModel};

/// One row of the table: its name and the config of each seed's run.
pub struct Row {
    pub name: String,
    pub runs: Vec<TrainConfig>,
}

/// Columns shown when some run has them: a binary task's metrics at the threshold chosen on the
/// validation split.
const THRESHOLD_COLUMNS: [(&str, &str); 4] = [
    ("threshold", "val threshold"),
    ("acc_thr", "glaucoma Acc@thr"),
    ("sensitivity_thr", "Sen@thr"),
    ("specificity_thr", "Spe@thr"),
];

/// Which epoch of each run a table reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    Last,
    /// The best validation epoch (runs with a validation split).
    Best,
}

fn picked(r: &Summary, pick: Pick) -> &[super::Metrics] {
    match (pick, &r.best_metrics) {
        (Pick::Best, Some(m)) => m,
        _ => &r.metrics,
    }
}

/// The metrics shown per task, with their column headers.
pub fn columns(data: &DataConfig) -> Vec<(usize, String, String)> {
    let fixed =
        |cols: &[(usize, &str, &str)]| cols.iter().map(|&(t, k, h)| (t, k.to_string(), h.to_string())).collect();
    match data.task {
        TaskKind::Multimnist => fixed(&[(0, "acc", "task 1 (left) acc"), (1, "acc", "task 2 (right) acc")]),
        TaskKind::Fundus => fixed(&[
            (0, "dice_disc", "disc Dice"),
            (0, "dice_cup", "cup Dice"),
            (1, "auroc", "AUROC"),
            (1, "sen_at_spe85", "Sen@Spe85"),
            (1, "acc", "glaucoma Acc"),
            (1, "sensitivity", "Sen"),
            (1, "specificity", "Spe"),
        ]),
        TaskKind::Fundus3 => fixed(&[
            (0, "dice_disc", "disc Dice"),
            (0, "dice_cup", "cup Dice"),
            (1, "dice_vessel", "vessel F1"),
            (2, "auroc", "AUROC"),
            (2, "acc", "glaucoma Acc"),
            (2, "sensitivity", "Sen"),
            (2, "specificity", "Spe"),
        ]),
        TaskKind::FundusAv => fixed(&[
            (0, "dice_artery", "artery F1"),
            (0, "acc_artery", "artery Acc"),
            (0, "dice_vein", "vein F1"),
            (0, "acc_vein", "vein Acc"),
            (1, "dice_vessel", "vessel F1"),
            (1, "acc_vessel", "vessel Acc"),
        ]),
        // The user's tasks: Dice per scored class, accuracy (and AUROC when binary) per classifier.
        TaskKind::Folder => {
            let setup = data::setup(data);
            let mut cols = vec![];
            for (t, (metric, name)) in setup.metrics.iter().zip(&setup.names).enumerate() {
                match metric {
                    MetricKind::Segment(Regions::PerClass(classes) | Regions::Nested(classes)) => {
                        cols.extend(classes.iter().map(|c| (t, format!("dice_{c}"), format!("{name}: {c} Dice"))));
                    }
                    MetricKind::Classify => {
                        cols.push((t, "acc".to_string(), format!("{name} Acc")));
                        if setup.specs[t].classes() == 2 {
                            cols.push((t, "auroc".to_string(), format!("{name} AUROC")));
                        }
                    }
                }
            }
            cols
        }
    }
}

#[derive(Serialize)]
struct RowResults<'a> {
    name: &'a str,
    runs: &'a [Summary],
}

/// Mean and sample standard deviation (0 for one value); NaNs are skipped, all-NaN gives NaN.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64 } else { 0.0 };
    (mean, var.sqrt())
}

/// The markdown table of finished rows, each run read at `pick`. `joint_params` is the size of Joint
/// at the default width on this task (the paper's "Params 1").
pub fn table(data: &DataConfig, rows: &[(String, Vec<Summary>)], joint_params: usize, pick: Pick) -> String {
    let mut cols = columns(data);
    let all = || rows.iter().flat_map(|(_, r)| r.iter());
    let tasks = all().map(|r| r.metrics.len()).max().unwrap_or(0);
    for t in 0..tasks {
        for (key, header) in THRESHOLD_COLUMNS {
            if all().any(|r| picked(r, pick).get(t).is_some_and(|m| m.contains_key(key))) {
                cols.push((t, key.to_string(), header.to_string()));
            }
        }
    }
    let mut s = String::from("| method |");
    cols.iter()
        .for_each(|(_, key, h)| s.push_str(&if *key == "threshold" { format!(" {h} |") } else { format!(" {h} % |") }));
    s.push_str(" params | × Joint | seeds | epochs | s/run |\n|---|");
    s.push_str(&"---|".repeat(cols.len() + 5));
    s.push('\n');
    for (name, runs) in rows.iter().filter(|(_, r)| !r.is_empty()) {
        s.push_str(&format!("| {name} |"));
        for (t, key, _) in &cols {
            let (t, key) = (*t, key.as_str());
            let scale = if key == "threshold" { 1.0 } else { 100.0 };
            let xs: Vec<f64> =
                runs.iter().map(|r| scale * picked(r, pick)[t].get(key).copied().unwrap_or(f64::NAN)).collect();
            let (m, sd) = mean_std(&xs);
            s.push_str(&format!(" {m:.2} ± {sd:.2} |"));
        }
        let secs = mean_std(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>()).0;
        let p = runs[0].param_count;
        let epochs = match pick {
            Pick::Best if runs.iter().all(|r| r.best_epoch.is_some()) => {
                let best: Vec<f64> = runs.iter().filter_map(|r| r.best_epoch).map(f64::from).collect();
                format!("best {:.1} of {}", mean_std(&best).0, runs[0].epochs)
            }
            _ => runs[0].epochs.to_string(),
        };
        s.push_str(&format!(
            " {p} | {:.2} | {} | {epochs} | {secs:.0} |\n",
            p as f64 / joint_params as f64,
            runs.len(),
        ));
    }
    s
}

/// One b sweep: the rows' common name less `+b=…`, and each b with its row's runs.
pub type Sweep<'a> = (String, Vec<(f64, &'a [Summary])>);

/// The rows that differ only in `+b=…` from a common base (at least 3 values of b), as
/// (base, [(b, runs)]) sorted by b.
fn b_sweeps<'a>(rows: &'a [(String, Vec<Summary>)], cfgs: &[Row]) -> Vec<Sweep<'a>> {
    let mut groups: Vec<Sweep<'a>> = vec![];
    for ((name, runs), row) in rows.iter().zip(cfgs) {
        let Some(cfg) = row.runs.first() else { continue };
        if runs.is_empty() || !name.contains("+b=") {
            continue;
        }
        let base: String = name.split('+').filter(|p| !p.starts_with("b=")).collect::<Vec<_>>().join("+");
        match groups.iter_mut().find(|(b, _)| *b == base) {
            Some((_, pts)) => pts.push((cfg.b as f64, runs)),
            None => groups.push((base, vec![(cfg.b as f64, runs)])),
        }
    }
    groups.retain(|(_, pts)| pts.len() >= 3);
    groups.iter_mut().for_each(|(_, pts)| pts.sort_by(|a, b| a.0.total_cmp(&b.0)));
    groups
}

/// Each task's headline test metric (mean ± std over seeds, at `pick`) against b on a log axis, one
/// line per sweep.
pub fn b_sweep_svg(data: &DataConfig, sweeps: &[Sweep], pick: Pick) -> String {
    const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    let cols = columns(data);
    let heads: Vec<(usize, &str, &str)> = (0..=cols.iter().map(|c| c.0).max().unwrap_or(0))
        .filter_map(|t| cols.iter().find(|c| c.0 == t).map(|c| (c.0, c.1.as_str(), c.2.as_str())))
        .collect();
    let (w, h, pad) = (380.0, 260.0, 46.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{h}' font-family='sans-serif'>",
        w * heads.len() as f64 + 20.0
    );
    let bs: Vec<f64> = sweeps.iter().flat_map(|(_, p)| p.iter().map(|x| x.0.log10())).collect();
    let (blo, bhi) =
        (bs.iter().copied().fold(f64::INFINITY, f64::min), bs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    for (panel, &(t, key, header)) in heads.iter().enumerate() {
        let x0 = panel as f64 * (w + 20.0);
        let stats = |runs: &[Summary]| {
            mean_std(
                &runs
                    .iter()
                    .map(|r| 100.0 * picked(r, pick)[t].get(key).copied().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        let vals: Vec<f64> =
            sweeps.iter().flat_map(|(_, p)| p.iter().map(|x| stats(x.1).0)).filter(|v| v.is_finite()).collect();
        let (lo, hi) = (
            vals.iter().copied().fold(f64::INFINITY, f64::min),
            vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        let (lo, hi) = if hi > lo { (lo, hi) } else { (lo - 1.0, lo + 1.0) };
        let px = |b: f64| x0 + pad + (w - 2.0 * pad) * if bhi > blo { (b.log10() - blo) / (bhi - blo) } else { 0.5 };
        let py = |v: f64| pad + (h - 2.0 * pad) * (1.0 - (v - lo) / (hi - lo));
        svg += &format!(
            "<rect x='{x0}' y='0' width='{w}' height='{h}' fill='white' stroke='#ccc'/>\
             <text x='{}' y='18' text-anchor='middle' font-size='13'>{header} % vs b</text>\
             <text x='{}' y='{}' font-size='10' text-anchor='end'>{hi:.2}</text>\
             <text x='{}' y='{}' font-size='10' text-anchor='end'>{lo:.2}</text>",
            x0 + w / 2.0,
            x0 + pad - 4.0,
            pad + 4.0,
            x0 + pad - 4.0,
            h - pad
        );
        for &(b, _) in sweeps.first().map(|s| s.1.as_slice()).unwrap_or(&[]) {
            svg += &format!(
                "<text x='{:.1}' y='{}' font-size='10' text-anchor='middle'>{b:.0e}</text>",
                px(b),
                h - pad + 14.0
            );
        }
        for (i, (base, pts)) in sweeps.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            let xy: Vec<(f64, f64, f64)> = pts
                .iter()
                .map(|(b, runs)| {
                    let (m, sd) = stats(runs);
                    (px(*b), m, sd)
                })
                .collect();
            let line: Vec<String> = xy.iter().map(|(x, m, _)| format!("{x:.1},{:.1}", py(*m))).collect();
            svg += &format!("<polyline fill='none' stroke='{c}' stroke-width='2' points='{}'/>", line.join(" "));
            for (x, m, sd) in &xy {
                svg += &format!(
                    "<line x1='{x:.1}' x2='{x:.1}' y1='{:.1}' y2='{:.1}' stroke='{c}'/><circle cx='{x:.1}' cy='{:.1}' r='3' fill='{c}'/>",
                    py(m - sd), py(m + sd), py(*m)
                );
            }
            // Legend in the lower right, above the b labels (the curves mostly sit high).
            let y = h - pad - 8.0 - 13.0 * (sweeps.len() - 1 - i) as f64;
            svg += &format!(
                "<text x='{}' y='{y}' font-size='11' text-anchor='end' fill='{c}'>{base}</text>",
                x0 + w - 8.0
            );
        }
    }
    svg + "</svg>\n"
}

/// Trains every run not yet done (in seed-major order, so every row gets its first seed early) and
/// writes `table.md` and `results.json` under `out`; returns the table.
pub fn run(rows: &[Row], out: &Path, device: &str, backend: &Backend) -> Result<String> {
    fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    let first = rows.first().and_then(|r| r.runs.first()).context("compare: no methods given")?;
    let first = first.with_manifest()?;
    let data = &first.data;
    let joint = TrainConfig { method: Method::Joint, width: 1.0, ..first.clone() };
    let joint_params = MultiTaskModel::new(joint.model_config(), 0).param_count();
    let seeds = rows.iter().map(|r| r.runs.len()).max().unwrap_or(0);
    let mut done: Vec<(String, Vec<Summary>)> = rows.iter().map(|r| (r.name.clone(), vec![])).collect();
    let mut table_md = String::new();
    for i in 0..seeds {
        for (r, row) in rows.iter().enumerate() {
            let Some(cfg) = row.runs.get(i) else { continue };
            let dir = out.join(format!("{}-s{}", row.name, cfg.seed));
            let summary_path = dir.join("summary.json");
            let summary: Summary = if summary_path.exists() {
                let text = fs::read_to_string(&summary_path)?;
                let mut s: Summary =
                    serde_json::from_str(&text).with_context(|| format!("reading {}", summary_path.display()))?;
                // A run finished before a table column's metric existed: re-evaluate its checkpoint.
                if columns(data).iter().any(|(t, key, _)| !s.metrics[*t].contains_key(key)) {
                    eprintln!("compare: re-evaluating {} for metrics it lacks", dir.display());
                    s.metrics = eval_run(&dir, cfg.data.data_dir.clone())?.1;
                }
                s
            } else {
                eprintln!("compare: {} seed {} → {}", row.name, cfg.seed, dir.display());
                train_on(cfg, &dir, device, &RunOptions::default(), backend)
                    .with_context(|| format!("run {} seed {}", row.name, cfg.seed))?
            };
            done[r].1.push(summary);
            let best = done.iter().flat_map(|(_, r)| r).all(|r| r.best_metrics.is_some());
            let pick = if best { Pick::Best } else { Pick::Last };
            table_md = table(data, &done, joint_params, pick);
            fs::write(out.join("table.md"), &table_md).context("writing table.md")?;
            if best {
                fs::write(out.join("table-last.md"), table(data, &done, joint_params, Pick::Last))
                    .context("writing table-last.md")?;
            }
            let sweeps = b_sweeps(&done, rows);
            if !sweeps.is_empty() {
                fs::write(out.join("b-sweep.svg"), b_sweep_svg(data, &sweeps, pick)).context("writing b-sweep.svg")?;
            }
            let raw: Vec<RowResults> = done.iter().map(|(name, runs)| RowResults { name, runs }).collect();
            write_json(&out.join("results.json"), &raw)?;
        }
    }
    Ok(table_md)
}
