//! Single-precision matrix multiply for the CPU backend: C = α·op(A)·op(B) + β·C, all row-major.
//!
//! Design (the Goto/BLIS layering):
//! - k is cut into KC-deep slabs; within a slab op(B) is cut into NC-wide column blocks and op(A)
//!   into MC-tall row blocks. A is packed into MR-row slivers, each row's kc values contiguous and
//!   rows `a_stride(kc)` apart (an odd number of cache lines, so the MR rows never share an L1
//!   set); B into NR-column slivers [kc][NR], except that when B is not transposed and few A blocks
//!   reuse it, its full slivers are read in place (its rows are already contiguous). The
//!   micro-kernel finds row p of a B sliver at a fixed stride or through a table of offsets, so the
//!   same kernel also reads B rows scattered anywhere (`gemm_rows`: the shifted image rows of a
//!   convolution, read without an im2col copy). Edges are zero-padded.
//! - The micro-kernel keeps an MR×NR tile of C in registers and does one rank-1 update per k. Three
//!   builds, chosen at run time (`Isa`): AVX-512 (12×32, 24 of the 32 zmm registers, hand-written
//!   with intrinsics, one variant per row count so a short last sliver costs no padded FMAs), AVX2 +
//!   FMA (6×16, plain Rust that LLVM unrolls and vectorises), and the same plain Rust for any CPU.
//! - A·Bᵀ with C small and k long (conv weight gradients) skips packing, which would be a transpose
//!   costing as much as the product, and takes dot products of the rows as they lie (`run_dots`).
//! - Threads (the `workers` pool) split C into disjoint row blocks, or column blocks when C has too
//!   few row tiles. With row blocks, each NC×KC block of B is packed once, by all threads together,
//!   and shared. `MTCOOL_THREADS` overrides the thread count (1 = single thread).
//!
//! Determinism: which path runs depends on the shape and the ISA only, and on each path every
//! element of C is the same chain of multiply-adds in the same order whichever tile, block or thread
//! computes it, so results do not depend on the thread count. The tile kernels of AVX-512 and AVX2
//! give identical bits (each element is the same FMA chain over k); the dot-product kernels sum in
//! 16 and 8 lanes respectively, so the `run_dots` path differs between them in the last bits.

use std::cell::RefCell;
use std::sync::Mutex;

use super::workers;

/// Largest register tile over all ISAs (rows, columns): sizes the ragged-edge scratch tile.
const MR_MAX: usize = 12;
const NR_MAX: usize = 32;
/// Depth of a packed slab of `sgemm`: a product with k ≤ 1024 runs as one slab, so C is written
/// once and never read back to accumulate; the KC×NR B sliver (128 KiB) and the A sliver stream
/// from L2 (measured at 1024³ with row-wise A slivers: KC 256 → 1024, 77 → 82 % of the FMA peak on
/// one thread).
const KC: usize = 1024;
/// Depth of a slab of `gemm_rows` (convolutions): its B rows are read in place from an image, and
/// a shallower slab keeps a sliver's rows in L1.
const KC_ROWS: usize = 256;
/// Rows of a packed A block (MC×KC floats ≈ 400 KiB, half of L2; a multiple of every MR).
const MC: usize = 96;
/// Columns of a packed B block (KC×NC floats = 2 MiB at most).
const NC: usize = 2048;
/// Rows of A and of B per tile of the dot-product kernel: DM·DN accumulators of one vector each.
pub const DM: usize = 4;
pub const DN: usize = 3;
const LANES: usize = 8;
/// Below this many multiply-adds one thread is used: a spawn + join costs ~50 µs.
const PAR_MIN_MACS: usize = 1 << 24;

