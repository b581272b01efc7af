//! Matrix multiply and linear-layer wrappers: kernels/linear.cu (tile loop in kernels/igemm.cuh),
//! CPU references src/backend/cpu/linear.rs and src/backend/cpu/gemm.rs (`sgemm`'s transposes).
//!
//! Every GEMM is one launch of `sgemm_XY`: 64×64 output tiles, 256 threads, f32 FMAs, which matches
//! the CPU within `parity::F32_TOL`. Functions taking a `tf32` flag run `sgemm_tf32_XY` instead when
//! it is true: tensor cores, inputs rounded to TF32 (10-bit mantissa), f32 accumulation, within
//! `parity::TF32_TOL`. Results are deterministic (fixed summation order, no atomics).

use anyhow::{ensure, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::{Gpu, GpuTensor};
use crate::noise::NoiseKey;

/// Side of a GEMM output tile (kernels/igemm.cuh MTC_BM, MTC_BN).
pub(super) const TILE: usize = 64;
/// Threads per GEMM block (MTC_GEMM_THREADS).
pub(super) const GEMM_THREADS: u32 = 256;
/// Largest tensor the GEMM kernels take: their indices are 32-bit with headroom.
pub(super) const MAX_ELEMS: usize = 1 << 30;

/// The weight noise of a fused noisy forward: kernels/igemm.cuh `MtcNoise` (same layout, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct NoiseArgs {
    seed: u64,
    step: u32,
    stream: u32,
    sample: u32,
    b: f32,
    w_offset: u32,
    b_offset: u32,
    /// Address of the step number to use instead of `step` (0: none); see [`Gpu::step_scalars`].
    step_ptr: u64,
}

// SAFETY: plain #[repr(C)] data with the layout of the C struct MtcNoise (40 bytes).
unsafe impl DeviceRepr for NoiseArgs {}

impl NoiseArgs {
    /// Checks that the Philox indices offset + i of w (and bias) stay below 2^32.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        op: &str,
        key: NoiseKey,
        b: f32,
        w: &GpuTensor,
        w_offset: u32,
        bias: Option<&GpuTensor>,
        b_offset: u32,
        step_ptr: u64,
    ) -> Result<NoiseArgs> {
        ensure!(b.is_finite(), "{op}: noise radius b = {b} is not finite");
        let fits = |offset: u32, n: usize| offset as u64 + n as u64 <= 1 << 32;
        ensure!(
            fits(w_offset, w.numel()),
            "{op}: weight offset {w_offset} + {} elements exceed the 2^32 Philox index space",
            w.numel()
        );
        if let Some(bias) = bias {
            ensure!(
                fits(b_offset, bias.numel()),
                "{op}: bias offset {b_offset} + {} elements exceed the 2^32 Philox index space",
                bias.numel()
            );
        }
        Ok(NoiseArgs {
            seed: key.seed,
            step: key.step,
            stream: key.stream,
            sample: key.sample,
            b,
            w_offset,
            b_offset,
            step_ptr,
        })
    }
}

/// Checks that a tensor is small enough for 32-bit kernel indices.
fn check_elems(op: &str, what: &str, t: &GpuTensor) -> Result<()> {
    ensure!(
        t.numel() <= MAX_ELEMS,
        "{op}: {what} has {} elements, more than the kernels' limit {MAX_ELEMS}",
        t.numel()
    );
    Ok(())
}

