//! The command line: argument parsing (clap) and one function per subcommand. Errors reach the user as
//! exactly one line on stderr and a non-zero exit (see `main.rs`).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use std::path::PathBuf;

use crate::device::{self, Device, DeviceChoice};
use crate::model::{Fusion, Method};
use crate::mtl::combiners::{MgdaNorm, CAGRAD_DEFAULT_C, GRADDROP_DEFAULT_LEAK};
use crate::mtl::mtcool::Mode;
use crate::train::data::{DataConfig, TaskKind};
use crate::train::{self, LrSchedule, OptimizerKind, TrainConfig};
use crate::{gradcheck, info};

#[derive(Parser, Debug)]
#[command(name = "mtcool", version, about = "Cooperative multi-task learning (MT-CooL) with hand-written CUDA kernels")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the build: version, nvcc, compiled kernels (registers, spills), the GPU found.
    Info {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Self-checks of the engine.
    Check {
        #[command(subcommand)]
        what: CheckCommand,
    },
    /// Train a two-task model and write a run folder (config, metrics, checkpoint, summary, curves).
    Train(TrainArgs),
    /// Train methods × seeds on one task and write the comparison table (table.md, results.json).
    Compare(CompareArgs),
    /// Time training steps on one fixed batch (median µs/step, images/s); see bench/README.md.
    Bench(BenchArgs),
    /// Per-op table of the training step (calls, µs, share, GFLOP/s or GB/s, % of measured peaks).
    Profile(BenchArgs),
    /// Reload a run's checkpoint and recompute its test metrics.
    Eval {
        /// The run folder written by `mtcool train`.
        #[arg(long)]
        run: PathBuf,
        /// Folder with the MNIST IDX files (default: the run's own setting).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to run the model (the metrics must equal summary.json's exactly on the device kind
        /// the run trained on, within 1e-4 on the other).
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
        /// Evaluate model-best.safetensors (the best validation epoch, `--val-fraction` runs) against
        /// summary.json's best-epoch metrics.
        #[arg(long)]
        best: bool,
    },
    /// Run a trained model on image files or folders (PNG/JPEG/BMP/TIFF, IDX): per-task classes and
    /// probabilities (predictions.csv / .json) and per-pixel masks (masks/), prepared as in training.
    Predict {
        /// A run folder written by `mtcool train` (its model.safetensors; see --best).
        #[arg(long, conflicts_with = "model")]
        run: Option<PathBuf>,
        /// A model file instead of a run folder.
        #[arg(long)]
        model: Option<PathBuf>,
        /// With --run: its model-best.safetensors (the best validation epoch).
        #[arg(long)]
        best: bool,
        /// Images, IDX image files, or folders of them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output folder (default: predictions/ in the run folder, or beside the model file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Also write the raw logits (CSV/JSON columns; segmentation: logits/*.f32).
        #[arg(long)]
        logits: bool,
        /// Also write each segmentation as a coloured overlay on its input (overlays/).
        #[arg(long)]
        overlay: bool,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Probe how flat trained runs' minima are: each task's test loss and metric with the other
    /// task's (and, as a control, its own) extractor perturbed by U(−r, r), over radii and noise draws.
    Flatness {
        /// A run folder written by `mtcool train` (mtcool, independent or ctan); repeat for several.
        #[arg(long = "run", value_name = "DIR", required = true)]
        runs: Vec<PathBuf>,
        /// Comma-separated noise half-widths r ≥ 0 (r = 0: one clean evaluation).
        // Hyphen values allowed, so that a negative radius gets its own message, not clap's.
        #[arg(long, allow_hyphen_values = true, default_value = "0,1e-3,3e-3,1e-2,3e-2,1e-1")]
        radii: String,
        /// Noise draws per radius > 0 (mean and sample std are reported).
        #[arg(long, default_value_t = 5)]
        draws: u32,
        /// Seed of the probe's noise (each run, task, probe, radius and draw gets its own key from it).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Folder with the MNIST IDX files (default: each run's own setting).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Use only the first N test examples (synthetic sets: generate N) [default: each run's own].
        #[arg(long, value_name = "N")]
        limit_test: Option<usize>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Write FILE_STEM.json, .md and .svg [default: <first run>/flatness].
        #[arg(long, value_name = "FILE_STEM")]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[arg(long, value_enum, default_value_t = TaskKind::Multimnist)]
    pub task: TaskKind,
    /// Comma-separated rows: a --method value (mtcool = full), mtcool-vanilla, mtcool-noreg,
    /// mtcool-full, or mtcool-attention (full, attention fusion), each optionally followed by
    /// `+match` (--match-params) and `+flag=value` train flags, e.g. `mtcool-full+b=3e-3+match`.
    #[arg(long, value_delimiter = ',', default_value = COMPARE_METHODS)]
    pub methods: Vec<String>,
    /// Seeds 0, 1, …, N − 1 per method.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Folder for the runs and the table (default: runs/compare-<task>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// `mtcool train` flags for every run, after `--` (e.g. `-- --epochs 4 --limit-train 10000`).
    #[arg(last = true)]
    pub train_flags: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = TaskKind::Multimnist)]
    pub task: TaskKind,
    #[arg(long, value_enum, default_value_t = Method::Mtcool)]
    pub method: Method,
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,
    /// Mini-batch size [default: as `mtcool train`].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Write the initial weights, the batch and the report here (for bench/torch_ref.py).
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
    /// Step through a captured CUDA graph (as `train --graph`; GPU only).
    #[arg(long)]
    pub graph: bool,
    /// Print JSON instead of a line.
    #[arg(long)]
    pub json: bool,
    /// `mtcool profile` only: also train one epoch (from scratch, in a temporary folder) and show
    /// where its wall time went: steps, data, statistics, evaluation, checkpoints.
    #[arg(long)]
    pub epoch: bool,
    /// Further `mtcool train` flags, after `--` (e.g. `-- --b 1e-3 --width 0.7`).
    #[arg(last = true)]
    pub train_flags: Vec<String>,
}