/// Worker threads to use: `MTCOOL_THREADS` if set to a positive integer, else the available
/// parallelism (looked up once: on Linux it reads cgroup files, tens of microseconds).
pub fn num_threads() -> usize {
    static AVAILABLE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    match std::env::var("MTCOOL_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(t) if t >= 1 => t,
        _ => *AVAILABLE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// Threads worth using for a job of `macs` multiply-adds: 1 for small jobs, else `num_threads()`.
pub fn threads_for(macs: usize) -> usize {
    if macs < PAR_MIN_MACS {
        1
    } else {
        num_threads()
    }
}

/// Splits `data` into items of `item_len` elements and calls `f(first_item_index, items)` on `threads`
/// contiguous runs of items, one per thread (the last run on the calling thread).
pub fn parallel_items<T: Send, F>(data: &mut [T], item_len: usize, threads: usize, f: F)
where
    F: Fn(usize, &mut [T]) + Sync,
{
    let items = data.len() / item_len.max(1);
    let threads = threads.clamp(1, items.max(1));
    if threads == 1 {
        return f(0, data);
    }
    let per = items.div_ceil(threads);
    let chunks: Vec<Mutex<&mut [T]>> = data.chunks_mut(per * item_len.max(1)).map(Mutex::new).collect();
    workers::run(chunks.len(), |t| {
        let mut chunk = chunks[t].lock().unwrap_or_else(|p| p.into_inner());
        f(t * per, &mut chunk)
    });
}

/// C = α·op(A)·op(B) + β·C, row-major. op(A) is m×k (A stored k×m when `trans_a`), op(B) is k×n
/// (stored n×k when `trans_b`), C is m×n; lda/ldb/ldc are the row strides of the stored matrices.
/// β = 0 overwrites C without reading it (NaNs in C are ignored). Threads: `num_threads()`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    sgemm_with_threads(num_threads(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/// `sgemm` with an explicit thread count (the result is bit-identical for every count).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with_threads(
    threads: usize,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "sgemm: C ({} floats, ldc {ldc}) too small for {m}x{n}", c.len());
    if k == 0 {
        // op(A)·op(B) is all zeros: C = β·C, with β = 0 not reading C.
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
        }
        return;
    }
    let (a, b) = (View::new(a, trans_a, lda, m, k, "A"), View::new(b, trans_b, ldb, k, n, "B"));
    // Decided on the whole problem, never per thread block, so that every block takes the same path.
    let dots = !trans_a && trans_b && k >= 128 && m.min(n) <= 64;
    let job = Job { k, alpha, beta, a, b, dots };
    let kernels = Kernels::select();
    let (mr, nr) = (kernels.mr, kernels.nr);
    let (m_tiles, n_tiles) = (m.div_ceil(mr), n.div_ceil(nr));
    let threads = if m * n * k < PAR_MIN_MACS { 1 } else { threads.clamp(1, m_tiles.max(n_tiles)) };
    if threads == 1 {
        job.run(m, n, c, ldc, kernels);
    } else if (m_tiles >= threads || m_tiles >= n_tiles) && !job.dots {
        // Row blocks sharing each packed block of B.
        job.run_packed(m_tiles.div_ceil(threads) * mr, m, n, c, ldc, kernels);
    } else if m_tiles >= threads || m_tiles >= n_tiles {
        // Row blocks: disjoint row ranges of C are disjoint slices.
        let rows_per = m_tiles.div_ceil(threads) * mr;
        let blocks: Vec<Mutex<&mut [f32]>> = c.chunks_mut(rows_per * ldc).map(Mutex::new).collect();
        workers::run(m.div_ceil(rows_per), |t| {
            let (r0, rows) = (t * rows_per, rows_per.min(m - t * rows_per));
            let mut block = blocks[t].lock().unwrap_or_else(|p| p.into_inner());
            Job { a: job.a.offset(r0, 0), ..job }.run(rows, n, &mut block, ldc, kernels);
        });
    } else {
        // Column blocks interleave in memory: each task works on a private m×nc copy of its
        // columns (the same arithmetic as in place), copied back afterwards.
        let cols_per = n_tiles.div_ceil(threads) * nr;
        let count = n.div_ceil(cols_per);
        let c_in: &[f32] = c;
        let blocks: Vec<Mutex<Vec<f32>>> = (0..count).map(|_| Mutex::new(Vec::new())).collect();
        workers::run(count, |t| {
            let (c0, nc) = (t * cols_per, cols_per.min(n - t * cols_per));
            let mut buf = vec![0f32; m * nc];
            if beta != 0.0 {
                for (i, row) in buf.chunks_exact_mut(nc).enumerate() {
                    row.copy_from_slice(&c_in[i * ldc + c0..][..nc]);
                }
            }
            Job { b: job.b.offset(0, c0), ..job }.run(m, nc, &mut buf, nc, kernels);
            *blocks[t].lock().unwrap_or_else(|p| p.into_inner()) = buf;
        });
        for (t, buf) in blocks.into_iter().enumerate() {
            let (c0, buf) = (t * cols_per, buf.into_inner().unwrap_or_else(|p| p.into_inner()));
            let nc = buf.len() / m;
            for (i, row) in buf.chunks_exact(nc).enumerate() {
                c[i * ldc + c0..][..nc].copy_from_slice(row);
            }
        }
    }
}

/// A read-only matrix operand: element (r, c) is `data[r·rs + c·cs]` (a transpose swaps the strides).
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// op(X) of shape rows×cols for X stored row-major with leading dimension `ld`.
    fn new(data: &'a [f32], trans: bool, ld: usize, rows: usize, cols: usize, what: &str) -> Self {
        let (rs, cs) = if trans { (1, ld) } else { (ld, 1) };
        let stored_cols = if trans { rows } else { cols };
        assert!(ld >= stored_cols, "sgemm: ld{what} = {ld} < {stored_cols} stored columns");
        let need = (rows - 1) * rs + (cols - 1) * cs + 1;
        assert!(data.len() >= need, "sgemm: {what} has {} floats, needs {need}", data.len());
        View { data, rs, cs }
    }
    /// The sub-matrix starting at (r, c).
    fn offset(self, r: usize, c: usize) -> Self {
        View { data: &self.data[r * self.rs + c * self.cs..], ..self }
    }
}

/// A product, less the block of C it writes: C_block = α·op(A)·op(B) + β·C_block over depth k,
/// by row dot products (`dots`) or by packed tiles.
#[derive(Clone, Copy)]
struct Job<'a> {
    k: usize,
    alpha: f32,
    beta: f32,
    a: View<'a>,
    b: View<'a>,
    dots: bool,
}

/// The (jc, nc, pc, kc) blocks of the packed path: NC-wide column blocks of C, each cut into
/// KC-deep slabs of the product.
fn blocks(n: usize, k: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..n).step_by(NC).flat_map(move |jc| (0..k).step_by(KC).map(move |pc| (jc, NC.min(n - jc), pc, KC.min(k - pc))))
}

/// Row stride of a packed A sliver of depth kc: whole cache lines, an odd number of them, so that
/// the MR rows of a sliver fall into MR different L1 sets (rows 4 KiB apart would share one).
fn a_stride(kc: usize) -> usize {
    let lines = kc.div_ceil(16);
    (lines | 1) * 16
}

thread_local! {
    /// Per-thread packing buffers, grown on demand and reused across calls: A blocks, and B blocks
    /// (the calling thread's B buffer is the one its workers share).
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One KC-deep slab of an NC-wide column block of op(B), as the tiles read it: the first
/// `in_place` slivers straight from B (rows `b.rs` apart), the rest from `packed` ([kc][nr] each).
#[derive(Clone, Copy)]
struct Slab<'a> {
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
    in_place: usize,
    packed: &'a [f32],
}

