//! The phases of a training run (`train_on`), in order: `open` (check everything, load the data,
//! build or restore the model and optimiser, place them on the device), `step` (one optimisation step
//! with the non-finite guard and step checkpoints), `end_epoch` (evaluate, log, checkpoint), `finish`
//! (model file, summary, curves, pictures).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::data::{self, TaskData, TaskKind, TaskSetup};
use super::graph::GraphStep;
use super::{
    best_epoch, describe, evaluate_pass, nan_injection, nonfinite, objective, pictures, plot, resume, selection_score,
    train_step, write_json, EpochAcc, EpochMetrics, Injection, RunOptions, Summary, TrainConfig, EVAL_BATCH,
};
use crate::backend::Backend;
use crate::checkpoint;
use crate::model::{Method, MultiTaskModel, Read, TaskId};
use crate::mtl::{Objective, StepOut};
use crate::optim::Optimizer;

/// Steps whose losses and correct counts are read back together (and shown on the progress bar).
const LOG_EVERY: usize = 16;

/// A run in progress: what its phases share.
pub(super) struct Run<'a> {
    cfg: &'a TrainConfig,
    out: &'a Path,
    opts: &'a RunOptions,
    backend: &'a Backend,
    pub(super) train_set: Box<dyn TaskData>,
    val_set: Option<Box<dyn TaskData>>,
    test_set: Box<dyn TaskData>,
    setup: TaskSetup,
    objective: Objective,
    steps_per_epoch: u32,
    model: MultiTaskModel,
    opt: Optimizer,
    pub(super) pos: resume::Position,
    last_ckpt: Option<PathBuf>,
    metrics_file: fs::File,
    bar: indicatif::ProgressBar,
    start: Instant,
    inject_nan: Option<(u32, Injection)>,
    /// Counted steps not read back yet: their stats (on the device), examples and items per task.
    pending: Vec<(StepOut, usize, Vec<usize>)>,
    /// `--graph`: the captured step.
    graph: Option<GraphStep>,
    /// The preprocessing record every model file carries.
    inputs: crate::preprocess::Inputs,
}