/// The rows of `mtcool compare` by default: every baseline and MT-CooL.
pub const COMPARE_METHODS: &str = "independent,joint,pcgrad,cagrad,mgda,graddrop,mtan,ctan,mtcool-full";

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The task pair; the synthetic fundus tasks need no download.
    #[arg(long, value_enum, default_value_t = TaskKind::Fundus)]
    pub task: TaskKind,
    #[arg(long, value_enum, default_value_t = Method::Mtcool)]
    pub method: Method,
    /// MT-CooL ablation: full (noise + b-box), noreg (noise only), vanilla (neither).
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,
    /// Epochs [default: 1 for multimnist, 8 for the fundus tasks].
    #[arg(long)]
    pub epochs: Option<u32>,
    /// Mini-batch size [default: 256 for multimnist, 16 for the fundus tasks].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate [default: 1e-3 for multimnist, 2e-3 for the fundus tasks].
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = LrSchedule::Constant)]
    pub lr_schedule: LrSchedule,
    /// `--lr-schedule step`: multiply the learning rate by this every `--lr-decay-every` epochs.
    #[arg(long, default_value_t = 0.85)]
    pub lr_decay: f32,
    #[arg(long, default_value_t = 10, value_name = "EPOCHS")]
    pub lr_decay_every: u32,
    /// Hold out this fraction of the training examples as a validation split (the same split for
    /// every method and seed): each epoch is scored on it, the best epoch's weights are kept as
    /// model-best.safetensors and its test metrics reported, and binary tasks get a decision
    /// threshold chosen on it.
    #[arg(long, default_value_t = 0.0)]
    pub val_fraction: f32,
    /// Choose --width so that the model has Joint's parameter count (within 2 %; reported).
    #[arg(long, conflicts_with = "width")]
    pub match_params: bool,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// MT-CooL radius b: noise ε ~ U(−b, b) on the other extractor, and the box |θ − θ_prev| ≤ b
    /// [default: the learning rate, so the box is about one Adam step's trust region and the noise
    /// about the size of the other task's next step].
    #[arg(long)]
    pub b: Option<f32>,
    /// K: noise samples averaged per MT-CooL sub-step.
    #[arg(long, default_value_t = 1)]
    pub noise_samples: u32,
    /// Optimiser steps per task per MT-CooL outer iteration.
    #[arg(long, default_value_t = 1)]
    pub inner_steps: u32,
    /// MT-CooL feature fusion.
    #[arg(long, value_enum, default_value_t = Fusion::Concat)]
    pub fusion: Fusion,
    /// Multiplier on hidden widths (to match parameter counts across methods).
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder (default: runs/<method>[-<mode>]-s<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Use only the first N training examples (synthetic sets: generate N; default 1000).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Use only the first N test examples (synthetic sets: generate N; default 200).
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Side of the synthetic fundus images (a multiple of 4).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Partial labels, built in: deal every split's images to the tasks in turn (image i keeps only
    /// task i mod T's label); each task trains on and is scored on its own share.
    #[arg(long)]
    pub disjoint_labels: bool,
    /// multimnist: folder with the MNIST IDX files (raw or .gz; default $MTCOOL_MNIST_DIR or
    /// ../shared/data/mnist). fundus / fundus-av: a REFUGE / HRF-AV folder to use instead of the
    /// synthetic images (with train/ and test/ inside, or split: every 5th image is test).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Go on with the run in DIR from its newest usable checkpoint, with DIR's config.json (flags that
    /// would change the run are refused).
    #[arg(long, value_name = "DIR", conflicts_with_all = RESUME_CONFLICTS)]
    pub resume: Option<PathBuf>,
    /// Also write a checkpoint every N steps [default: at each epoch end only].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u32>,
    /// Checkpoints kept in the run's ckpt/ folder (the newest K).
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Skip a step whose loss or gradient is not finite (no update; counted in summary.json) instead of
    /// stopping the run.
    #[arg(long)]
    pub skip_nonfinite: bool,
    /// Capture the training step into a CUDA graph after two warm-up steps and replay it (GPU only;
    /// the weights are the same as without it). Not for the gradient-combination methods.
    #[arg(long)]
    pub graph: bool,
    /// Recorded in config.json. CPU runs are always bit-reproducible; the GPU kernels reduce without
    /// float atomics, so they are deterministic by construction too.
    #[arg(long)]
    pub deterministic: bool,
    /// CAGrad's c in [0, 1): the radius of the ball around the average gradient, relative to its norm.
    #[arg(long, default_value_t = CAGRAD_DEFAULT_C)]
    pub cagrad_c: f32,
    /// MGDA-UB's gradient normalisation before the min-norm solve: none | l2 | loss | loss+ (loss·l2).
    #[arg(long, value_enum, default_value_t = MgdaNorm::LossPlus)]
    pub mgda_norm: MgdaNorm,
    /// GradDrop's leak in [0, 1]: the fraction of each dropped gradient that is kept (0: pure GradDrop).
    #[arg(long, default_value_t = GRADDROP_DEFAULT_LEAK)]
    pub graddrop_leak: f32,
}