impl Job<'_> {
    /// One thread's share: the m×n block of C in `c` (rows `ldc` apart).
    fn run(&self, m: usize, n: usize, c: &mut [f32], ldc: usize, kernels: Kernels) {
        if self.dots {
            return self.run_dots(m, n, c, ldc, kernels);
        }
        self.run_packed(m.div_ceil(kernels.mr) * kernels.mr, m, n, c, ldc, kernels)
    }

    /// The packed path, one task per row block of `rows_per` rows (a multiple of MR; one block: this
    /// thread alone): each block of B is packed once, its slivers shared out among the tasks, and
    /// then read by all of them.
    fn run_packed(&self, rows_per: usize, m: usize, n: usize, c: &mut [f32], ldc: usize, kernels: Kernels) {
        let (nr, tasks) = (kernels.nr, m.div_ceil(rows_per));
        PACK_B.with(|buf| {
            let bp = &mut *buf.borrow_mut();
            for (jc, nc, pc, kc) in blocks(n, self.k) {
                let in_place = self.in_place(m, nc, nr);
                let len = self.pack_len(nc, kc, in_place, nr);
                bp.resize(bp.len().max(len), 0.0);
                // Contiguous runs of slivers, one per task (the last run may be ragged).
                let slivers = len / (nr * kc);
                let per = slivers.div_ceil(tasks).max(1);
                let runs: Vec<Mutex<&mut [f32]>> = bp[..len].chunks_mut(per * nr * kc).map(Mutex::new).collect();
                workers::run(runs.len(), |t| {
                    let mut run = runs[t].lock().unwrap_or_else(|p| p.into_inner());
                    let j0 = (in_place + t * per) * nr;
                    pack_b(self.b.offset(pc, jc + j0), kc, (nc - j0).min(per * nr), nr, &mut run);
                });
                drop(runs);
                let slab = Slab { jc, nc, pc, kc, in_place, packed: &bp[..len] };
                let row_blocks: Vec<Mutex<&mut [f32]>> = c.chunks_mut(rows_per * ldc).map(Mutex::new).collect();
                workers::run(tasks, |t| {
                    let (r0, rows) = (t * rows_per, rows_per.min(m - t * rows_per));
                    let mut block = row_blocks[t].lock().unwrap_or_else(|p| p.into_inner());
                    self.rows(r0, rows, &slab, &mut block, ldc, kernels);
                });
            }
        })
    }

    /// Full slivers of a non-transposed B read in place, `b.rs` apart: only when one A block uses
    /// them (else a packed copy is read: rows far apart in memory fall into few cache sets;
    /// measured 47 % → 59 % of the FMA peak at 1024³).
    fn in_place(&self, m: usize, nc: usize, nr: usize) -> usize {
        if self.b.cs == 1 && m <= MC {
            nc / nr
        } else {
            0
        }
    }

    /// Floats of the packed part of a kc×nc block of B.
    fn pack_len(&self, nc: usize, kc: usize, in_place: usize, nr: usize) -> usize {
        (nc - in_place * nr).div_ceil(nr) * nr * kc
    }

    /// Rows r0..r0+rows of C (`c` starts at row r0) against one slab of B: A packed MC rows at a
    /// time (this thread's buffer), then every tile of the block.
    fn rows(&self, r0: usize, rows: usize, slab: &Slab, c: &mut [f32], ldc: usize, kernels: Kernels) {
        let Job { alpha, a, b, .. } = *self;
        let Slab { jc, nc, pc, kc, in_place, packed } = *slab;
        let (mr, nr, sa) = (kernels.mr, kernels.nr, a_stride(kc));
        let beta = if pc == 0 { self.beta } else { 1.0 }; // later slabs accumulate onto the first
        let n = jc + nc;
        PACK_A.with(|buf| {
            let ap = &mut *buf.borrow_mut();
            let mc_max = MC.min(rows.div_ceil(mr) * mr);
            ap.resize(ap.len().max(mc_max * sa), 0.0);
            for ic in (0..rows).step_by(MC) {
                let mc = MC.min(rows - ic);
                pack_a(a.offset(r0 + ic, pc), mc, kc, mr, sa, ap);
                for jr in 0..nc.div_ceil(nr) {
                    let (b_sliver, b_rows) = if jr < in_place {
                        (b.offset(pc, jc + jr * nr).data, BRows::Step(b.rs))
                    } else {
                        (&packed[(jr - in_place) * nr * kc..][..nr * kc], BRows::Step(nr))
                    };
                    for ir in 0..mc.div_ceil(mr) {
                        let a_sliver = &ap[ir * mr * sa..][..mr * sa];
                        let (i0, c0) = (ic + ir * mr, jc + jr * nr);
                        let tile = TileArgs { rows: mr.min(rows - i0), cols: nr.min(n - c0), kc, sa, alpha, beta, ldc };
                        kernels.run_tile(tile, a_sliver, b_sliver, b_rows, &mut c[i0 * ldc + c0..]);
                    }
                }
            }
        })
    }

    /// C = α·A·Bᵀ + β·C with the rows of A (m×k) and of Bᵀ (n×k) contiguous: DM×DN tiles of row
    /// dot products, no packing. Tiles hanging over the edge repeat the last row (results dropped).
    fn run_dots(&self, m: usize, n: usize, c: &mut [f32], ldc: usize, kernels: Kernels) {
        let Job { k, alpha, beta, a, b, .. } = *self;
        let a_rows: Vec<&[f32]> = (0..m).map(|i| &a.data[i * a.rs..][..k]).collect();
        let b_rows: Vec<&[f32]> = (0..n).map(|j| &b.data[j * b.cs..][..k]).collect();
        dots_with(kernels, &a_rows, &b_rows, Segs::one(k), alpha, beta, c, ldc);
    }
}

