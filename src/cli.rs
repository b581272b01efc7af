//! The command line: argument parsing (clap) and one function per subcommand. Errors reach the user as
//! exactly one line on stderr and a non-zero exit (see `main.rs`).

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

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
    /// Train a model (the trainer is not written yet: this runs the engine's gradient check for now).
    Train,
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
        Command::Train => {
            eprintln!("mtcool: the trainer has not landed yet; running the engine's gradient check instead");
            check_grad(0, false)
        }
    }
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