/// The launch of a tiled GEMM writing an m×n result (rows × columns), `splits` slices of k.
pub(super) fn tile_cfg(op: &str, m: usize, n: usize, splits: usize) -> Result<LaunchConfig> {
    let (gx, gy) = (n.div_ceil(TILE), m.div_ceil(TILE));
    ensure!(gy <= 65_535 && splits <= 65_535, "{op}: {m} rows / {splits} splits exceed the grid limits");
    Ok(LaunchConfig {
        grid_dim: (gx as u32, gy as u32, splits as u32),
        block_dim: (GEMM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn dims2(op: &str, what: &str, t: &GpuTensor) -> Result<(usize, usize)> {
    ensure!(t.shape.len() == 2, "{op}: {what} must be 2-d, got shape {:?}", t.shape);
    check_elems(op, what, t)?;
    Ok((t.shape[0], t.shape[1]))
}

fn check_bias(op: &str, bias: Option<&GpuTensor>, n: usize) -> Result<()> {
    if let Some(b) = bias {
        ensure!(b.shape == [n], "{op}: bias shape {:?} for {n} output columns", b.shape);
    }
    Ok(())
}

impl Gpu {
    /// c = op(a) · op(b) (+ bias[col]) with op = transpose when `trans_*` (as `gemm::sgemm` with
    /// α = 1, β = 0, or β = 1 onto a broadcast bias): op(a) is m×k, op(b) k×n, c is [m, n].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sgemm_into(
        &self,
        a: &GpuTensor,
        trans_a: bool,
        b: &GpuTensor,
        trans_b: bool,
        bias: Option<&GpuTensor>,
        tf32: bool,
        c: &mut GpuTensor,
    ) -> Result<()> {
        let (ar, ac) = dims2("sgemm", "a", a)?;
        let (br, bc) = dims2("sgemm", "b", b)?;
        let ((m, k), (kb, n)) = (if trans_a { (ac, ar) } else { (ar, ac) }, if trans_b { (bc, br) } else { (br, bc) });
        ensure!(
            k == kb,
            "sgemm: inner dims differ: op(a) is {m}x{k} (a {:?}), op(b) is {kb}x{n} (b {:?})",
            a.shape,
            b.shape
        );
        ensure!(c.shape == [m, n], "sgemm: output shape {:?}, expected [{m}, {n}]", c.shape);
        check_bias("sgemm", bias, n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let name = match (tf32, trans_a, trans_b) {
            (false, false, false) => "sgemm_nn",
            (false, false, true) => "sgemm_nt",
            (false, true, false) => "sgemm_tn",
            (false, true, true) => "sgemm_tt",
            (true, false, false) => "sgemm_tf32_nn",
            (true, false, true) => "sgemm_tf32_nt",
            (true, true, false) => "sgemm_tf32_tn",
            (true, true, true) => "sgemm_tf32_tt",
        };
        self.work(2.0 * (m * n * k) as f64, 0.0);
        let cfg = tile_cfg(name, m, n, 1)?;
        let has_bias = i32::from(bias.is_some());
        let bias_buf = bias.map_or(&*a.buf, |t| &*t.buf); // never read without a bias
        let (m32, n32, k32) = (m as i32, n as i32, k as i32);
        let (lda, ldb, ldc) = (ac as i32, bc as i32, n as i32);
        self.launch(name, cfg, |l| {
            l.arg(&mut *c.buf).arg(&*a.buf).arg(&*b.buf).arg(bias_buf).arg(&has_bias);
            l.arg(&m32).arg(&n32).arg(&k32).arg(&lda).arg(&ldb).arg(&ldc);
        })
    }

    /// Allocating [`Gpu::sgemm_into`].
    pub fn sgemm(
        &self,
        a: &GpuTensor,
        trans_a: bool,
        b: &GpuTensor,
        trans_b: bool,
        bias: Option<&GpuTensor>,
        tf32: bool,
    ) -> Result<GpuTensor> {
        ensure!(a.shape.len() == 2 && b.shape.len() == 2, "sgemm: a {:?} and b {:?} must be 2-d", a.shape, b.shape);
        let m = if trans_a { a.shape[1] } else { a.shape[0] };
        let n = if trans_b { b.shape[0] } else { b.shape[1] };
        let mut c = self.empty(&[m, n])?;
        self.sgemm_into(a, trans_a, b, trans_b, bias, tf32, &mut c)?;
        Ok(c)
    }

    /// y = a · b for a: [m, k], b: [k, n] → y: [m, n].
    pub fn matmul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.sgemm(a, false, b, false, None, false)
    }
    /// [`Gpu::matmul`] on TF32 tensor cores when `tf32`.
    pub fn matmul_with(&self, a: &GpuTensor, b: &GpuTensor, tf32: bool) -> Result<GpuTensor> {
        self.sgemm(a, false, b, false, None, tf32)
    }

    /// Gradients of y = a · b: da = dy · bᵀ ([m, k]), db = aᵀ · dy ([k, n]).
    pub(super) fn matmul_backward_into(
        &self,
        a: &GpuTensor,
        b: &GpuTensor,
        dy: &GpuTensor,
        da: &mut GpuTensor,
        db: &mut GpuTensor,
    ) -> Result<()> {
        let (m, k) = dims2("matmul_backward", "a", a)?;
        let (kb, n) = dims2("matmul_backward", "b", b)?;
        ensure!(k == kb, "matmul_backward: inner dims differ: a {:?}, b {:?}", a.shape, b.shape);
        ensure!(dy.shape == [m, n], "matmul_backward: dy shape {:?} for a {:?}, b {:?}", dy.shape, a.shape, b.shape);
        ensure!(
            da.shape == a.shape && db.shape == b.shape,
            "matmul_backward: da {:?} / db {:?} must match a / b",
            da.shape,
            db.shape
        );
        self.sgemm_into(dy, false, b, true, None, false, da)?;
        self.sgemm_into(a, true, dy, false, None, false, db)
    }
    pub fn matmul_backward(&self, a: &GpuTensor, b: &GpuTensor, dy: &GpuTensor) -> Result<(GpuTensor, GpuTensor)> {
        let (mut da, mut db) = (self.empty(&a.shape)?, self.empty(&b.shape)?);
        self.matmul_backward_into(a, b, dy, &mut da, &mut db)?;
        Ok((da, db))
    }

    /// y = x · wᵀ + b. x: [N, in], w: [out, in], b: [out] → y: [N, out] (bias added in the epilogue).
    pub fn linear_forward(&self, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>) -> Result<GpuTensor> {
        self.linear_forward_with(x, w, b, false)
    }
    /// [`Gpu::linear_forward`] on TF32 tensor cores when `tf32`.
    pub(super) fn linear_forward_with_into(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        tf32: bool,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let (_, fin) = dims2("linear_forward", "x", x)?;
        let (fout, win) = dims2("linear_forward", "w", w)?;
        ensure!(
            win == fin,
            "linear_forward: weight {:?} expects {win} input features, x {:?} has {fin}",
            w.shape,
            x.shape
        );
        check_bias("linear_forward", b, fout)?;
        self.sgemm_into(x, false, w, true, b, tf32, y)
    }
    pub fn linear_forward_with(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        tf32: bool,
    ) -> Result<GpuTensor> {
        ensure!(
            x.shape.len() == 2 && w.shape.len() == 2,
            "linear_forward: x {:?} and w {:?} must be 2-d",
            x.shape,
            w.shape
        );
        let mut y = self.empty(&[x.shape[0], w.shape[0]])?;
        self.linear_forward_with_into(x, w, b, tf32, &mut y)?;
        Ok(y)
    }

    /// y = x · (w + ε_w)ᵀ + (bias + ε_b) without a perturbed copy of θ: ε_w[i] = key.uniform(w_offset + i, b)
    /// for the flat index i of w, ε_b[o] = key.uniform(b_offset + o, b), drawn as the kernel reads them
    /// (equals `linear_forward(x, key.perturb(w, b, w_offset), key.perturb(bias, b, b_offset))`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn linear_forward_noisy_into(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        key: NoiseKey,
        b: f32,
        w_offset: u32,
        b_offset: u32,
        y: &mut GpuTensor,
    ) -> Result<()> {
        let op = "linear_forward_noisy";
        let (rows, fin) = dims2(op, "x", x)?;
        let (fout, win) = dims2(op, "w", w)?;
        ensure!(win == fin, "{op}: weight {:?} expects {win} input features, x {:?} has {fin}", w.shape, x.shape);
        check_bias(op, bias, fout)?;
        ensure!(y.shape == [rows, fout], "{op}: output shape {:?}, expected [{rows}, {fout}]", y.shape);
        let noise = NoiseArgs::new(op, key, b, w, w_offset, bias, b_offset, self.captured_step_ptr())?;
        if rows == 0 || fout == 0 {
            return Ok(());
        }
        let cfg = tile_cfg(op, rows, fout, 1)?;
        let has_bias = i32::from(bias.is_some());
        let bias_buf = bias.map_or(&*w.buf, |t| &*t.buf);
        let (r32, fin32, fout32) = (rows as i32, fin as i32, fout as i32);
        self.launch(op, cfg, |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&*w.buf).arg(bias_buf).arg(&has_bias);
            l.arg(&r32).arg(&fin32).arg(&fout32).arg(&noise);
        })
    }
    #[allow(clippy::too_many_arguments)]
    pub fn linear_forward_noisy(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        bias: Option<&GpuTensor>,
        key: NoiseKey,
        b: f32,
        w_offset: u32,
        b_offset: u32,
    ) -> Result<GpuTensor> {
        ensure!(
            x.shape.len() == 2 && w.shape.len() == 2,
            "linear_forward_noisy: x {:?} and w {:?} must be 2-d",
            x.shape,
            w.shape
        );
        let mut y = self.empty(&[x.shape[0], w.shape[0]])?;
        self.linear_forward_noisy_into(x, w, bias, key, b, w_offset, b_offset, &mut y)?;
        Ok(y)
    }

    /// Gradients of y = x · wᵀ + b: dx = dy · w ([N, in]), dw = dyᵀ · x ([out, in]), db = column sums of dy.
    pub(super) fn linear_backward_into(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
        dx: &mut GpuTensor,
        dw: &mut GpuTensor,
        db: &mut GpuTensor,
    ) -> Result<()> {
        let (n, fin) = dims2("linear_backward", "x", x)?;
        let (fout, win) = dims2("linear_backward", "w", w)?;
        ensure!(
            win == fin,
            "linear_backward: weight {:?} expects {win} input features, x {:?} has {fin}",
            w.shape,
            x.shape
        );
        ensure!(dy.shape == [n, fout], "linear_backward: dy shape {:?} for x {:?}, w {:?}", dy.shape, x.shape, w.shape);
        ensure!(
            dx.shape == x.shape && dw.shape == w.shape,
            "linear_backward: dx {:?} / dw {:?} must match x / w",
            dx.shape,
            dw.shape
        );
        self.sgemm_into(dy, false, w, false, None, false, dx)?;
        self.sgemm_into(dy, true, x, false, None, false, dw)?;
        self.linear_backward_bias_into(dy, db)
    }
    pub fn linear_backward(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        dy: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor, GpuTensor)> {
        ensure!(w.shape.len() == 2, "linear_backward: w {:?} must be 2-d", w.shape);
        let (mut dx, mut dw, mut db) = (self.empty(&x.shape)?, self.empty(&w.shape)?, self.empty(&[w.shape[0]])?);
        self.linear_backward_into(x, w, dy, &mut dx, &mut dw, &mut db)?;
        Ok((dx, dw, db))
    }

    /// db[o] = Σ_r dy[r, o] for dy: [N, out] (fixed-order sums in f64, no atomics).
    pub(super) fn linear_backward_bias_into(&self, dy: &GpuTensor, db: &mut GpuTensor) -> Result<()> {
        let (rows, cols) = dims2("linear_backward_bias", "dy", dy)?;
        ensure!(db.shape == [cols], "linear_backward_bias: db shape {:?} for {cols} columns", db.shape);
        if cols == 0 {
            return Ok(());
        }
        let cfg =
            LaunchConfig { grid_dim: (cols.div_ceil(32) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let (r32, c32) = (rows as i32, cols as i32);
        self.launch("linear_backward_bias", cfg, |l| {
            l.arg(&mut *db.buf).arg(&*dy.buf).arg(&r32).arg(&c32);
        })
    }
    pub fn linear_backward_bias(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        ensure!(dy.shape.len() == 2, "linear_backward_bias: dy {:?} must be 2-d", dy.shape);
        let mut db = self.empty(&[dy.shape[1]])?;
        self.linear_backward_bias_into(dy, &mut db)?;
        Ok(db)
    }
}