/// Segments of a dot product: Σ over s < count of Σ over q < len of a[s·a_step + q]·b[s·b_step + q].
#[derive(Clone, Copy, Debug)]
pub struct Segs {
    pub count: usize,
    pub len: usize,
    pub a_step: usize,
    pub b_step: usize,
}

impl Segs {
    /// One plain dot product of length `len`.
    pub fn one(len: usize) -> Segs {
        Segs { count: 1, len, a_step: 0, b_step: 0 }
    }
    /// Floats a row must hold.
    fn span(&self, step: usize) -> usize {
        if self.count == 0 || self.len == 0 {
            0
        } else {
            (self.count - 1) * step + self.len
        }
    }
}

/// c[i·ldc + j] = α·dot(a_rows[i], b_rows[j]) + β·c[i·ldc + j] (β = 0: c not read) for every pair,
/// each dot summed over the segments `segs` (e.g. one image each). Single-threaded; the order of
/// the sums depends on the shapes and the ISA only.
#[allow(clippy::too_many_arguments)]
pub fn dots(a_rows: &[&[f32]], b_rows: &[&[f32]], segs: Segs, alpha: f32, beta: f32, c: &mut [f32], ldc: usize) {
    dots_with(Kernels::select(), a_rows, b_rows, segs, alpha, beta, c, ldc)
}

#[allow(clippy::too_many_arguments)]
fn dots_with(
    kernels: Kernels,
    a_rows: &[&[f32]],
    b_rows: &[&[f32]],
    segs: Segs,
    alpha: f32,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let (m, n) = (a_rows.len(), b_rows.len());
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "dots: C too small for {m}x{n}");
    let (sa, sb) = (segs.span(segs.a_step), segs.span(segs.b_step));
    assert!(a_rows.iter().all(|r| r.len() >= sa), "dots: an A row is shorter than {sa}");
    assert!(b_rows.iter().all(|r| r.len() >= sb), "dots: a B row is shorter than {sb}");
    for i0 in (0..m).step_by(DM) {
        let a: [&[f32]; DM] = std::array::from_fn(|i| a_rows[(i0 + i).min(m - 1)]);
        for j0 in (0..n).step_by(DN) {
            let b: [&[f32]; DN] = std::array::from_fn(|j| b_rows[(j0 + j).min(n - 1)]);
            let sums = kernels.dot(&a, &b, segs);
            for (i, row) in sums.iter().enumerate().take(m - i0) {
                let crow = c[(i0 + i) * ldc + j0..].iter_mut();
                for (cv, &t) in crow.zip(row).take(n - j0) {
                    *cv = if beta == 0.0 { alpha * t } else { alpha * t + beta * *cv };
                }
            }
        }
    }
}

/// A packed for `gemm_rows`: m×k in KC_ROWS-deep slabs of MR-row slivers, for the ISA it was packed
/// for. Packed once, it serves every image of a batch (a convolution's weights).
pub struct PackedA {
    m: usize,
    k: usize,
    kernels: Kernels,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs the m×k row-major matrix `a` (rows `lda` apart).
    pub fn new(a: &[f32], lda: usize, m: usize, k: usize) -> PackedA {
        let kernels = Kernels::select();
        let sliver_rows = m.div_ceil(kernels.mr) * kernels.mr;
        let len: usize = (0..k).step_by(KC_ROWS).map(|pc| sliver_rows * a_stride(KC_ROWS.min(k - pc))).sum();
        let mut data = vec![0f32; len];
        if m > 0 && k > 0 {
            let view = View::new(a, false, lda, m, k, "A");
            let mut at = 0;
            for pc in (0..k).step_by(KC_ROWS) {
                let kc = KC_ROWS.min(k - pc);
                let sa = a_stride(kc);
                pack_a(view.offset(0, pc), m, kc, kernels.mr, sa, &mut data[at..]);
                at += sliver_rows * sa;
            }
        }
        PackedA { m, k, kernels, data }
    }
}

