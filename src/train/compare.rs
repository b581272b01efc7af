//! `mtcool compare`: train a list of methods × seeds on one task and write the comparison table.
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

use super::data::TaskKind;
use super::report::{eval_run, Summary};
use super::{train_on, write_json, RunOptions, TrainConfig};
use crate::backend::Backend;
use crate::model::{Method, MultiTaskModel};

/// One row of the table: its name and the config of each seed's run.
pub struct Row {
    pub name: String,
    pub runs: Vec<TrainConfig>,
}

/// The metrics shown per task, with their column headers.
pub fn columns(task: TaskKind) -> Vec<(usize, &'static str, &'static str)> {
    match task {
        TaskKind::Multimnist => vec![(0, "acc", "task 1 (left) acc"), (1, "acc", "task 2 (right) acc")],
        TaskKind::Fundus => vec![
            (0, "dice_disc", "disc Dice"),
            (0, "dice_cup", "cup Dice"),
            (1, "auroc", "AUROC"),
            (1, "sen_at_spe85", "Sen@Spe85"),
            (1, "acc", "glaucoma Acc"),
            (1, "sensitivity", "Sen"),
            (1, "specificity", "Spe"),
        ],
        TaskKind::FundusAv => vec![
            (0, "dice_artery", "artery F1"),
            (0, "acc_artery", "artery Acc"),
            (0, "dice_vein", "vein F1"),
            (0, "acc_vein", "vein Acc"),
            (1, "dice_vessel", "vessel F1"),
            (1, "acc_vessel", "vessel Acc"),
        ],
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

/// The markdown table of finished rows. `joint_params` is the Joint model's size on this task.
pub fn table(task: TaskKind, rows: &[(String, Vec<Summary>)], joint_params: usize) -> String {
    let cols = columns(task);
    let mut s = String::from("| method |");
    cols.iter().for_each(|(_, _, h)| s.push_str(&format!(" {h} % |")));
    s.push_str(" params | × Joint | seeds | epochs | s/run |\n|---|");
    s.push_str(&"---|".repeat(cols.len() + 5));
    s.push('\n');
    for (name, runs) in rows.iter().filter(|(_, r)| !r.is_empty()) {
        s.push_str(&format!("| {name} |"));
        for &(t, key, _) in &cols {
            let xs: Vec<f64> =
                runs.iter().map(|r| 100.0 * r.metrics[t].get(key).copied().unwrap_or(f64::NAN)).collect();
            let (m, sd) = mean_std(&xs);
            s.push_str(&format!(" {m:.2} ± {sd:.2} |"));
        }
        let secs = mean_std(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>()).0;
        let p = runs[0].param_count;
        s.push_str(&format!(
            " {p} | {:.2} | {} | {} | {secs:.0} |\n",
            p as f64 / joint_params as f64,
            runs.len(),
            runs[0].epochs
        ));
    }
    s
}

/// Trains every run not yet done (in seed-major order, so every row gets its first seed early) and
/// writes `table.md` and `results.json` under `out`; returns the table.
pub fn run(task: TaskKind, rows: &[Row], out: &Path, device: &str, backend: &Backend) -> Result<String> {
    fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
    let first = rows.first().and_then(|r| r.runs.first()).context("compare: no methods given")?;
    let joint_params =
        MultiTaskModel::new(TrainConfig { method: Method::Joint, ..first.clone() }.model_config(), 0).param_count();
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
                if columns(task).iter().any(|&(t, key, _)| !s.metrics[t].contains_key(key)) {
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
            table_md = table(task, &done, joint_params);
            fs::write(out.join("table.md"), &table_md).context("writing table.md")?;
            let raw: Vec<RowResults> = done.iter().map(|(name, runs)| RowResults { name, runs }).collect();
            write_json(&out.join("results.json"), &raw)?;
        }
    }
    Ok(table_md)
}
