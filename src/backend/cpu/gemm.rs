//! Single-precision matrix multiply for the CPU backend: C = α·op(A)·op(B) + β·C, all row-major.
//!
//! Design (the Goto/BLIS layering):
//! - k is cut into KC-deep slabs; within a slab op(B) is cut into NC-wide column blocks and op(A)
//!   into MC-tall row blocks. A is packed into MR-row slivers laid out [kc][MR]; B into NR-column
//!   slivers [kc][NR], except that when B is not transposed its full slivers are read in place (its
//!   rows are already contiguous). Edges are zero-padded, so the micro-kernel always runs whole tiles.
//! - The micro-kernel keeps an MR×NR tile of C in registers (6×16 = 12 of the 16 AVX2 registers) and
//!   does one rank-1 update per k. It is plain Rust that LLVM unrolls and vectorises; a copy compiled
//!   with `avx2,fma` is chosen at run time when the CPU has them.
//! - A·Bᵀ with C small and k long (conv weight gradients) skips packing, which would be a transpose
//!   costing as much as the product, and takes dot products of the rows as they lie (`run_dots`).
//! - Threads (std::thread::scope) split C into disjoint row blocks, or column blocks when C has too
//!   few row tiles. `MTCOOL_THREADS` overrides the thread count (1 = single thread).
//!
//! Determinism: which path runs depends on the shape only, and on each path every element of C is
//! the same chain of multiply-adds in the same order whichever tile, block or thread computes it (edge
//! tiles run the full kernel on padded data), so results do not depend on the thread count.

use std::cell::RefCell;

/// Rows of the register tile.
const MR: usize = 6;
/// Columns of the register tile (two 8-wide vectors).
const NR: usize = 16;
/// Depth of a packed slab: an MR×KC A sliver plus a KC×NR B sliver (22 KiB) stay in L1.
const KC: usize = 256;
/// Rows of a packed A block (MC×KC floats = 96 KiB, L2 resident).
const MC: usize = 96;
/// Columns of a packed B block (KC×NC floats = 2 MiB at most).
const NC: usize = 2048;
/// Rows of A and of B per tile of the dot-product kernel: DM·DN accumulators of LANES floats.
const DM: usize = 4;
const DN: usize = 3;
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