/// C = α·A·B + β·C (β = 0: C not read) for C m×n (rows `ldc` apart) and A packed by `PackedA::new`,
/// where row p of B (k×n) is `b[offs[p]..][..n]`: B is never copied, so its rows may be shifted,
/// overlapping views of one buffer (the taps of a stride-1 convolution over a flattened image).
/// Single-threaded: callers split the work (e.g. over images).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(a: &PackedA, b: &[f32], offs: &[usize], n: usize, alpha: f32, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, kernels) = (a.m, a.k, a.kernels);
    assert_eq!(offs.len(), k, "gemm_rows: {} row offsets for depth {k}", offs.len());
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm_rows: C too small for {m}x{n}");
    assert!(offs.iter().all(|&o| o + n <= b.len()), "gemm_rows: a row of B runs past its {} floats", b.len());
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].iter_mut().for_each(|v| *v = if beta == 0.0 { 0.0 } else { beta * *v });
        }
        return;
    }
    let (mr, nr, slivers) = (kernels.mr, kernels.nr, m.div_ceil(kernels.mr));
    PACK_B.with(|buf| {
        let edge = &mut *buf.borrow_mut();
        edge.resize(edge.len().max(nr * KC_ROWS.min(k)), 0.0);
        let mut at = 0;
        for pc in (0..k).step_by(KC_ROWS) {
            let (kc, slab) = (KC_ROWS.min(k - pc), &offs[pc..(pc + KC_ROWS).min(k)]);
            let sa = a_stride(kc);
            let table = BRows::table(slab);
            let beta = if pc == 0 { beta } else { 1.0 };
            for c0 in (0..n).step_by(nr) {
                let cols = nr.min(n - c0);
                let (b_sliver, b_rows) = if cols == nr {
                    (&b[c0..], table)
                } else {
                    // The ragged last sliver: copied, zero-padded, so no read runs past B.
                    let sliver = &mut edge[..nr * kc];
                    for (p, out) in sliver.chunks_exact_mut(nr).enumerate() {
                        out[..cols].copy_from_slice(&b[slab[p] + c0..][..cols]);
                        out[cols..].fill(0.0);
                    }
                    (&edge[..nr * kc], BRows::Step(nr))
                };
                for s in 0..slivers {
                    let a_sliver = &a.data[at + s * mr * sa..][..mr * sa];
                    let tile = TileArgs { rows: mr.min(m - s * mr), cols, kc, sa, alpha, beta, ldc };
                    kernels.run_tile(tile, a_sliver, b_sliver, b_rows, &mut c[s * mr * ldc + c0..]);
                }
            }
            at += slivers * mr * sa;
        }
    });
}

