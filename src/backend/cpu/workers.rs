//! A persistent pool of worker threads for the CPU ops' parallel regions.
//!
//! Why not `std::thread::scope` per region: on the VMs this runs on, a thread spawn + join costs
//! ~145 µs and a condvar wake-up ~130 µs, while a training step has dozens of regions of a few
//! hundred µs each. Here the workers spin (for `SPIN`) after each region, so the next one starts
//! within microseconds, and only then park on a condvar (then the first region after an idle spell
//! pays one wake-up).
//!
//! A region is `run(tasks, f)`: f(0), …, f(tasks − 1) run once each, on the workers and the calling
//! thread, and `run` returns when all have finished. Which thread runs a task never matters to the
//! results: callers give every task a fixed share of the work. One region runs at a time; a call
//! made while another region runs (another caller thread, or from inside a task) runs its tasks on
//! the calling thread alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// The task closure of the current region (type-erased; it lives on the caller's stack).
type Task<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// The current region: epoch (24 bits) | task count (20 bits) | next unclaimed task (20 bits).
    /// A worker claims a task by a compare-exchange that keeps the epoch, so a claim can only
    /// succeed while its region is still running.
    state: AtomicU64,
    /// The region's closure; valid while a task of the current epoch is claimed and unfinished.
    job: AtomicPtr<Task<'static>>,
    /// Tasks of the current region finished (or panicked).
    done: AtomicUsize,
    panicked: AtomicBool,
    /// Set while a region runs: a second caller runs its tasks alone.
    busy: AtomicBool,
    /// Parking: the count of parked workers, and their condvar.
    parked: Mutex<usize>,
    wake: Condvar,
}

const COUNT_BITS: u32 = 20;
const MAX_TASKS: usize = (1 << COUNT_BITS) - 1;

fn pack(epoch: u64, tasks: usize, next: usize) -> u64 {
    (epoch << (2 * COUNT_BITS)) | ((tasks as u64) << COUNT_BITS) | next as u64
}

fn unpack(s: u64) -> (u64, usize, usize) {
    let mask = (1u64 << COUNT_BITS) - 1;
    (s >> (2 * COUNT_BITS), ((s >> COUNT_BITS) & mask) as usize, (s & mask) as usize)
}

thread_local! {
    /// True on pool workers and on a thread inside `run`: nested regions run inline.
    static INSIDE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn shared() -> &'static Shared {
    static POOL: OnceLock<&'static Shared> = OnceLock::new();
    POOL.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            parked: Mutex::new(0),
            wake: Condvar::new(),
        }));
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1);
        for i in 0..workers {
            let spawned = std::thread::Builder::new().name(format!("mtcool-worker-{i}")).spawn(move || worker(shared));
            if spawned.is_err() {
                break; // fewer workers: regions still complete on the calling thread
            }
        }
        shared
    })
}

/// Claims and runs tasks of region `epoch` until none is left.
fn drain(s: &Shared, epoch: u64) {
    let mut cur = s.state.load(Ordering::Acquire);
    loop {
        let (e, tasks, next) = unpack(cur);
        if e != epoch || next >= tasks {
            return;
        }
        match s.state.compare_exchange_weak(cur, pack(e, tasks, next + 1), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                // SAFETY: task `next` of this epoch is claimed and not yet counted done, so the
                // caller of `run` is still waiting and its closure is alive; `job` holds it (it is
                // only replaced by a later region, which cannot start before this one ends).
                let f: Task = unsafe { *s.job.load(Ordering::Acquire) };
                if catch_unwind(AssertUnwindSafe(|| f(next))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
                s.done.fetch_add(1, Ordering::AcqRel);
                cur = s.state.load(Ordering::Acquire);
            }
            Err(now) => cur = now,
        }
    }
}

fn worker(s: &'static Shared) {
    INSIDE.with(|c| c.set(true));
    let mut seen = 0u64;
    loop {
        // Spin until a new region is published, then park.
        let started = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let (e, _, _) = unpack(s.state.load(Ordering::Acquire));
            if e != seen {
                break e;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && started.elapsed() > SPIN {
                let mut parked = s.parked.lock().unwrap_or_else(|p| p.into_inner());
                *parked += 1;
                while unpack(s.state.load(Ordering::Acquire)).0 == seen {
                    parked = s.wake.wait(parked).unwrap_or_else(|p| p.into_inner());
                }
                *parked -= 1;
                break unpack(s.state.load(Ordering::Acquire)).0;
            }
            std::hint::spin_loop();
        };
        seen = epoch;
        drain(s, epoch);
    }
}

/// Runs f(0), …, f(tasks − 1), each once, on the pool's workers and this thread; returns when all
/// have finished. A panic in a task is re-raised here once every task is done.
pub fn run(tasks: usize, f: impl Fn(usize) + Sync) {
    let inline = |f: &dyn Fn(usize)| (0..tasks).for_each(f);
    if tasks <= 1 || tasks > MAX_TASKS || INSIDE.with(|c| c.get()) {
        return inline(&f);
    }
    let s = shared();
    if s.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return inline(&f);
    }
    INSIDE.with(|c| c.set(true));
    let task: Task = &f;
    // SAFETY (lifetime): the pointer is only followed for claimed tasks of this region, and this
    // function does not return before all of them are done (see `drain`).
    let erased: Task<'static> = unsafe { std::mem::transmute::<Task<'_>, Task<'static>>(task) };
    let slot = Box::new(erased);
    s.done.store(0, Ordering::Relaxed);
    s.panicked.store(false, Ordering::Relaxed);
    let old = s.job.swap(Box::into_raw(slot), Ordering::AcqRel);
    let epoch = (unpack(s.state.load(Ordering::Acquire)).0 + 1) & ((1 << (64 - 2 * COUNT_BITS)) - 1);
    let epoch = if epoch == 0 { 1 } else { epoch };
    s.state.store(pack(epoch, tasks, 0), Ordering::Release);
    if *s.parked.lock().unwrap_or_else(|p| p.into_inner()) > 0 {
        s.wake.notify_all();
    }
    drain(s, epoch);
    while s.done.load(Ordering::Acquire) < tasks {
        std::hint::spin_loop();
    }
    if !old.is_null() {
        // SAFETY: the previous region's slot; that region ended, so no worker follows it any more.
        drop(unsafe { Box::from_raw(old) });
    }
    INSIDE.with(|c| c.set(false));
    let panicked = s.panicked.load(Ordering::Relaxed);
    s.busy.store(false, Ordering::Release);
    if panicked {
        panic!("a CPU worker task panicked (see the message above)");
    }
}
