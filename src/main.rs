use std::process::ExitCode;

use clap::Parser;
use mtcool::cli::{run, Cli};

/// Keeps freed tensor buffers in the heap instead of returning them to the OS (glibc otherwise mmaps
/// every buffer over 128 KiB and unmaps it on free, so each training step page-faults its whole working
/// set back in: ~10 % of a CPU step's time).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Restores the default SIGPIPE action (Rust ignores it, so `println!` into a closed pipe, e.g.
/// `mtcool profile | head`, would panic): the process then ends quietly, like other Unix tools.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition to its default; called before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: clap's own output, exit 0.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("error: a subcommand is missing (see mtcool --help)");
            return ExitCode::from(2);
        }
        Err(e) => {
            // One line: clap's first line ("error: ..."), without the usage block that follows it.
            let msg = e.to_string();
            eprintln!("{} (see mtcool --help)", msg.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