/// The flags that define a run: with --resume the run folder's config.json does.
const RESUME_CONFLICTS: [&str; 30] = [
    "lr_schedule",
    "lr_decay",
    "lr_decay_every",
    "val_fraction",
    "match_params",
    "task",
    "method",
    "mode",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "b",
    "noise_samples",
    "inner_steps",
    "fusion",
    "width",
    "seed",
    "out",
    "limit_train",
    "limit_test",
    "size",
    "disjoint_labels",
    "data",
    "deterministic",
    "cagrad_c",
    "mgda_norm",
    "graddrop_leak",
];

/// Default epochs of the fundus tasks: the default job fits in about 3 minutes on a 2-core CPU.
pub const FUNDUS_EPOCHS: u32 = 8;

impl TrainArgs {
    pub fn config(&self) -> TrainConfig {
        let mnist = self.task == TaskKind::Multimnist;
        let lr = self.lr.unwrap_or(if mnist { 1e-3 } else { 2e-3 });
        TrainConfig {
            data: DataConfig {
                task: self.task,
                data_dir: self.data.clone(),
                limit_train: self.limit_train,
                limit_test: self.limit_test,
                size: self.size,
                disjoint_labels: self.disjoint_labels,
                folder: None,
            },
            method: self.method,
            mode: self.mode,
            epochs: self.epochs.unwrap_or(if mnist { 1 } else { FUNDUS_EPOCHS }),
            batch_size: self.batch_size.unwrap_or(if mnist { 256 } else { 16 }),
            lr,
            lr_schedule: self.lr_schedule,
            optimizer: self.optimizer,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            b: self.b.unwrap_or(lr),
            noise_samples: self.noise_samples,
            inner_steps: self.inner_steps,
            fusion: self.fusion,
            width: self.width,
            seed: self.seed,
            deterministic: self.deterministic,
            cagrad_c: self.cagrad_c,
            mgda_norm: self.mgda_norm,
            graddrop_leak: self.graddrop_leak,
            lr_decay: self.lr_decay,
            lr_decay_every: self.lr_decay_every,
            val_fraction: self.val_fraction,
            match_params: self.match_params,
        }
    }