/// dst[..len] = src[..len] for len ≤ FULL; inline when len = FULL (a memcpy call costs more here).
fn copy_prefix<const FULL: usize>(dst: &mut [f32], src: &[f32], len: usize) {
    if len == FULL {
        dst[..FULL].copy_from_slice(&src[..FULL]);
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// Packs the mc×kc block of `a` into mr-row slivers of mr·sa floats: row i of a sliver holds its kc
/// values contiguously from i·sa. Rows past mc in the last sliver are zeros.
fn pack_a(a: View, mc: usize, kc: usize, mr: usize, sa: usize, dst: &mut [f32]) {
    for (t, sliver) in dst.chunks_exact_mut(mr * sa).take(mc.div_ceil(mr)).enumerate() {
        let rows = mr.min(mc - t * mr);
        for i in rows..mr {
            sliver[i * sa..][..kc].fill(0.0);
        }
        if a.cs == 1 {
            // A not transposed: each row is a plain copy.
            for i in 0..rows {
                sliver[i * sa..][..kc].copy_from_slice(&a.data[(t * mr + i) * a.rs..][..kc]);
            }
        } else {
            // A transposed: the mr values of column p are contiguous; read 16 columns of them at a
            // time and write each row's 16 values out together.
            for p0 in (0..kc).step_by(16) {
                let w = 16.min(kc - p0);
                let mut block = [[0f32; MR_MAX]; 16];
                for (q, col) in block.iter_mut().enumerate().take(w) {
                    col[..rows].copy_from_slice(&a.data[(p0 + q) * a.cs + t * mr * a.rs..][..rows]);
                }
                for i in 0..rows {
                    let out = &mut sliver[i * sa + p0..][..w];
                    for (q, o) in out.iter_mut().enumerate() {
                        *o = block[q][i];
                    }
                }
            }
        }
    }
}

/// Packs the kc×nc block of `b` into nr-column slivers, each laid out [kc][nr], zero-padding the last.
fn pack_b(b: View, kc: usize, nc: usize, nr: usize, dst: &mut [f32]) {
    for (t, sliver) in dst.chunks_exact_mut(nr * kc).take(nc.div_ceil(nr)).enumerate() {
        let (j0, cols) = (t * nr, nr.min(nc - t * nr));
        if cols < nr {
            sliver.fill(0.0);
        }
        if b.cs == 1 {
            // B not transposed: row p of the sliver is contiguous.
            for (p, out) in sliver.chunks_exact_mut(nr).enumerate() {
                if nr == 16 {
                    copy_prefix::<16>(out, &b.data[p * b.rs + j0..], cols);
                } else {
                    copy_prefix::<32>(out, &b.data[p * b.rs + j0..], cols);
                }
            }
        } else {
            // B transposed: read each column of op(B) contiguously, write it with stride nr.
            for j in 0..cols {
                let src = &b.data[(j0 + j) * b.cs..][..kc];
                sliver.iter_mut().skip(j).step_by(nr).zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

// ---------------------------------------------------------------- micro-kernels

/// The instruction sets the micro-kernels are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (x86-64).
    Avx512,
    /// AVX2 + FMA (x86-64).
    Avx2,
    /// Plain Rust for the baseline target (SSE2 on x86-64, NEON on aarch64); unfused multiply-adds.
    Portable,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }
    /// Whether this CPU can run kernels built for `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// 0 = none, else 1 + the index in `ALL_ISAS` of the ISA `set_isa` forced.
static FORCED: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
const ALL_ISAS: [Isa; 3] = [Isa::Avx512, Isa::Avx2, Isa::Portable];

/// The ISA the kernels use: the one `set_isa` forced, else `MTCOOL_ISA` (avx512 | avx2 | portable)
/// if this CPU supports it, else the best this CPU supports. Read once, except for `set_isa`.
pub fn isa() -> Isa {
    static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    match FORCED.load(std::sync::atomic::Ordering::Relaxed) {
        0 => *DETECTED.get_or_init(|| {
            let wanted = std::env::var("MTCOOL_ISA").ok();
            let named = ALL_ISAS.into_iter().find(|i| Some(i.name()) == wanted.as_deref());
            match named {
                Some(i) if i.supported() => i,
                _ => ALL_ISAS.into_iter().find(|i| i.supported()).unwrap_or(Isa::Portable),
            }
        }),
        f => ALL_ISAS[f as usize - 1],
    }
}

/// Forces the ISA of every later GEMM in the process (None: back to `isa()`'s choice); for tests
/// that check each build against the reference. Returns false (and changes nothing) when the CPU
/// lacks it. Process-wide: a test using it must not run beside other GEMM tests of its binary.
pub fn set_isa(isa: Option<Isa>) -> bool {
    let code = match isa {
        None => 0,
        Some(i) if !i.supported() => return false,
        Some(i) => 1 + ALL_ISAS.iter().position(|&x| x == i).unwrap() as u8,
    };
    FORCED.store(code, std::sync::atomic::Ordering::Relaxed);
    true
}

/// Where row p (p < kc) of a B sliver starts: at p·step, or at offs[p] (rows anywhere, e.g. the
/// taps of a convolution), with the table's largest entry found once, not per tile.
#[derive(Clone, Copy)]
enum BRows<'a> {
    Step(usize),
    Table { offs: &'a [usize], max: usize },
}

impl<'a> BRows<'a> {
    fn table(offs: &'a [usize]) -> BRows<'a> {
        BRows::Table { offs, max: offs.iter().copied().max().unwrap_or(0) }
    }
    /// Floats a sliver must hold for `kc` rows of `nr` columns.
    fn span(&self, kc: usize, nr: usize) -> usize {
        match *self {
            BRows::Step(step) => (kc - 1) * step + nr,
            BRows::Table { offs, max } => {
                assert!(offs.len() >= kc, "tile: {} row offsets for depth {kc}", offs.len());
                max + nr
            }
        }
    }
}

/// Shape of one tile call: `rows` ≤ MR and `cols` ≤ NR valid, depth kc, A rows `sa` apart in the
/// sliver, C rows `ldc` apart.
#[derive(Clone, Copy)]
struct TileArgs {
    rows: usize,
    cols: usize,
    kc: usize,
    sa: usize,
    alpha: f32,
    beta: f32,
    ldc: usize,
}

/// The micro-kernels of one ISA and their register tile (mr × nr).
#[derive(Clone, Copy)]
struct Kernels {
    isa: Isa,
    mr: usize,
    nr: usize,
}

impl Kernels {
    fn select() -> Kernels {
        let isa = isa();
        let (mr, nr) = match isa {
            Isa::Avx512 => (12, 32),
            Isa::Avx2 | Isa::Portable => (6, 16),
        };
        Kernels { isa, mr, nr }
    }

    /// The tile at the start of `c`: its first t.rows × t.cols entries become α·Σ_p a_p ⊗ b_p + β·C
    /// (β = 0: C not read) over p < t.kc, with a_p = (a[i·sa + p])_i (a packed sliver) and
    /// b_p = b[p·step..][..nr] or b[offs[p]..][..nr] (`BRows`). A ragged tile (fewer than nr columns) runs on a scratch copy.
    fn run_tile(&self, t: TileArgs, a: &[f32], b: &[f32], rows: BRows, c: &mut [f32]) {
        assert!(t.kc >= 1 && t.sa >= t.kc && a.len() >= (self.mr - 1) * t.sa + t.kc, "tile: A sliver too short");
        assert!(rows.span(t.kc, self.nr) <= b.len(), "tile: a B row runs past the sliver");
        if t.cols == self.nr {
            assert!(c.len() >= (t.rows - 1) * t.ldc + self.nr, "tile: C too small");
            return self.tile(t, a, b, rows, c);
        }
        let mut tile = [0f32; MR_MAX * NR_MAX];
        for i in 0..t.rows {
            tile[i * self.nr..][..t.cols].copy_from_slice(&c[i * t.ldc..][..t.cols]);
        }
        self.tile(TileArgs { ldc: self.nr, ..t }, a, b, rows, &mut tile);
        for i in 0..t.rows {
            c[i * t.ldc..][..t.cols].copy_from_slice(&tile[i * self.nr..][..t.cols]);
        }
    }

    /// The kernel proper, on whole nr-wide rows (bounds checked by `run_tile`).
    fn tile(&self, t: TileArgs, a: &[f32], b: &[f32], rows: BRows, c: &mut [f32]) {
        match self.isa {
            // SAFETY: `isa()` only returns ISAs this CPU supports; `run_tile` checked the bounds.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::tile(t, a, b, rows, c) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::tile(t, a, b, rows, c) },
            _ => tile_body::<false>(t, a, b, rows, c),
        }
    }

    /// DM×DN dot products over `segs` (see `dots`); rows checked long enough by the caller.
    fn dot(&self, a: &[&[f32]; DM], b: &[&[f32]; DN], segs: Segs) -> [[f32; DN]; DM] {
        match self.isa {
            // SAFETY: `isa()` only returns ISAs this CPU supports; `dots_with` checked the lengths.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::dot(a, b, segs) },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::dot(a, b, segs) },
            _ => dot_body::<false>(a, b, segs),
        }
    }
}

/// The plain-Rust kernels compiled for AVX2 + FMA (callers must check that the CPU has both).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(t: TileArgs, a: &[f32], b: &[f32], rows: BRows, c: &mut [f32]) {
        tile_body::<true>(t, a, b, rows, c)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[&[f32]; DM], b: &[&[f32]; DN], segs: Segs) -> [[f32; DN]; DM] {
        dot_body::<true>(a, b, segs)
    }
}

/// Register tile of the plain-Rust kernel: 6×16 = 12 of the 16 AVX2 registers.
const MR_PLAIN: usize = 6;
const NR_PLAIN: usize = 16;

/// The plain-Rust tile kernel (6×16; see `Kernels::run_tile`); products fused when `FMA`.
#[inline(always)]
fn tile_body<const FMA: bool>(t: TileArgs, a: &[f32], b: &[f32], rows: BRows, c: &mut [f32]) {
    let acc = match rows {
        BRows::Step(step) => tile_sum::<FMA>(t, a, b, |p| p * step),
        BRows::Table { offs, .. } => tile_sum::<FMA>(t, a, b, |p| offs[p]),
    };
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        let crow: &mut [f32; NR_PLAIN] = (&mut c[i * t.ldc..][..NR_PLAIN]).try_into().unwrap();
        if t.beta == 0.0 {
            crow.iter_mut().zip(row).for_each(|(cv, &v)| *cv = t.alpha * v);
        } else {
            crow.iter_mut().zip(row).for_each(|(cv, &v)| *cv = t.alpha * v + t.beta * *cv);
        }
    }
}

/// Σ_p a_p ⊗ b_p in registers, row p of B at `row(p)`: constant trip counts let LLVM unroll i and j,
/// keep the 12 vector accumulators in registers and turn each row update into two broadcast-FMAs.
#[inline(always)]
fn tile_sum<const FMA: bool>(
    t: TileArgs,
    a: &[f32],
    b: &[f32],
    row: impl Fn(usize) -> usize,
) -> [[f32; NR_PLAIN]; MR_PLAIN] {
    let kc = t.kc;
    let a_rows: [&[f32]; MR_PLAIN] = std::array::from_fn(|i| &a[i * t.sa..][..kc]);
    let mut acc = [[0f32; NR_PLAIN]; MR_PLAIN];
    for p in 0..kc {
        let bp: &[f32; NR_PLAIN] = b[row(p)..][..NR_PLAIN].try_into().unwrap();
        for i in 0..MR_PLAIN {
            let av = a_rows[i][p];
            for j in 0..NR_PLAIN {
                acc[i][j] = if FMA { av.mul_add(bp[j], acc[i][j]) } else { acc[i][j] + av * bp[j] };
            }
        }
    }
    acc
}

type Lanes = [f32; LANES];

/// Dot products of DM rows of A with DN rows of B over `segs`: LANES-wide partial sums over the
/// whole vectors of every segment, reduced in a fixed tree order, then each segment's tail in order.
#[inline(always)]
fn dot_body<const FMA: bool>(a: &[&[f32]; DM], b: &[&[f32]; DN], segs: Segs) -> [[f32; DN]; DM] {
    let nq = segs.len / LANES;
    let mut acc = [[[0f32; LANES]; DN]; DM];
    for s in 0..segs.count {
        let av: [&[Lanes]; DM] = std::array::from_fn(|i| &a[i][s * segs.a_step..].as_chunks::<LANES>().0[..nq]);
        let bv: [&[Lanes]; DN] = std::array::from_fn(|j| &b[j][s * segs.b_step..].as_chunks::<LANES>().0[..nq]);
        dot_lanes::<FMA>(&av, &bv, nq, &mut acc);
    }
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let v = &acc[i][j];
            let mut sum = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
            for s in 0..segs.count {
                let (ar, br) = (&a[i][s * segs.a_step..], &b[j][s * segs.b_step..]);
                for p in nq * LANES..segs.len {
                    sum = if FMA { ar[p].mul_add(br[p], sum) } else { sum + ar[p] * br[p] };
                }
            }
            sum
        })
    })
}