/// Splits `data` into items of `item_len` floats and calls `f(first_item_index, items)` on `threads`
/// contiguous runs of items, one per thread (the last run on the calling thread).
pub fn parallel_items<F>(data: &mut [f32], item_len: usize, threads: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let items = data.len() / item_len.max(1);
    let threads = threads.clamp(1, items.max(1));
    if threads == 1 {
        return f(0, data);
    }
    let per = items.div_ceil(threads);
    std::thread::scope(|s| {
        let mut chunks = data.chunks_mut(per * item_len).enumerate().peekable();
        while let Some((t, chunk)) = chunks.next() {
            let f = &f;
            if chunks.peek().is_some() {
                s.spawn(move || f(t * per, chunk));
            } else {
                f(t * per, chunk);
            }
        }
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
    let (m_tiles, n_tiles) = (m.div_ceil(MR), n.div_ceil(NR));
    let threads = if m * n * k < PAR_MIN_MACS { 1 } else { threads.clamp(1, m_tiles.max(n_tiles)) };
    if threads == 1 {
        job.run(m, n, c, ldc, kernels);
    } else if m_tiles >= threads || m_tiles >= n_tiles {
        // Row blocks: disjoint row ranges of C are disjoint slices.
        let rows_per = m_tiles.div_ceil(threads) * MR;
        std::thread::scope(|s| {
            let (mut rest, mut r0) = (c, 0);
            while r0 < m {
                let rows = rows_per.min(m - r0);
                let part = Job { a: job.a.offset(r0, 0), ..job };
                if r0 + rows == m {
                    part.run(rows, n, rest, ldc, kernels);
                    break;
                }
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows * ldc);
                rest = tail;
                s.spawn(move || part.run(rows, n, mine, ldc, kernels));
                r0 += rows;
            }
        });
    } else {
        // Column blocks interleave in memory: each thread works on a private m×nc copy of its
        // columns (the same arithmetic as in place), copied back afterwards.
        let cols_per = n_tiles.div_ceil(threads) * NR;
        let blocks: Vec<(usize, usize, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .step_by(cols_per)
                .map(|c0| {
                    let nc = cols_per.min(n - c0);
                    let mut buf = vec![0f32; m * nc];
                    if beta != 0.0 {
                        for (i, row) in buf.chunks_exact_mut(nc).enumerate() {
                            row.copy_from_slice(&c[i * ldc + c0..][..nc]);
                        }
                    }
                    let part = Job { b: job.b.offset(0, c0), ..job };
                    s.spawn(move || {
                        part.run(m, nc, &mut buf, nc, kernels);
                        (c0, nc, buf)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("sgemm worker panicked")).collect()
        });
        for (c0, nc, buf) in blocks {
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

thread_local! {
    /// Per-thread packing buffers (A block, B block), grown on demand and reused across calls.
    static PACK: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl Job<'_> {
    /// One thread's share: the m×n block of C in `c` (rows `ldc` apart).
    fn run(&self, m: usize, n: usize, c: &mut [f32], ldc: usize, kernels: Kernels) {
        let Job { k, alpha, a, b, .. } = *self;
        if self.dots {
            return self.run_dots(m, n, c, ldc, kernels.dot);
        }
        PACK.with(|bufs| {
            let (ap, bp) = &mut *bufs.borrow_mut();
            let (kc_max, mc_max, nc_max) = (KC.min(k), MC.min(m.div_ceil(MR) * MR), NC.min(n.div_ceil(NR) * NR));
            ap.resize(ap.len().max(mc_max * kc_max), 0.0);
            bp.resize(bp.len().max(nc_max * kc_max), 0.0);
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                // Full slivers of a non-transposed B are read in place, `b.rs` apart.
                let in_place = if b.cs == 1 { nc / NR } else { 0 };
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    // The first slab applies the caller's β; later slabs accumulate onto it.
                    let beta = if pc == 0 { self.beta } else { 1.0 };
                    pack_b(b.offset(pc, jc + in_place * NR), kc, nc - in_place * NR, bp);
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        pack_a(a.offset(ic, pc), mc, kc, ap);
                        for jr in 0..nc.div_ceil(NR) {
                            let (b_sliver, ldb) = if jr < in_place {
                                (b.offset(pc, jc + jr * NR).data, b.rs)
                            } else {
                                (&bp[(jr - in_place) * NR * kc..][..NR * kc], NR)
                            };
                            for ir in 0..mc.div_ceil(MR) {
                                let a_sliver = &ap[ir * MR * kc..][..MR * kc];
                                let (r0, c0) = (ic + ir * MR, jc + jr * NR);
                                let (rows, cols) = (MR.min(m - r0), NR.min(n - c0));
                                if rows == MR && cols == NR {
                                    (kernels.tile)(a_sliver, b_sliver, ldb, &mut c[r0 * ldc + c0..], ldc, alpha, beta);
                                    continue;
                                }
                                // Ragged edge: run the same kernel on a copy of the tile's valid part.
                                let mut tile = [[0f32; NR]; MR];
                                for (i, t) in tile.iter_mut().take(rows).enumerate() {
                                    copy_prefix::<NR>(t, &c[(r0 + i) * ldc + c0..], cols);
                                }
                                (kernels.tile)(a_sliver, b_sliver, ldb, tile.as_flattened_mut(), NR, alpha, beta);
                                for (i, t) in tile.iter().take(rows).enumerate() {
                                    copy_prefix::<NR>(&mut c[(r0 + i) * ldc + c0..], t, cols);
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    /// C = α·A·Bᵀ + β·C with the rows of A (m×k) and of Bᵀ (n×k) contiguous: DM×DN tiles of row
    /// dot products, no packing. Tiles hanging over the edge repeat the last row (results dropped).
    fn run_dots(&self, m: usize, n: usize, c: &mut [f32], ldc: usize, kernel: DotKernel) {
        let Job { k, alpha, beta, a, b, .. } = *self;
        for i0 in (0..m).step_by(DM) {
            let a_rows: [&[f32]; DM] = std::array::from_fn(|i| &a.data[(i0 + i).min(m - 1) * a.rs..][..k]);
            for j0 in (0..n).step_by(DN) {
                let b_rows: [&[f32]; DN] = std::array::from_fn(|j| &b.data[(j0 + j).min(n - 1) * b.cs..][..k]);
                let dots = kernel(&a_rows, &b_rows);
                for (i, row) in dots.iter().enumerate().take(m - i0) {
                    let crow = c[(i0 + i) * ldc + j0..].iter_mut();
                    for (cv, &t) in crow.zip(row).take(n - j0) {
                        *cv = if beta == 0.0 { alpha * t } else { alpha * t + beta * *cv };
                    }
                }
            }
        }
    }
}

/// dst[..len] = src[..len] for len ≤ FULL; inline when len = FULL (a memcpy call costs more here).
fn copy_prefix<const FULL: usize>(dst: &mut [f32], src: &[f32], len: usize) {
    if len == FULL {
        dst[..FULL].copy_from_slice(&src[..FULL]);
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

/// Packs the mc×kc block of `a` into MR-row slivers, each laid out [kc][MR], zero-padding the last.
fn pack_a(a: View, mc: usize, kc: usize, dst: &mut [f32]) {
    for (t, sliver) in dst.chunks_exact_mut(MR * kc).take(mc.div_ceil(MR)).enumerate() {
        let rows = MR.min(mc - t * MR);
        if rows < MR {
            sliver.fill(0.0);
        }
        if a.cs == 1 {
            // A not transposed: read each row contiguously, write it with stride MR.
            for i in 0..rows {
                let src = &a.data[(t * MR + i) * a.rs..][..kc];
                sliver.iter_mut().skip(i).step_by(MR).zip(src).for_each(|(d, &v)| *d = v);
            }
        } else {
            // A transposed: the MR values of column p are contiguous.
            for (p, out) in sliver.chunks_exact_mut(MR).enumerate() {
                copy_prefix::<MR>(out, &a.data[p * a.cs + t * MR..], rows);
            }
        }
    }
}

/// Packs the kc×nc block of `b` into NR-column slivers, each laid out [kc][NR], zero-padding the last.
fn pack_b(b: View, kc: usize, nc: usize, dst: &mut [f32]) {
    for (t, sliver) in dst.chunks_exact_mut(NR * kc).take(nc.div_ceil(NR)).enumerate() {
        let (j0, cols) = (t * NR, NR.min(nc - t * NR));
        if cols < NR {
            sliver.fill(0.0);
        }
        if b.cs == 1 {
            // B not transposed: row p of the sliver is contiguous.
            for (p, out) in sliver.chunks_exact_mut(NR).enumerate() {
                copy_prefix::<NR>(out, &b.data[p * b.rs + j0..], cols);
            }
        } else {
            // B transposed: read each column of op(B) contiguously, write it with stride NR.
            for j in 0..cols {
                let src = &b.data[(j0 + j) * b.cs..][..kc];
                sliver.iter_mut().skip(j).step_by(NR).zip(src).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

// ---------------------------------------------------------------- micro-kernels

/// A tile kernel (see `tile_body`): (a, b, ldb, c, ldc, α, β).
type TileKernel = fn(&[f32], &[f32], usize, &mut [f32], usize, f32, f32);
/// A dot-product kernel (see `dot_body`).
type DotKernel = fn(&[&[f32]; DM], &[&[f32]; DN]) -> [[f32; DN]; DM];
type Lanes = [f32; LANES];

/// The micro-kernels for this CPU.
#[derive(Clone, Copy)]
struct Kernels {
    tile: TileKernel,
    dot: DotKernel,
}

impl Kernels {
    fn select() -> Kernels {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features these functions are compiled for were just detected.
            return Kernels {
                tile: |a, b, ldb, c, ldc, alpha, beta| unsafe { avx2::tile(a, b, ldb, c, ldc, alpha, beta) },
                dot: |a, b| unsafe { avx2::dot(a, b) },
            };
        }
        // Portable: SSE2 on baseline x86-64, NEON on aarch64.
        Kernels {
            tile: |a, b, ldb, c, ldc, alpha, beta| tile_body::<false>(a, b, ldb, c, ldc, alpha, beta),
            dot: dot_body::<false>,
        }
    }
}

/// The kernels compiled for AVX2 + FMA (callers must check that the CPU has both).
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod avx2 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(a: &[f32], b: &[f32], ldb: usize, c: &mut [f32], ldc: usize, alpha: f32, beta: f32) {
        tile_body::<true>(a, b, ldb, c, ldc, alpha, beta)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[&[f32]; DM], b: &[&[f32]; DN]) -> [[f32; DN]; DM] {
        dot_body::<true>(a, b)
    }
}

/// The tile kernel: the MR×NR tile at the start of `c` (rows `ldc` apart) becomes
/// α·Σ_p a_p ⊗ b_p + β·tile (β = 0: the old tile is not read), with a_p = a[p·MR..][..MR] (packed A)
/// and b_p = b[p·ldb..][..NR] for p in 0..a.len()/MR. Products are fused when `FMA`.
#[inline(always)]
fn tile_body<const FMA: bool>(a: &[f32], b: &[f32], ldb: usize, c: &mut [f32], ldc: usize, alpha: f32, beta: f32) {
    let acc = tile_sum::<FMA>(a, b, ldb);
    for (i, row) in acc.iter().enumerate() {
        let crow: &mut [f32; NR] = (&mut c[i * ldc..][..NR]).try_into().unwrap();
        if beta == 0.0 {
            crow.iter_mut().zip(row).for_each(|(cv, &t)| *cv = alpha * t);
        } else {
            crow.iter_mut().zip(row).for_each(|(cv, &t)| *cv = alpha * t + beta * *cv);
        }
    }
}

/// Σ_p a_p ⊗ b_p in registers: constant trip counts let LLVM unroll i and j, keep the 12 vector
/// accumulators in registers and turn each row update into two broadcast-FMAs.
#[inline(always)]
fn tile_sum<const FMA: bool>(a: &[f32], b: &[f32], ldb: usize) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for (p, ap) in a.chunks_exact(MR).enumerate() {
        let ap: &[f32; MR] = ap.try_into().unwrap();
        let bp: &[f32; NR] = b[p * ldb..][..NR].try_into().unwrap();
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = if FMA { ap[i].mul_add(bp[j], acc[i][j]) } else { acc[i][j] + ap[i] * bp[j] };
            }
        }
    }
    acc
}

/// Dot products of DM rows of A with DN rows of B (all of one length k): LANES-wide partial sums
/// over k, reduced in a fixed tree order, then the k % LANES tail.
#[inline(always)]
fn dot_body<const FMA: bool>(a: &[&[f32]; DM], b: &[&[f32]; DN]) -> [[f32; DN]; DM] {
    let k = a[0].len();
    let nq = k / LANES;
    let av: [&[Lanes]; DM] = std::array::from_fn(|i| &a[i].as_chunks::<LANES>().0[..nq]);
    let bv: [&[Lanes]; DN] = std::array::from_fn(|j| &b[j].as_chunks::<LANES>().0[..nq]);
    let acc = dot_lanes::<FMA>(&av, &bv, nq);
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let v = &acc[i][j];
            let mut s = ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
            for p in nq * LANES..k {
                s = if FMA { a[i][p].mul_add(b[j][p], s) } else { s + a[i][p] * b[j][p] };
            }
            s
        })
    })
}

/// The vector part of `dot_body`: acc[i][j] += a[i][q] ⊙ b[j][q] lane-wise for q in 0..nq
/// (a function of its own, so that LLVM keeps the 12 accumulators in registers).
#[inline(always)]
fn dot_lanes<const FMA: bool>(a: &[&[Lanes]; DM], b: &[&[Lanes]; DN], nq: usize) -> [[Lanes; DN]; DM] {
    let mut acc = [[[0f32; LANES]; DN]; DM];
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
    acc
}
