//! Attention-op wrappers: kernels/attention.cu, CPU reference src/backend/cpu/attention.rs.
//!
//! `bmm` is one launch of `bmm_XY` (the sgemm tiles with the batch on grid z); its backward is two
//! more, each writing its gradient in the stored layout of its input, as the CPU's `bmm_backward`.

use anyhow::{ensure, Result};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::linear::{tile_cfg, MAX_ELEMS};
use super::{Gpu, GpuTensor, BLOCK};

/// (batch, rows, cols) of a 3-d tensor small enough for the kernels' 32-bit tile indices.
fn dims3(op: &str, what: &str, t: &GpuTensor) -> Result<(usize, usize, usize)> {
    ensure!(t.shape.len() == 3, "{op}: {what} must be [B, rows, cols], got {:?}", t.shape);
    ensure!(t.numel() <= MAX_ELEMS, "{op}: {what} has {} elements, over the limit {MAX_ELEMS}", t.numel());
    Ok((t.shape[0], t.shape[1], t.shape[2]))
}

/// (B, M, K, N) of op(a) · op(b).
fn bmm_dims(a: &GpuTensor, ta: bool, b: &GpuTensor, tb: bool) -> Result<(usize, usize, usize, usize)> {
    let (ba, ar, ac) = dims3("bmm", "a", a)?;
    let (bb, br, bc) = dims3("bmm", "b", b)?;
    ensure!(ba == bb, "bmm: batch sizes differ: a {:?}, b {:?}", a.shape, b.shape);
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if tb { (bc, br) } else { (br, bc) };
    ensure!(k == kb, "bmm: inner dims differ: op(a) {m}x{k} (a {:?}), op(b) {kb}x{n} (b {:?})", a.shape, b.shape);
    Ok((ba, m, k, n))
}

impl Gpu {
    /// Per batch item, c = op(a) · op(b) on stored buffers: op(a) m×k, op(b) k×n, c m×n.
    #[allow(clippy::too_many_arguments)]
    fn bmm_raw(
        &self,
        batch: usize,
        ta: bool,
        tb: bool,
        (m, n, k): (usize, usize, usize),
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        let name = match (ta, tb) {
            (false, false) => "bmm_nn",
            (false, true) => "bmm_nt",
            (true, false) => "bmm_tn",
            (true, true) => "bmm_tt",
        };
        let mut cfg = tile_cfg(name, m, n, 1)?;
        ensure!(batch <= 65_535, "{name}: batch {batch} exceeds the grid limit 65535");
        cfg.grid_dim.2 = batch as u32;
        let (lda, ldb) = (if ta { m } else { k } as i32, if tb { k } else { n } as i32);
        let (m32, n32, k32) = (m as i32, n as i32, k as i32);
        let (sa, sb) = ((m * k) as u64, (k * n) as u64);
        self.work(2.0 * (batch * m * n * k) as f64, 0.0);
        self.launch(name, cfg, |l| {
            l.arg(c).arg(a).arg(b).arg(&m32).arg(&n32).arg(&k32).arg(&lda).arg(&ldb).arg(&sa).arg(&sb);
        })
    }

    /// y[i] = op(a[i]) · op(b[i]); y: [B, M, N].
    pub(super) fn bmm_into(&self, a: &GpuTensor, ta: bool, b: &GpuTensor, tb: bool, y: &mut GpuTensor) -> Result<()> {
        let (batch, m, k, n) = bmm_dims(a, ta, b, tb)?;
        ensure!(y.shape == [batch, m, n], "bmm: output shape {:?}, expected [{batch}, {m}, {n}]", y.shape);
        self.bmm_raw(batch, ta, tb, (m, n, k), &a.buf, &b.buf, &mut y.buf)
    }
    pub fn bmm(&self, a: &GpuTensor, ta: bool, b: &GpuTensor, tb: bool) -> Result<GpuTensor> {
        let (batch, m, _, n) = bmm_dims(a, ta, b, tb)?;
        let mut y = self.empty(&[batch, m, n])?;
        self.bmm_into(a, ta, b, tb, &mut y)?;
        Ok(y)
    }