/// The vector part of `dot_body`: acc[i][j] += a[i][q] ⊙ b[j][q] lane-wise for q in 0..nq
/// (a function of its own, so that LLVM keeps the 12 accumulators in registers).
#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[&[Lanes]; DM], b: &[&[Lanes]; DN], nq: usize, out: &mut [[Lanes; DN]; DM]) {
    let mut acc = *out;
    for q in 0..nq {
        let bq: [Lanes; DN] = std::array::from_fn(|j| b[j][q]);
        for (ai, acc_i) in a.iter().zip(acc.iter_mut()) {
            for (bj, c) in bq.iter().zip(acc_i.iter_mut()) {
                for l in 0..LANES {
                    c[l] = if FMA { ai[q][l].mul_add(bj[l], c[l]) } else { c[l] + ai[q][l] * bj[l] };
                }
            }
        }
    }
    *out = acc;
}

/// The AVX-512 kernels, written with intrinsics (callers must check that the CPU has AVX-512F).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{BRows, Segs, TileArgs, DM, DN};
    use std::arch::x86_64::*;

    /// The 12×32 tile kernel for t.rows ≤ 12 rows: each row count is its own instance, so the
    /// accumulators stay in registers and a short sliver costs no FMAs on padding; B rows at a fixed
    /// stride and B rows from a table are separate instances too.
    /// SAFETY: AVX-512F present; a[i·sa + p] for i < rows, p < kc, b[p·step..][..32] or b[offs[p]..][..32] for p < kc
    /// and c's `rows` rows of 32 floats (`ldc` apart) in bounds.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(t: TileArgs, a: &[f32], b: &[f32], rows: BRows, c: &mut [f32]) {
        macro_rules! rows {
            ($($r:literal)*) => {
                match (t.rows, rows) {
                    $(($r, BRows::Step(step)) => tile_rows::<$r, false>(t, a, b, step, &[], c),
                      ($r, BRows::Table { offs, .. }) => tile_rows::<$r, true>(t, a, b, 0, offs, c),)*
                    _ => unreachable!("tile rows {}", t.rows),
                }
            };
        }
        rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_rows<const R: usize, const TABLE: bool>(
        t: TileArgs,
        a: &[f32],
        b: &[f32],
        step: usize,
        offs: &[usize],
        c: &mut [f32],
    ) {
        let (ap, bp, sa, ldc) = (a.as_ptr(), b.as_ptr(), t.sa, t.ldc);
        // Ask for C's lines now, so that they arrive while the FMAs run (C is read when β ≠ 0,
        // and written in any case; measured 75 → 79 % of the peak at 1024³ with 256-deep slabs).
        for i in 0..R {
            let cp = c.as_ptr().add(i * ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(cp);
            _mm_prefetch::<_MM_HINT_T0>(cp.add(64));
            _mm_prefetch::<_MM_HINT_T0>(cp.add(124));
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..t.kc {
            let row = if TABLE { bp.add(*offs.get_unchecked(p)) } else { bp.add(p * step) };
            let (b0, b1) = (_mm512_loadu_ps(row), _mm512_loadu_ps(row.add(16)));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(i * sa + p));
                acc_i[0] = _mm512_fmadd_ps(av, b0, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(av, b1, acc_i[1]);
            }
        }
        // α·t + β·c, unfused, as the plain-Rust kernel rounds it.
        let (va, vb) = (_mm512_set1_ps(t.alpha), _mm512_set1_ps(t.beta));
        for (i, acc_i) in acc.iter().enumerate() {
            let cp = c.as_mut_ptr().add(i * ldc);
            for (h, &v) in acc_i.iter().enumerate() {
                let scaled = _mm512_mul_ps(va, v);
                let out = if t.beta == 0.0 {
                    scaled
                } else {
                    _mm512_add_ps(scaled, _mm512_mul_ps(vb, _mm512_loadu_ps(cp.add(16 * h))))
                };
                _mm512_storeu_ps(cp.add(16 * h), out);
            }
        }
    }

    /// DM×DN dot products over `segs`, in 16 lanes (each segment's tail loaded under a mask, as
    /// zeros beyond it), reduced by `_mm512_reduce_add_ps`.
    /// SAFETY: AVX-512F present; every row holds segs.span(step) floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(a: &[&[f32]; DM], b: &[&[f32]; DN], segs: Segs) -> [[f32; DN]; DM] {
        let (full, rem) = (segs.len / 16, segs.len % 16);
        let mask: __mmask16 = ((1u32 << rem) - 1) as __mmask16;
        let mut acc = [[_mm512_setzero_ps(); DN]; DM];
        for s in 0..segs.count {
            let ap: [*const f32; DM] = std::array::from_fn(|i| a[i].as_ptr().add(s * segs.a_step));
            let bp: [*const f32; DN] = std::array::from_fn(|j| b[j].as_ptr().add(s * segs.b_step));
            for q in 0..full {
                let bv: [__m512; DN] = std::array::from_fn(|j| _mm512_loadu_ps(bp[j].add(16 * q)));
                for i in 0..DM {
                    let av = _mm512_loadu_ps(ap[i].add(16 * q));
                    for j in 0..DN {
                        acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
                    }
                }
            }
            if rem > 0 {
                let bv: [__m512; DN] = std::array::from_fn(|j| _mm512_maskz_loadu_ps(mask, bp[j].add(16 * full)));
                for i in 0..DM {
                    let av = _mm512_maskz_loadu_ps(mask, ap[i].add(16 * full));
                    for j in 0..DN {
                        acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
                    }
                }
            }
        }
        std::array::from_fn(|i| std::array::from_fn(|j| _mm512_reduce_add_ps(acc[i][j])))
    }

    /// GFLOP/s of 12 independent 16-lane FMA chains over `iters` rounds on this thread.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop(iters: usize) -> f32 {
        let (m, c) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
        let mut acc: [__m512; 12] = std::array::from_fn(|i| _mm512_set1_ps(i as f32));
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, c);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }
}