    pub fn run_options(&self) -> train::RunOptions {
        train::RunOptions {
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            skip_nonfinite: self.skip_nonfinite,
            resume: self.resume.is_some(),
            graph: self.graph,
        }
    }

    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let name = match self.method {
                Method::Mtcool => format!("mtcool-{:?}", self.mode).to_lowercase(),
                m => format!("{m:?}").to_lowercase(),
            };
            let task = format!("{:?}", self.task).to_lowercase();
            PathBuf::from("runs").join(format!("{task}-{name}-s{}", self.seed))
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Finite-difference gradient check of every op on random shapes; exits 1 if any op fails.
    Grad {
        /// Seed for the random shapes and inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every CUDA kernel against its CPU reference (needs a GPU); exits 1 if any case fails.
    Parity {
        /// Must resolve to a GPU: `cuda`, or `auto` on a machine with one.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cuda)]
        device: DeviceChoice,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { json } => {
            let report = info::gather();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", info::render_text(&report));
            }
            Ok(())
        }
        Command::Check { what: CheckCommand::Grad { seed, json } } => check_grad(seed, json),
        Command::Check { what: CheckCommand::Parity { device, seed, json } } => check_parity(device, seed, json),
        Command::Train(args) => train_cmd(&args),
        Command::Compare(args) => compare_cmd(&args),
        Command::Bench(args) => bench_cmd(&args),
        Command::Profile(args) => profile_cmd(&args),
        Command::Predict { run, model, best, inputs, out, logits, overlay, batch_size, device } => {
            let file = match (&run, &model) {
                (Some(r), _) => r.join(if best { "model-best.safetensors" } else { "model.safetensors" }),
                (None, Some(m)) => m.clone(),
                (None, None) => anyhow::bail!("predict needs --run DIR or --model FILE"),
            };
            let bytes = std::fs::read(&file).with_context(|| format!("cannot read model {}", file.display()))?;
            let prep = crate::checkpoint::inputs(&bytes)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no `{}` record (written before predict existed): retrain, or re-save it with this mtcool",
                    file.display(),
                    crate::preprocess::INPUTS_KEY
                )
            })?;
            let mut predictor = crate::predict::Predictor::from_model(
                crate::checkpoint::from_bytes(&bytes).with_context(|| format!("checkpoint {}", file.display()))?,
            );
            let (device, line) = device::select(device)?;
            predictor.to_backend(&crate::backend::Backend::open(device)?)?;
            let out = out.unwrap_or_else(|| match &run {
                Some(r) => r.join("predictions"),
                None => file.parent().unwrap_or(std::path::Path::new(".")).join("predictions"),
            });
            eprintln!("{line}; {} → {}", file.display(), out.display());
            let opts = crate::predict_files::Options { out: out.clone(), logits, overlay, batch_size };
            let outcome = crate::predict_files::predict_files(&predictor, &prep, &inputs, &opts)?;
            println!("{} input(s) predicted → {}", outcome.done, out.join("predictions.csv").display());
            crate::predict_files::check(&outcome)
        }
        Command::Eval { run, data, device, best } => {
            let (device, line) = device::select(device)?;
            let backend = crate::backend::Backend::open(device)?;
            let (summary, metrics) = train::report::eval_run_model(&run, data, &backend, best)?;
            let recorded =
                if best { summary.best_metrics.clone().unwrap_or_default() } else { summary.metrics.clone() };
            let trained_on_gpu = summary.device.contains("cuda:");
            let tol = if trained_on_gpu == backend.is_cuda() { 0.0 } else { 1e-4 };
            println!("task  metric               summary.json  re-evaluated");
            for (t, (want, got)) in recorded.iter().zip(&metrics).enumerate() {
                for (name, v) in got {
                    println!(
                        "{}     {name:<20} {:>12.4}  {v:>12.4}",
                        t + 1,
                        want.get(name).copied().unwrap_or(f64::NAN)
                    );
                }
            }
            // Every metric summary.json holds must come out the same (runs written before a metric
            // existed simply lack it: it is shown, not compared).
            let same = recorded.iter().zip(&metrics).all(|(a, b)| {
                a.iter().all(|(k, v)| b.get(k).is_some_and(|w| (w - v).abs() <= tol || (v.is_nan() && w.is_nan())))
            });
            println!("re-evaluated on {line}");
            if !same {
                bail!("re-evaluation differs from summary.json");
            }
            Ok(())
        }
        Command::Flatness { runs, radii, draws, seed, data, limit_test, device, out } => {
            flatness_cmd(&runs, &radii, draws, seed, data, limit_test, device, out)
        }
    }
}

