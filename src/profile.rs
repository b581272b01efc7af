//! A per-op profiler for the training step (`mtcool profile`).
//!
//! Off by default (one thread-local flag read per op). When on, the tape charges each forward op with
//! the wall time since the previous profiling mark (the op's constructor runs its CPU forward just
//! before recording it), times each op's backward rule, and the optimiser times its step. Every record
//! carries an estimate of the work: FLOPs for the matrix ops (conv, linear, matmul, bmm) and bytes
//! moved for the others, so the table can show GFLOP/s and GB/s against measured peaks.
//!
//! On a GPU, ops only queue kernels; `set_barrier` installs a wait (the stream's synchronise) that runs
//! before every clock reading, so each op is charged with its kernels' time (profiling only).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

/// Totals of one (phase, op) pair.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct OpStat {
    pub calls: u64,
    pub seconds: f64,
    pub flops: f64,
    pub bytes: f64,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static MARK: Cell<Option<Instant>> = const { Cell::new(None) };
    static STATS: RefCell<BTreeMap<(&'static str, &'static str), OpStat>> = const { RefCell::new(BTreeMap::new()) };
    static BARRIER: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Installs (or with `None` removes) the wait that runs before every clock reading on this thread.
pub fn set_barrier(f: Option<Box<dyn Fn()>>) {
    BARRIER.with(|b| *b.borrow_mut() = f);
}

fn barrier() {
    BARRIER.with(|b| {
        if let Some(f) = b.borrow().as_ref() {
            f()
        }
    });
}

/// Starts collecting on this thread (clearing earlier totals).
pub fn start() {
    STATS.with(|s| s.borrow_mut().clear());
    ON.with(|on| on.set(true));
    mark();
}

/// Stops collecting and returns the totals by (phase, op).
pub fn stop() -> BTreeMap<(&'static str, &'static str), OpStat> {
    ON.with(|on| on.set(false));
    STATS.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

pub fn enabled() -> bool {
    ON.with(|on| on.get())
}

/// Resets the mark: time until the next forward record is charged to that op.
pub fn mark() {
    if enabled() {
        barrier();
        MARK.with(|m| m.set(Some(Instant::now())));
    }
}

/// Adds one call of `op` in `phase` taking `seconds`.
pub fn add(phase: &'static str, op: &'static str, seconds: f64, flops: f64, bytes: f64) {
    STATS.with(|s| {
        let mut s = s.borrow_mut();
        let e = s.entry((phase, op)).or_default();
        e.calls += 1;
        e.seconds += seconds;
        e.flops += flops;
        e.bytes += bytes;
    });
}

/// Charges `op` with the time since the last mark, then marks.
pub fn forward(op: &'static str, flops: f64, bytes: f64) {
    barrier();
    let now = Instant::now();
    let since = MARK.with(|m| m.replace(Some(now))).map_or(0.0, |t| (now - t).as_secs_f64());
    add("forward", op, since, flops, bytes);
}

/// Times `f` as one call of `op` in `phase`, then marks.
pub fn timed<R>(phase: &'static str, op: &'static str, flops: f64, bytes: f64, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    barrier();
    let t = Instant::now();
    let r = f();
    barrier();
    add(phase, op, t.elapsed().as_secs_f64(), flops, bytes);
    mark();
    r
}