/// The FMA loop of `fma_peak` for AVX2 (12 independent 8-lane chains).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let (m, c) = (_mm256_set1_ps(0.999), _mm256_set1_ps(1e-3));
    let mut acc: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, m, c);
        }
    }
    let mut out = [0f32; 8];
    let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out.iter().sum()
}

/// The machine's FMA peak in GFLOP/s for the kernels' ISA on `threads` threads: a tiny loop of
/// independent vector FMAs (no memory traffic) run for about `secs` on each thread at once — the
/// ceiling that GEMM efficiency is quoted against. The portable build reports 0 (no FMA loop).
pub fn fma_peak(threads: usize, secs: f64) -> f64 {
    let isa = isa();
    let (lanes, run): (f64, fn(usize) -> f32) = match isa {
        // SAFETY: `isa()` only returns ISAs this CPU supports.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (16.0, |n| unsafe { avx512::fma_loop(n) }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (8.0, |n| unsafe { fma_loop_avx2(n) }),
        _ => return 0.0,
    };
    // Calibrate the round count on one thread, then time all threads together.
    let mut iters = 1 << 16;
    loop {
        let t = std::time::Instant::now();
        std::hint::black_box(run(iters));
        let dt = t.elapsed().as_secs_f64();
        if dt > secs / 4.0 || iters > 1 << 30 {
            iters = ((iters as f64) * secs / dt.max(1e-9)) as usize;
            break;
        }
        iters *= 4;
    }
    let threads = threads.max(1);
    let t = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| std::hint::black_box(run(iters)));
        }
        std::hint::black_box(run(iters));
    });
    let flops = threads as f64 * iters as f64 * 12.0 * lanes * 2.0;
    flops / t.elapsed().as_secs_f64() / 1e9
}