fn train_cmd(args: &TrainArgs) -> Result<()> {
    let opts = args.run_options();
    opts.validate()?;
    let (cfg, out) = match &args.resume {
        Some(dir) => (train::resume::read_config(dir)?, dir.clone()),
        None => (args.config(), args.out_dir()),
    };
    cfg.validate()?;
    let (device, device_line) = device::select(args.device)?;
    let backend = crate::backend::Backend::open(device)?;
    let s = train::train_on(&cfg, &out, &device_line, &opts, &backend)?;
    let setup = train::data::setup(&cfg.data);
    println!(
        "{:?}{} on {:?}: {} parameters, {:.1}s, run folder {}",
        s.method,
        s.mode.map(|m| format!(" ({m:?})")).unwrap_or_default(),
        cfg.data.task,
        s.param_count,
        s.seconds,
        out.display()
    );
    for t in 0..setup.n_tasks() {
        println!("  task {} ({}): {}", t + 1, setup.names[t], train::describe(&s.metrics[t]));
    }
    if opts.skip_nonfinite {
        println!("  {} step(s) skipped for a non-finite loss or gradient", s.skipped_steps);
    }
    Ok(())
}

/// Parses `mtcool train` flags exactly as `train` would, into its config.
fn parse_train_flags(what: &str, argv: &[&str]) -> Result<TrainConfig> {
    let mut full = vec!["mtcool", "train"];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(&full).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or("invalid flags").trim_start_matches("error: ").to_string();
        anyhow::anyhow!("{what}: {first}")
    })?;
    let Command::Train(t) = cli.command else { unreachable!("parsed a train command") };
    anyhow::ensure!(t.resume.is_none() && t.out.is_none(), "{what}: --resume and --out do not apply");
    let cfg = t.config();
    cfg.validate().map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    Ok(cfg)
}

/// The command-line spelling of a value (e.g. `Method::Mtcool` → "mtcool").
fn value_name(v: &impl ValueEnum) -> String {
    v.to_possible_value().map(|p| p.get_name().to_string()).unwrap_or_default()
}

/// The config a bench or profile run steps with, and the line describing the device.
fn bench_config(args: &BenchArgs) -> Result<(TrainConfig, String, crate::backend::Backend)> {
    let (task, method, mode) = (value_name(&args.task), value_name(&args.method), value_name(&args.mode));
    let batch = args.batch_size.map(|b| b.to_string());
    let mut argv = vec!["--task", &task, "--method", &method, "--mode", &mode];
    if let Some(b) = &batch {
        argv.extend(["--batch-size", b.as_str()]);
    }
    argv.extend(args.train_flags.iter().map(String::as_str));
    let cfg = parse_train_flags("bench", &argv)?.resolved()?;
    let (device, msg) = device::select(args.device)?;
    Ok((cfg, msg, crate::backend::Backend::open(device)?))
}