    /// Gradients of y = bmm(a, ta, b, tb) in the stored layouts of a and b.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bmm_backward_into(
        &self,
        a: &GpuTensor,
        ta: bool,
        b: &GpuTensor,
        tb: bool,
        dy: &GpuTensor,
        da: &mut GpuTensor,
        db: &mut GpuTensor,
    ) -> Result<()> {
        let (batch, m, k, n) = bmm_dims(a, ta, b, tb)?;
        ensure!(dy.shape == [batch, m, n], "bmm_backward: dy {:?} for y [{batch}, {m}, {n}]", dy.shape);
        ensure!(
            da.shape == a.shape && db.shape == b.shape,
            "bmm_backward: da {:?} / db {:?} must match a / b",
            da.shape,
            db.shape
        );
        if ta {
            self.bmm_raw(batch, tb, true, (k, m, n), &b.buf, &dy.buf, &mut da.buf)?;
        } else {
            self.bmm_raw(batch, false, !tb, (m, k, n), &dy.buf, &b.buf, &mut da.buf)?;
        }
        if tb {
            self.bmm_raw(batch, true, ta, (n, k, m), &dy.buf, &a.buf, &mut db.buf)
        } else {
            self.bmm_raw(batch, !ta, false, (k, n, m), &a.buf, &dy.buf, &mut db.buf)
        }
    }

    /// Warp-per-row launch over `rows` rows.
    fn rows_cfg(&self, rows: usize) -> LaunchConfig {
        let warps_per_block = (BLOCK / 32) as usize;
        let blocks = rows.div_ceil(warps_per_block).clamp(1, self.max_blocks as usize) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// Softmax over the last axis.
    pub(super) fn softmax_lastdim_forward_into(&self, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(x.shape == y.shape, "softmax_lastdim: shapes {:?} -> {:?}", x.shape, y.shape);
        let cols = *x.shape.last().unwrap_or(&0);
        ensure!(cols > 0, "softmax_lastdim: empty last axis in {:?}", x.shape);
        let rows = x.numel() / cols;
        let (r64, c64) = (rows as u64, cols as u64);
        self.launch("softmax_lastdim_forward", self.rows_cfg(rows), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&r64).arg(&c64);
        })
    }
    pub fn softmax_lastdim_forward(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.softmax_lastdim_forward_into(x, &mut y)?;
        Ok(y)
    }

    /// dx from the forward output y.
    pub(super) fn softmax_lastdim_backward_into(
        &self,
        dy: &GpuTensor,
        y: &GpuTensor,
        dx: &mut GpuTensor,
    ) -> Result<()> {
        ensure!(
            dy.shape == y.shape && dx.shape == y.shape,
            "softmax_lastdim_backward: dy {:?}, y {:?}, dx {:?}",
            dy.shape,
            y.shape,
            dx.shape
        );
        let cols = *y.shape.last().unwrap_or(&0);
        ensure!(cols > 0, "softmax_lastdim_backward: empty last axis in {:?}", y.shape);
        let rows = y.numel() / cols;
        let (r64, c64) = (rows as u64, cols as u64);
        self.launch("softmax_lastdim_backward", self.rows_cfg(rows), |l| {
            l.arg(&mut *dx.buf).arg(&*dy.buf).arg(&*y.buf).arg(&r64).arg(&c64);
        })
    }

    /// y = x · σ(g).
    pub(super) fn sigmoid_gate_forward_into(&self, x: &GpuTensor, g: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(
            x.shape == g.shape && x.shape == y.shape,
            "sigmoid_gate: x {:?}, gate {:?}, y {:?}",
            x.shape,
            g.shape,
            y.shape
        );
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("sigmoid_gate_forward", self.cfg(n), |l| {
            l.arg(&mut *y.buf).arg(&*x.buf).arg(&*g.buf).arg(&n64);
        })
    }

    /// dx = dy · σ(g), dg = dy · x · σ(g)(1 − σ(g)).
    pub(super) fn sigmoid_gate_backward_into(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        g: &GpuTensor,
        dx: &mut GpuTensor,
        dg: &mut GpuTensor,
    ) -> Result<()> {
        let same = [&dy.shape, &g.shape, &dx.shape, &dg.shape].iter().all(|s| **s == x.shape);
        ensure!(
            same,
            "sigmoid_gate_backward: dy {:?}, x {:?}, gate {:?}, dx {:?}, dg {:?}",
            dy.shape,
            x.shape,
            g.shape,
            dx.shape,
            dg.shape
        );
        let n = x.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("sigmoid_gate_backward", self.cfg(n), |l| {
            l.arg(&mut *dx.buf).arg(&mut *dg.buf).arg(&*dy.buf).arg(&*x.buf).arg(&*g.buf).arg(&n64);
        })
    }

    /// (da, db) of `bmm`.
    pub fn bmm_backward(
        &self,
        a: &GpuTensor,
        ta: bool,
        b: &GpuTensor,
        tb: bool,
        dy: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let (mut da, mut db) = (self.empty(&a.shape)?, self.empty(&b.shape)?);
        self.bmm_backward_into(a, ta, b, tb, dy, &mut da, &mut db)?;
        Ok((da, db))
    }
    /// dx of `softmax_lastdim_forward` from its output `y`.
    pub fn softmax_lastdim_backward(&self, dy: &GpuTensor, y: &GpuTensor) -> Result<GpuTensor> {
        let mut dx = self.empty(&y.shape)?;
        self.softmax_lastdim_backward_into(dy, y, &mut dx)?;
        Ok(dx)
    }
    /// y = x · σ(g).
    pub fn sigmoid_gate_forward(&self, x: &GpuTensor, g: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.sigmoid_gate_forward_into(x, g, &mut y)?;
        Ok(y)
    }
    /// (dx, dg) of `sigmoid_gate_forward`.
    pub fn sigmoid_gate_backward(
        &self,
        dy: &GpuTensor,
        x: &GpuTensor,
        g: &GpuTensor,
    ) -> Result<(GpuTensor, GpuTensor)> {
        let (mut dx, mut dg) = (self.empty(&x.shape)?, self.empty(&x.shape)?);
        self.sigmoid_gate_backward_into(dy, x, g, &mut dx, &mut dg)?;
        Ok((dx, dg))
    }
}