impl<'a> Run<'a> {
    /// Checks the flags, loads the data, builds the model and optimiser (or restores them from the
    /// newest usable checkpoint) and places them on `backend`.
    pub(super) fn open(
        cfg: &'a TrainConfig,
        out: &'a Path,
        device: &str,
        opts: &'a RunOptions,
        backend: &'a Backend,
    ) -> Result<Run<'a>> {
        cfg.validate()?;
        opts.validate()?;
        let graph = match (opts.graph, backend) {
            (false, _) => None,
            (true, Backend::Cuda(gpu)) => {
                super::graph::check(cfg, backend)?;
                Some(GraphStep::new(gpu.clone()))
            }
            (true, Backend::Cpu) => {
                super::graph::check(cfg, backend)?;
                None
            }
        };
        let (train_set, test_set) = data::load(&cfg.data)?;
        let (train_set, val_set) = data::split_validation(train_set, cfg.val_fraction)?;
        let setup = data::setup(&cfg.data);
        let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size) as u32;
        let (mut model, mut opt, pos, last_ckpt) = if opts.resume {
            let (r, warnings) = resume::latest(out, cfg, steps_per_epoch)?;
            warnings.iter().for_each(|w| eprintln!("warning: {w}"));
            resume::clean_temp(out);
            eprintln!(
                "resuming from {} (epoch {}, step {} of {}, global step {})",
                r.path.display(),
                r.pos.epoch,
                r.pos.step_in_epoch,
                steps_per_epoch,
                r.pos.global_step
            );
            (r.model, r.opt, r.pos, Some(r.path))
        } else {
            fs::create_dir_all(out).with_context(|| format!("cannot create output folder {}", out.display()))?;
            resume::clear(out)?;
            write_json(&out.join("config.json"), cfg)?;
            (MultiTaskModel::new(cfg.model_config(), cfg.seed), cfg.optimizer(), resume::Position::start(), None)
        };
        model.store.to_backend(backend)?;
        opt.to_backend(backend)?;
        // metrics.jsonl holds the finished epochs so far (a resumed run drops lines written after its
        // checkpoint).
        let metrics_path = out.join("metrics.jsonl");
        let lines: String = pos.history.iter().map(|m| Ok(serde_json::to_string(m)? + "\n")).collect::<Result<_>>()?;
        checkpoint::write_atomic(&metrics_path, lines.as_bytes())?;
        let metrics_file = fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot write {}", metrics_path.display()))?;

        let objective = objective(cfg, &setup, train_set.as_ref());
        eprintln!(
            "{device}; {:?} on {:?} ({} train / {}{} test); {} parameters",
            cfg.method,
            cfg.data.task,
            data::describe_count(train_set.as_ref()),
            val_set.as_ref().map(|v| format!("{} validation / ", data::describe_count(v.as_ref()))).unwrap_or_default(),
            data::describe_count(test_set.as_ref()),
            model.param_count()
        );
        let bar = indicatif::ProgressBar::new(cfg.epochs as u64 * steps_per_epoch as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_position(pos.global_step as u64);
        Ok(Run {
            cfg,
            out,
            opts,
            backend,
            train_set,
            val_set,
            test_set,
            setup,
            objective,
            steps_per_epoch,
            model,
            opt,
            pos,
            last_ckpt,
            metrics_file,
            bar,
            start: Instant::now(),
            inject_nan: nan_injection(),
            pending: vec![],
            graph,
            inputs: crate::preprocess::Inputs::for_run(cfg),
        })
    }

    /// One optimisation step on the examples `chunk`: the non-finite guard (stop, or undo and count
    /// with --skip-nonfinite), the epoch's running sums, the progress bar, and a step checkpoint when due.
    pub(super) fn step(&mut self, chunk: &[usize], epoch_start: Instant) -> Result<()> {
        let (cfg, pos) = (self.cfg, &mut self.pos);
        let epoch = pos.epoch;
        let started = Instant::now();
        let mut batch = self.train_set.batch(chunk);
        pos.acc.time.data += started.elapsed().as_secs_f64();
        let items: Vec<usize> = batch.labels.iter().map(Vec::len).collect();
        let backup = self
            .opts
            .skip_nonfinite
            .then(|| (self.model.store.iter().map(|p| p.value.clone()).collect::<Vec<_>>(), self.opt.clone()));
        match self.inject_nan {
            Some((n, Injection::Input)) if n == pos.global_step + 1 => {
                batch.images_mut().into_iter().for_each(|x| x.data_mut().fill(f32::NAN))
            }
            Some((n, Injection::Bias { task, value })) if n == pos.global_step + 1 => {
                let bias = *self.model.head_params(TaskId(task)).last().expect("a head has parameters");
                let bad = crate::Tensor::full(self.model.store.value(bias).shape(), value);
                self.model.store.set_value(bias, &bad)?;
            }
            _ => {}
        }
        self.opt.set_lr(cfg.lr_at(pos.global_step, self.steps_per_epoch, cfg.epochs));
        let stepping = Instant::now();
        let s = match &mut self.graph {
            Some(g) => g.step(cfg, &mut self.model, &mut self.opt, &batch, &self.objective, pos.global_step)?,
            None => train_step(cfg, &mut self.model, &mut self.opt, &batch, &self.objective, pos.global_step)?,
        };
        let bad = nonfinite(&s, &self.model)?;
        pos.acc.time.steps += stepping.elapsed().as_secs_f64();
        if let Some(bad) = bad {
            let at = format!(
                "{bad} at epoch {epoch}, step {} of {} (global step {})",
                pos.step_in_epoch + 1,
                self.steps_per_epoch,
                pos.global_step + 1
            );
            let Some((values, old_opt)) = backup else {
                self.bar.abandon();
                let kept = match &self.last_ckpt {
                    Some(p) => format!("the last good checkpoint {} is kept (resume with --resume)", p.display()),
                    None => "no checkpoint had been written yet".to_string(),
                };
                bail!("{at}: stopping; {kept}; --skip-nonfinite skips such steps instead");
            };
            for (id, v) in self.model.all_params().into_iter().zip(values) {
                self.model.store.get_mut(id).value = v;
            }
            self.opt = old_opt;
            pos.skipped += 1;
            let skipped = pos.skipped;
            self.bar
                .suspend(|| eprintln!("warning: {at}: step skipped, parameters unchanged ({skipped} skipped so far)"));
        } else {
            self.pending.push((s, chunk.len(), items));
        }
        pos.step_in_epoch += 1;
        pos.global_step += 1;
        self.bar.inc(1);
        if self.pending.len() >= LOG_EVERY {
            self.read_back()?;
        }
        let due = self.opts.checkpoint_every.is_some_and(|n| self.pos.global_step.is_multiple_of(n));
        if due && self.pos.step_in_epoch < self.steps_per_epoch {
            self.read_back()?;
            let writing = Instant::now();
            let pos = &self.pos;
            let mut at = pos.clone();
            at.acc.seconds += epoch_start.elapsed().as_secs_f64();
            at.seconds += self.start.elapsed().as_secs_f64();
            self.last_ckpt =
                Some(resume::save(self.out, &self.model, &self.opt, cfg, &at, self.opts.keep_checkpoints)?);
            self.pos.acc.time.checkpoints += writing.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Reads back the pending steps' losses and correct counts into the epoch's running sums (in step
    /// order, in f64), and shows them on the progress bar.
    fn read_back(&mut self) -> Result<()> {
        let reading = Instant::now();
        let a = &mut self.pos.acc;
        a.fit(self.setup.n_tasks());
        for (s, examples, items) in self.pending.drain(..) {
            let s = s.host()?;
            for (t, n) in items.into_iter().enumerate() {
                a.loss_sum[t] += s.loss[t] as f64 * examples as f64;
                a.correct[t] += s.correct[t];
                a.items_seen[t] += n;
            }
            a.seen += examples;
        }
        a.time.stats += reading.elapsed().as_secs_f64();
        let ratio = |x: f64, n: usize| x / n.max(1) as f64;
        let join = |v: Vec<f64>| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join("/");
        let loss = join(a.loss_sum.iter().map(|&l| ratio(l, a.seen)).collect());
        let acc = join(a.correct.iter().zip(&a.items_seen).map(|(&c, &n)| ratio(c as f64, n)).collect());
        self.bar.set_message(format!("epoch {} loss {loss} acc {acc}", self.pos.epoch));
        Ok(())
    }

    /// Evaluates on the validation split (if any) and the test set (binary tasks also at the
    /// threshold the validation split chose), appends the epoch to metrics.jsonl, rewrites
    /// model.safetensors (and model-best.safetensors when the validation score improved) and writes
    /// the epoch's checkpoint.
    pub(super) fn end_epoch(&mut self, epoch_start: Instant) -> Result<()> {
        self.read_back()?;
        let evaluating = Instant::now();
        let n = self.setup.n_tasks();
        let clean = vec![Read::Train; n];
        let val = match &self.val_set {
            Some(v) => Some(evaluate_pass(&self.model, v.as_ref(), &self.setup, EVAL_BATCH, &clean)?),
            None => None,
        };
        let thresholds: Vec<Option<f64>> = (0..n).map(|t| val.as_ref().and_then(|v| v[t].threshold())).collect();
        let test = evaluate_pass(&self.model, self.test_set.as_ref(), &self.setup, EVAL_BATCH, &clean)?;
        let test: Vec<_> = test.iter().zip(&thresholds).map(|(m, &thr)| m.finish_at(thr)).collect();
        let val = val.map(|v| v.iter().map(|a| a.finish()).collect::<Vec<_>>());
        self.pos.acc.time.eval += evaluating.elapsed().as_secs_f64();
        let writing = Instant::now();
        checkpoint::save_with_inputs(&self.model, &self.inputs, &self.out.join("model.safetensors"))?;
        if let Some(v) = &val {
            let score = selection_score(v, &self.setup);
            let before = best_epoch(&self.pos.history, &self.setup).and_then(|m| m.val.as_ref());
            if !score.is_nan() && before.is_none_or(|b| score > selection_score(b, &self.setup)) {
                checkpoint::save_with_inputs(&self.model, &self.inputs, &self.out.join("model-best.safetensors"))?;
            }
        }
        self.pos.acc.time.checkpoints += writing.elapsed().as_secs_f64();
        let pos = &mut self.pos;
        let epoch = pos.epoch;
        pos.acc.fit(n);
        let a = &pos.acc;
        let m = EpochMetrics {
            epoch,
            train_loss: a.loss_sum.iter().map(|l| l / a.seen as f64).collect(),
            train_acc: (0..n).map(|t| a.correct[t] as f64 / a.items_seen[t] as f64).collect(),
            test,
            val,
            seconds: a.seconds + epoch_start.elapsed().as_secs_f64(),
            time: a.time,
        };
        writeln!(self.metrics_file, "{}", serde_json::to_string(&m)?)?;
        self.metrics_file.sync_data()?;
        let names = &self.setup.names;
        let per_task: Vec<String> = names.iter().zip(&m.test).map(|(n, t)| format!("{n}: {}", describe(t))).collect();
        self.bar.suspend(|| eprintln!("epoch {epoch} ({:.1}s): {}", m.seconds, per_task.join("; ")));
        pos.history.push(m);
        pos.epoch += 1;
        pos.step_in_epoch = 0;
        pos.acc = EpochAcc::default();
        let mut at = pos.clone();
        at.seconds += self.start.elapsed().as_secs_f64();
        self.last_ckpt =
            Some(resume::save(self.out, &self.model, &self.opt, self.cfg, &at, self.opts.keep_checkpoints)?);
        Ok(())
    }

    /// Writes the final model file, summary.json, curves.svg and (segmentation) predictions.png.
    pub(super) fn finish(self, device: &str) -> Result<Summary> {
        let (cfg, out, pos) = (self.cfg, self.out, &self.pos);
        self.bar.finish_and_clear();
        checkpoint::save_with_inputs(&self.model, &self.inputs, &out.join("model.safetensors"))?;
        let best = best_epoch(&pos.history, &self.setup);
        let summary = Summary {
            task: cfg.data.task,
            method: cfg.method,
            mode: (cfg.method == Method::Mtcool).then_some(cfg.mode),
            metrics: pos.history.last().map(|m| m.test.clone()).unwrap_or_default(),
            param_count: self.model.param_count(),
            epochs: cfg.epochs,
            seed: cfg.seed,
            seconds: pos.seconds + self.start.elapsed().as_secs_f64(),
            device: device.to_string(),
            test_examples: self.test_set.len(),
            skipped_steps: pos.skipped,
            gpu_memory: match self.backend {
                Backend::Cuda(gpu) => Some(gpu.memory_stats()),
                Backend::Cpu => None,
            },
            graph_replays: self.graph.as_ref().map(|g| g.replays),
            best_epoch: best.map(|m| m.epoch),
            best_metrics: best.map(|m| m.test.clone()),
            best_val_metrics: best.and_then(|m| m.val.clone()),
        };
        write_json(&out.join("summary.json"), &summary)?;
        checkpoint::write_atomic(&out.join("curves.svg"), plot::curves_svg(&pos.history).as_bytes())?;
        if cfg.data.task != TaskKind::Multimnist {
            pictures::write_predictions(
                &self.model,
                self.test_set.as_ref(),
                cfg.data.task,
                &out.join("predictions.png"),
            )?;
        }
        Ok(summary)
    }
}