fn profile_cmd(args: &BenchArgs) -> Result<()> {
    if args.save.is_some() {
        bail!("--save applies to `mtcool bench` only");
    }
    let (cfg, msg, backend) = bench_config(args)?;
    if args.graph {
        bail!("--graph applies to `mtcool bench` (a profile times each op, which a graph launch hides)");
    }
    let r = train::bench::profile(&cfg, args.warmup, args.steps, &msg, &backend)?;
    let epoch = if args.epoch { Some(train::profile_epoch(&cfg, &msg, &backend)?) } else { None };
    if args.json {
        // The report as it is, with the epoch (if asked for) as one more field.
        let mut v = serde_json::to_value(&r)?;
        if let Some((m, steps)) = &epoch {
            v["epoch"] = serde_json::json!({ "metrics": m, "steps": steps });
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let on = if backend.is_cuda() { format!("on {}", backend.name()) } else { format!("{} threads", r.bench.threads) };
    let fma = match (r.peaks.fma_gflop_s, r.peaks.isa) {
        (Some(f), Some(isa)) => {
            format!(", FMA {f:.1} GFLOP/s ({isa}; sgemm at {:.0} % of it)", 100.0 * r.peaks.sgemm_gflop_s / f)
        }
        _ => String::new(),
    };
    println!(
        "peaks (measured now): copy {:.1} GB/s (read + write), sgemm {}³ {:.1} GFLOP/s{fma}; {on}",
        r.peaks.copy_gb_s, r.peaks.sgemm_n, r.peaks.sgemm_gflop_s
    );
    println!(
        "{} {} batch {}: {:.0} µs/step unprofiled (median of {}), {:.0} µs/step profiled, {:.0} µs not charged to any op",
        r.bench.task, r.bench.method, r.bench.batch_size, r.bench.median_us, r.bench.steps, r.step_us, r.unattributed_us
    );
    if let Some(one) = r.step_us_one_thread {
        println!("on 1 thread: {one:.0} µs/step profiled ({:.2}x from {} threads)", one / r.step_us, r.bench.threads);
    }
    let threads_cols = r.step_us_one_thread.is_some();
    println!(
        "{:<10} {:<24} {:>7} {:>10} {:>6} {:>9} {:>8} {:>7}{}",
        "phase",
        "op",
        "calls",
        "µs/step",
        "share",
        "GFLOP/s",
        "GB/s",
        "% peak",
        if threads_cols { format!(" {:>10} {:>8}", "1-thr µs", "speed-up") } else { String::new() }
    );
    let opt = |v: Option<f64>, w: usize| v.map_or(format!("{:>w$}", "-"), |v| format!("{v:>w$.1}"));
    for row in &r.rows {
        let threads = if threads_cols {
            let one = row.us_one_thread.map_or(format!("{:>10}", "-"), |v| format!("{v:>10.0}"));
            format!(" {one} {}", row.thread_speedup.map_or(format!("{:>8}", "-"), |v| format!("{v:>7.2}x")))
        } else {
            String::new()
        };
        println!(
            "{:<10} {:<24} {:>7.1} {:>10.0} {:>5.1}% {} {} {}{threads}",
            row.phase,
            row.op,
            row.calls,
            row.us,
            row.share,
            opt(row.gflop_s, 9),
            opt(row.gb_s, 8),
            opt(row.peak_pct, 7)
        );
    }
    if let Some((m, steps)) = &epoch {
        print_epoch_split(m, *steps, r.bench.median_us);
    }
    if !r.kernels.is_empty() {
        println!("\nper kernel (CUDA events around each launch):");
        println!(
            "{:<34} {:>7} {:>10} {:>6} {:>9} {:>8} {:>7}",
            "kernel", "calls", "µs/step", "share", "GFLOP/s", "GB/s", "% peak"
        );
        for k in &r.kernels {
            println!(
                "{:<34} {:>7.1} {:>10.1} {:>5.1}% {} {} {}",
                k.kernel,
                k.calls,
                k.us,
                k.share,
                opt(k.gflop_s, 9),
                opt(k.gb_s, 8),
                opt(k.peak_pct, 7)
            );
        }
    }
    Ok(())
}

/// The time split of `profile --epoch`'s epoch, and how it compares with its steps alone.
fn print_epoch_split(m: &train::report::EpochMetrics, steps: usize, median_step_us: f64) {
    let t = &m.time;
    let rest = m.seconds - (t.data + t.steps + t.stats + t.eval + t.checkpoints);
    let pct = |v: f64| 100.0 * v / m.seconds.max(1e-12);
    println!("\none epoch, trained now ({steps} steps): {:.2} s", m.seconds);
    for (name, v) in [
        ("steps", t.steps),
        ("data", t.data),
        ("stats", t.stats),
        ("eval", t.eval),
        ("checkpoints", t.checkpoints),
        ("rest", rest.max(0.0)),
    ] {
        println!("  {name:<12} {v:>8.3} s {:>6.1}%", pct(v));
    }
    let steps_alone = steps as f64 * median_step_us * 1e-6;
    println!(
        "  epoch / (steps × median step + eval) = {:.2}; steps {:.1} ms each in the epoch vs {:.1} ms on one fixed batch",
        m.seconds / (steps_alone + t.eval).max(1e-12),
        1e3 * t.steps / steps.max(1) as f64,
        median_step_us * 1e-3
    );
}

fn bench_cmd(args: &BenchArgs) -> Result<()> {
    let (cfg, msg, backend) = bench_config(args)?;
    let r = train::bench::run(&cfg, args.warmup, args.steps, &msg, args.save.as_deref(), &backend, args.graph)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "{} {}{} batch {} on {}: median {:.0} µs/step (p10 {:.0}, p90 {:.0}, {}), {:.0} images/s",
            r.task,
            r.method,
            r.mode.as_ref().map(|m| format!("-{m}")).unwrap_or_default(),
            r.batch_size,
            match &backend {
                crate::backend::Backend::Cpu => format!("CPU ({} threads)", r.threads),
                b => b.name(),
            },
            r.median_us,
            r.p10_us,
            r.p90_us,
            r.timer,
            r.images_per_s
        );
        if let Some(n) = r.timed_driver_allocs {
            println!("driver allocations during the timed steps: {n}");
        }
    }
    Ok(())
}

