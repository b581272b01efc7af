//! The binary: help, info, and one clear error line (non-zero exit, no panic) for bad input.

mod common;

use common::run_mtcool as mtcool;
use std::process::Command;

#[test]
fn help_lists_the_subcommands() {
    let out = mtcool(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["info", "check", "train", "eval", "compare", "bench", "profile"] {
        assert!(text.contains(sub), "--help lacks {sub}: {text}");
    }
}

#[test]
fn bad_input_gives_one_error_line_and_nonzero_exit() {
    let cases: &[&[&str]] = &[
        &["--no-such-flag"],
        &["frobnicate"],
        &["info", "--jsn"],
        &["check"],
        &["check", "grad", "--seed", "banana"],
        &["check", "grad", "--seed", "-3"],
        &["check", "flux"],
    ];
    for args in cases {
        let out = mtcool(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?} printed more than one line:\n{err}");
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} wrote to stdout");
    }
}

#[test]
fn info_json_describes_the_build() {
    let out = mtcool(&["info", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json is JSON");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v.get("nvcc_version").is_some() && v.get("kernels").is_some() && v.get("gpu").is_some(), "{v}");
}

#[test]
fn check_grad_passes_and_prints_every_op() {
    let out = mtcool(&["check", "grad", "--seed", "7"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for op in ["conv2d", "batch_norm_train", "soft_dice_multiclass", "softmax_cross_entropy", "upsample_bilinear"] {
        assert!(text.lines().any(|l| l.starts_with(op)), "missing {op}:\n{text}");
    }
}

#[test]
fn a_closed_stdout_pipe_ends_the_process_without_a_panic() {
    // `mtcool check grad | head -1`: the reader goes away while mtcool is still printing.
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtcool"))
        .args(["check", "grad"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mtcool");
    drop(child.stdout.take()); // close the read end before anything is printed
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("panicked"), "panic on a closed pipe: {err}");
    assert!(!status.success(), "killed by SIGPIPE, not a success");
}