/// The `train` flags of one comparison row: a base (a --method value, mtcool-vanilla / -noreg /
/// -full, mtcool-attention) and `+`-separated extras, each `match` (--match-params) or `flag=value`
/// (--flag value), e.g. `mtcool-full+b=3e-3+noise-samples=2+match`.
fn row_flags(row: &str) -> Result<Vec<String>> {
    let mut parts = row.split('+');
    let base = parts.next().unwrap_or_default();
    let mut flags: Vec<String> = match base {
        "mtcool-vanilla" => vec!["--method", "mtcool", "--mode", "vanilla"],
        "mtcool-noreg" => vec!["--method", "mtcool", "--mode", "noreg"],
        "mtcool-full" => vec!["--method", "mtcool", "--mode", "full"],
        "mtcool-attention" => vec!["--method", "mtcool", "--mode", "full", "--fusion", "attention"],
        "" => bail!("--methods has an empty entry"),
        m => vec!["--method", m],
    }
    .into_iter()
    .map(String::from)
    .collect();
    for extra in parts {
        match extra.split_once('=') {
            _ if extra == "match" => flags.push("--match-params".into()),
            Some((flag, value)) if !flag.is_empty() && !value.is_empty() => {
                flags.extend([format!("--{flag}"), value.to_string()])
            }
            _ => bail!("--methods row {row}: `{extra}` is neither `match` nor flag=value"),
        }
    }
    Ok(flags)
}

/// Each row's per-seed configs, parsed exactly as `mtcool train` would parse the same flags.
fn compare_rows(args: &CompareArgs) -> Result<Vec<train::compare::Row>> {
    anyhow::ensure!((1..=100).contains(&args.seeds), "--seeds must be in 1..=100, got {}", args.seeds);
    let task = value_name(&args.task);
    let mut rows = vec![];
    for name in &args.methods {
        let extra = row_flags(name)?;
        let mut runs = vec![];
        for seed in 0..args.seeds {
            let seed = seed.to_string();
            let mut argv = vec!["--task", &task, "--seed", &seed];
            argv.extend(extra.iter().map(String::as_str));
            argv.extend(args.train_flags.iter().map(String::as_str));
            let cfg = parse_train_flags(&format!("compare row {name}"), &argv)?;
            runs.push(cfg);
        }
        rows.push(train::compare::Row { name: name.clone(), runs });
    }
    Ok(rows)
}

fn compare_cmd(args: &CompareArgs) -> Result<()> {
    let rows = compare_rows(args)?;
    let (device, msg) = device::select(args.device)?;
    let backend = crate::backend::Backend::open(device)?;
    let task = format!("{:?}", args.task).to_lowercase();
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("compare-{task}")));
    let table = train::compare::run(&rows, &out, &msg, &backend)?;
    print!("{table}");
    println!("table: {}", out.join("table.md").display());
    Ok(())
}

fn check_parity(choice: DeviceChoice, seed: u64, json: bool) -> Result<()> {
    let ordinal = match device::select(choice)? {
        (Device::Cuda(ordinal), _) => ordinal,
        (Device::Cpu, msg) => bail!("parity needs a GPU ({msg})"),
    };
    let gpu = crate::backend::cuda::Gpu::new(ordinal)?;
    let info = gpu.info();
    let outcomes = crate::parity::run_all(&gpu, seed)?;
    let kernels = crate::parity::per_kernel(&outcomes);
    if json {
        let doc = serde_json::json!({ "device": info, "cases": outcomes, "kernels": kernels });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("device: cuda:{ordinal} {info}");
        println!("{:<28} {:>11} {:>7}  {:<6} case", "kernel", "rel err", "tol", "result");
        for o in &outcomes {
            let verdict = if o.pass { "ok" } else { "FAIL" };
            println!("{:<28} {:>11.3e} {:>7.0e}  {:<6} {}", o.kernel, o.max_rel_err, o.tol, verdict, o.case);
        }
        println!("\nper kernel (cases that named it or launched it; worst error / tolerance):");
        println!("{:<34} {:>6} {:>11} {:>9}  result", "kernel", "cases", "max err", "err/tol");
        for k in &kernels {
            let verdict = if k.pass {
                "ok"
            } else if k.cases == 0 {
                "NOT RUN"
            } else {
                "FAIL"
            };
            println!("{:<34} {:>6} {:>11.3e} {:>9.3}  {verdict}", k.kernel, k.cases, k.max_rel_err, k.worst_ratio);
        }
    }
    let failed: Vec<&crate::parity::Outcome> = outcomes.iter().filter(|o| !o.pass).collect();
    if let Some(first) = failed.first() {
        bail!(
            "{} of {} parity cases failed; the first: {} [{}]",
            failed.len(),
            outcomes.len(),
            first.kernel,
            first.case
        );
    }
    let missing: Vec<&str> = kernels.iter().filter(|k| k.cases == 0).map(|k| k.kernel).collect();
    if !missing.is_empty() {
        bail!("no parity case ran kernel(s) {}", missing.join(", "));
    }
    if !json {
        println!("all {} parity cases within tolerance; all {} kernels checked", outcomes.len(), kernels.len());
    }
    Ok(())
}

fn check_grad(seed: u64, json: bool) -> Result<()> {
    let outcomes = gradcheck::run_all(seed);
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        println!("{:<36} {:>12} {:>9}  {:<6} shapes", "op", "max rel err", "tol", "result");
        for o in &outcomes {
            let verdict = if o.pass { "ok" } else { "FAIL" };
            println!("{:<36} {:>12.3e} {:>9.0e}  {:<6} {}", o.name, o.max_rel_err, o.tol, verdict, o.shapes);
        }
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.pass).map(|o| o.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("gradient check failed for {} op(s): {}", failed.len(), failed.join(", "));
    }
    if !json {
        println!("all {} ops within tolerance (seed {seed})", outcomes.len());
    }
    Ok(())
}

/// `mtcool flatness`: every flag and run folder is checked before the first (slow) evaluation.
#[allow(clippy::too_many_arguments)]
fn flatness_cmd(
    runs: &[PathBuf],
    radii: &str,
    draws: u32,
    seed: u64,
    data: Option<PathBuf>,
    limit_test: Option<usize>,
    device: DeviceChoice,
    out: Option<PathBuf>,
) -> Result<()> {
    use crate::train::flatness;
    let opts = flatness::Options { radii: flatness::parse_radii(radii)?, draws, seed };
    opts.validate()?;
    if limit_test == Some(0) {
        bail!("--limit-test must be at least 1");
    }
    for dir in runs {
        flatness::read_config(dir)?;
    }
    let (device, line) = device::select(device)?;
    let backend = crate::backend::Backend::open(device)?;
    let mut loaded = vec![];
    for dir in runs {
        let run = flatness::load_run(dir, data.clone(), limit_test, &backend)?;
        let passes = 1 + 4 * opts.draws as usize * opts.radii.iter().filter(|&&r| r > 0.0).count();
        println!("{}: {passes} evaluation passes over {} test examples", run.label, run.test.len());
        loaded.push(run);
    }
    let result = flatness::probe(&loaded, &opts)?;
    print!("{}", flatness::markdown_table(&result));
    let stem = out.unwrap_or_else(|| runs[0].join("flatness"));
    // The command as typed, under its own name (argv[0] may be a full path).
    let args: Vec<String> =
        std::env::args().skip(1).map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect();
    let command = format!("mtcool {}", args.join(" "));
    let paths = flatness::write(&result, &stem, &command, &line)?;
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {} ({line})", names.join(", "));
    Ok(())
}
