//! The CUDA backend: one context, one non-default stream and the embedded kernels (`kernels/*.cu`,
//! see `crate::kernels`), with a typed Rust function per kernel. Each op has an `*_into` form writing
//! into an existing tensor (what the parity tests poison first) and an allocating form.
//!
//! Kernels are launched with 256 threads per block and a grid-stride loop over at most 32 blocks per
//! SM. Every launch is checked and names its kernel on failure; kernels run asynchronously, so a fault
//! inside one surfaces at the next synchronising call ([`Gpu::download`], [`Gpu::synchronize`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchArgs, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::kernels;
use crate::noise::{NoiseKey, WeightNoise};
use crate::optim::{AdamConfig, SgdConfig};
use crate::Tensor;

const BLOCK: u32 = 256;
const BLOCKS_PER_SM: u32 = 32;

/// A GPU with the kernels loaded.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    functions: HashMap<&'static str, CudaFunction>,
    max_blocks: u32,
}

/// An f32 tensor in GPU memory: contiguous, row-major; `buf.len()` equals the product of `shape`.
pub struct GpuTensor {
    pub shape: Vec<usize>,
    pub buf: CudaSlice<f32>,
}

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.buf.len()
    }
}

/// The b-box of a projected optimiser step: clamp θ into [snapshot − b, snapshot + b].
#[derive(Clone, Copy)]
pub struct GpuBox<'a> {
    pub snapshot: &'a GpuTensor,
    pub b: f32,
}

impl Gpu {
    /// Opens GPU `ordinal`: context, stream, module with every kernel of [`kernels::KERNEL_NAMES`].
    pub fn new(ordinal: usize) -> Result<Gpu> {
        let Some(fatbin) = kernels::fatbin() else {
            let why = kernels::unavailable_reason().unwrap_or("nvcc not found");
            bail!("GPU kernels were not compiled into this binary ({why}); run scripts/install-cuda-toolchain.sh and rebuild");
        };
        let info = crate::device::probe(ordinal).map_err(|why| anyhow!("cannot use GPU {ordinal}: {why}"))?;
        let ctx =
            CudaContext::new(ordinal).with_context(|| format!("creating a CUDA context on GPU {ordinal}"))?;
        let stream = ctx.new_stream().context("creating a CUDA stream")?;
        let module = ctx.load_module(Ptx::from_binary(fatbin.to_vec())).with_context(|| {
            format!("loading the kernels on {info} (built for sm_80/sm_90 + compute_90 PTX)")
        })?;
        let mut functions = HashMap::new();
        for &name in kernels::KERNEL_NAMES {
            let f = module
                .load_function(name)
                .with_context(|| format!("kernel {name} missing from the fatbin"))?;
            functions.insert(name, f);
        }
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .context("reading the SM count")?
            .max(1) as u32;
        Ok(Gpu { ctx, stream, _module: module, functions, max_blocks: sms * BLOCKS_PER_SM })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all queued work; reports the first asynchronous error (e.g. a faulting kernel).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().context("CUDA stream synchronize")
    }

    pub fn upload(&self, t: &Tensor) -> Result<GpuTensor> {
        let buf = self.stream.clone_htod(t.data()).context("copying a tensor to the GPU")?;
        Ok(GpuTensor { shape: t.shape().to_vec(), buf })
    }

    /// Copies to the host (waits for the kernels that produce `t`).
    pub fn download(&self, t: &GpuTensor) -> Result<Tensor> {
        let data = self.stream.clone_dtoh(&t.buf).context("copying a tensor from the GPU")?;
        Ok(Tensor::new(&t.shape, data)?)
    }

    pub fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        let buf = self.stream.alloc_zeros(shape.iter().product()).context("allocating GPU memory")?;
        Ok(GpuTensor { shape: shape.to_vec(), buf })
    }

    /// A tensor whose contents are unspecified (every kernel below writes all of its output).
    pub fn empty(&self, shape: &[usize]) -> Result<GpuTensor> {
        // SAFETY: f32 has no invalid bit patterns; callers overwrite the contents before reading.
        let buf =
            unsafe { self.stream.alloc::<f32>(shape.iter().product()) }.context("allocating GPU memory")?;
        Ok(GpuTensor { shape: shape.to_vec(), buf })
    }

    fn function(&self, name: &'static str) -> &CudaFunction {
        &self.functions[name]
    }

    /// A grid-stride launch over `n` elements.
    fn cfg(&self, n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, self.max_blocks as usize) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
    }

    /// Launches `name`; `args` must push exactly the kernel's parameters, in order, with its types.
    fn launch<'a>(
        &'a self,
        name: &'static str,
        cfg: LaunchConfig,
        args: impl FnOnce(&mut LaunchArgs<'a>),
    ) -> Result<()> {
        let mut builder = self.stream.launch_builder(self.function(name));
        args(&mut builder);
        // SAFETY: each caller below pushes the parameter list of `kernels/*.cu` for `name` (pointers
        // to buffers of at least `n` elements, then scalars of the declared C types).
        unsafe { builder.launch(cfg) }.map(|_| ()).with_context(|| format!("launching kernel {name}"))
    }

    // ---- elementwise (kernels/elementwise.cu) ----

    fn binary_into(&self, name: &'static str, a: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(
            a.shape == b.shape && a.shape == y.shape,
            "{name}: shapes {:?}, {:?} -> {:?}",
            a.shape,
            b.shape,
            y.shape
        );
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(name, self.cfg(n), |l| {
            l.arg(&mut y.buf).arg(&a.buf).arg(&b.buf).arg(&n64);
        })
    }

    fn binary(&self, name: &'static str, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&a.shape)?;
        self.binary_into(name, a, b, &mut y)?;
        Ok(y)
    }

    fn unary_into(&self, name: &'static str, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        ensure!(x.shape == y.shape, "{name}: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch(name, self.cfg(n), |l| {
            l.arg(&mut y.buf).arg(&x.buf).arg(&n64);
        })
    }

    fn unary(&self, name: &'static str, x: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.unary_into(name, x, &mut y)?;
        Ok(y)
    }

    pub fn add_into(&self, a: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.binary_into("add", a, b, y)
    }
    pub fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("add", a, b)
    }
    pub fn sub_into(&self, a: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.binary_into("sub", a, b, y)
    }
    pub fn sub(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("sub", a, b)
    }
    pub fn mul_into(&self, a: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.binary_into("mul", a, b, y)
    }
    pub fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.binary("mul", a, b)
    }

    pub fn scale_into(&self, x: &GpuTensor, s: f32, y: &mut GpuTensor) -> Result<()> {
        ensure!(x.shape == y.shape, "scale: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("scale", self.cfg(n), |l| {
            l.arg(&mut y.buf).arg(&x.buf).arg(&s).arg(&n64);
        })
    }
    pub fn scale(&self, x: &GpuTensor, s: f32) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.scale_into(x, s, &mut y)?;
        Ok(y)
    }

    pub fn relu_into(&self, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.unary_into("relu", x, y)
    }
    pub fn relu(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.unary("relu", x)
    }
    /// dx = dy where x > 0, else 0.
    pub fn relu_backward_into(&self, dy: &GpuTensor, x: &GpuTensor, dx: &mut GpuTensor) -> Result<()> {
        self.binary_into("relu_backward", dy, x, dx)
    }
    pub fn relu_backward(&self, dy: &GpuTensor, x: &GpuTensor) -> Result<GpuTensor> {
        self.binary("relu_backward", dy, x)
    }
    pub fn sigmoid_into(&self, x: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        self.unary_into("sigmoid", x, y)
    }
    pub fn sigmoid(&self, x: &GpuTensor) -> Result<GpuTensor> {
        self.unary("sigmoid", x)
    }
    /// dx = dy · y · (1 − y), from the forward output y.
    pub fn sigmoid_backward_into(&self, dy: &GpuTensor, y: &GpuTensor, dx: &mut GpuTensor) -> Result<()> {
        self.binary_into("sigmoid_backward", dy, y, dx)
    }
    pub fn sigmoid_backward(&self, dy: &GpuTensor, y: &GpuTensor) -> Result<GpuTensor> {
        self.binary("sigmoid_backward", dy, y)
    }

    /// `y[n, c, ...] = x[n, c, ...] + bias[c]` for x of shape `[N, C, ...]`.
    pub fn add_channel_bias_into(&self, x: &GpuTensor, bias: &GpuTensor, y: &mut GpuTensor) -> Result<()> {
        let (_, c, inner) = channel_dims(&x.shape)?;
        ensure!(bias.shape == [c], "add_channel_bias: bias shape {:?} for {c} channels", bias.shape);
        ensure!(x.shape == y.shape, "add_channel_bias: shapes {:?} -> {:?}", x.shape, y.shape);
        let n = y.numel();
        if n == 0 {
            return Ok(());
        }
        let (n64, c64, inner64) = (n as u64, c as u64, inner as u64);
        self.launch("add_channel_bias", self.cfg(n), |l| {
            l.arg(&mut y.buf).arg(&x.buf).arg(&bias.buf).arg(&n64).arg(&c64).arg(&inner64);
        })
    }
    pub fn add_channel_bias(&self, x: &GpuTensor, bias: &GpuTensor) -> Result<GpuTensor> {
        let mut y = self.empty(&x.shape)?;
        self.add_channel_bias_into(x, bias, &mut y)?;
        Ok(y)
    }

    /// `db[c]` = Σ over n and spatial positions of `dy[n, c, ...]` (one block per channel).
    pub fn add_channel_bias_backward_into(&self, dy: &GpuTensor, db: &mut GpuTensor) -> Result<()> {
        let (batch, c, inner) = channel_dims(&dy.shape)?;
        ensure!(db.shape == [c], "add_channel_bias_backward: db shape {:?} for {c} channels", db.shape);
        if c == 0 {
            return Ok(());
        }
        let blocks = c.min(i32::MAX as usize) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let (batch64, c64, inner64) = (batch as u64, c as u64, inner as u64);
        self.launch("add_channel_bias_backward", cfg, |l| {
            l.arg(&mut db.buf).arg(&dy.buf).arg(&batch64).arg(&c64).arg(&inner64);
        })
    }
    pub fn add_channel_bias_backward(&self, dy: &GpuTensor) -> Result<GpuTensor> {
        let (_, c, _) = channel_dims(&dy.shape)?;
        let mut db = self.empty(&[c])?;
        self.add_channel_bias_backward_into(dy, &mut db)?;
        Ok(db)
    }

    // ---- noise (kernels/noise.cu) ----

    /// `out[i]` = ε_i ∈ (−b, b), bit-identical to `key.uniform(i, b)`.
    pub fn noise_uniform_into(&self, key: NoiseKey, b: f32, out: &mut GpuTensor) -> Result<()> {
        let n = out.numel();
        ensure!(n as u64 <= 1 << 32, "noise_uniform: {n} elements exceed the 2^32 Philox index space");
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("noise_uniform", self.cfg(n), |l| {
            l.arg(&mut out.buf)
                .arg(&n64)
                .arg(&key.seed)
                .arg(&key.step)
                .arg(&key.stream)
                .arg(&key.sample)
                .arg(&b);
        })
    }
    /// A fresh `[n]` tensor of noise.
    pub fn noise_uniform(&self, key: NoiseKey, b: f32, n: usize) -> Result<GpuTensor> {
        let mut out = self.empty(&[n])?;
        self.noise_uniform_into(key, b, &mut out)?;
        Ok(out)
    }

    /// out = w + ε, bit-identical to `noise.key.perturb(w, noise.b, noise.offset)`.
    pub fn add_noise_into(&self, w: &GpuTensor, noise: WeightNoise, out: &mut GpuTensor) -> Result<()> {
        let WeightNoise { key, b, offset } = noise;
        ensure!(w.shape == out.shape, "add_noise: shapes {:?} -> {:?}", w.shape, out.shape);
        let n = out.numel();
        ensure!(offset as u64 + n as u64 <= 1 << 32, "add_noise: {n} elements exceed the 2^32 Philox index space");
        if n == 0 {
            return Ok(());
        }
        let n64 = n as u64;
        self.launch("add_noise", self.cfg(n), |l| {
            l.arg(&mut out.buf)
                .arg(&w.buf)
                .arg(&n64)
                .arg(&key.seed)
                .arg(&key.step)
                .arg(&key.stream)
                .arg(&key.sample)
                .arg(&b)
                .arg(&offset);
        })
    }
    pub fn add_noise(&self, w: &GpuTensor, noise: WeightNoise) -> Result<GpuTensor> {
        let mut out = self.empty(&w.shape)?;
        self.add_noise_into(w, noise, &mut out)?;
        Ok(out)
    }

    // ---- optimisers (kernels/optim.cu) ----

    /// One SGD step in place (`crate::optim::sgd_update`), then the optional b-box clamp.
    pub fn sgd_step(
        &self,
        theta: &mut GpuTensor,
        velocity: &mut GpuTensor,
        grad: &GpuTensor,
        cfg: SgdConfig,
        bbox: Option<GpuBox<'_>>,
    ) -> Result<()> {
        let n = theta.numel();
        ensure!(
            velocity.numel() == n && grad.numel() == n,
            "sgd_step: sizes θ {n}, v {}, g {}",
            velocity.numel(),
            grad.numel()
        );
        check_box("sgd_step", n, bbox)?;
        if n == 0 {
            return Ok(());
        }
        let (n64, null) = (n as u64, 0u64);
        let (b, project) = bbox.map_or((0.0f32, 0i32), |bx| (bx.b, 1));
        self.launch("sgd_step", self.cfg(n), |l| {
            l.arg(&mut theta.buf).arg(&mut velocity.buf).arg(&grad.buf);
            match bbox {
                Some(bx) => l.arg(&bx.snapshot.buf),
                None => l.arg(&null),
            };
            l.arg(&n64).arg(&cfg.lr).arg(&cfg.momentum).arg(&cfg.weight_decay).arg(&b).arg(&project);
        })
    }

    /// One Adam step in place (`crate::optim::adam_update`; bc1 = 1 − β1^t, bc2 = 1 − β2^t), then the
    /// optional b-box clamp.
    #[allow(clippy::too_many_arguments)]
    pub fn adam_step(
        &self,
        theta: &mut GpuTensor,
        m: &mut GpuTensor,
        v: &mut GpuTensor,
        grad: &GpuTensor,
        cfg: AdamConfig,
        bc1: f32,
        bc2: f32,
        bbox: Option<GpuBox<'_>>,
    ) -> Result<()> {
        let n = theta.numel();
        ensure!(
            m.numel() == n && v.numel() == n && grad.numel() == n,
            "adam_step: sizes θ {n}, m {}, v {}, g {}",
            m.numel(),
            v.numel(),
            grad.numel()
        );
        check_box("adam_step", n, bbox)?;
        if n == 0 {
            return Ok(());
        }
        let (n64, null) = (n as u64, 0u64);
        let (b, project) = bbox.map_or((0.0f32, 0i32), |bx| (bx.b, 1));
        self.launch("adam_step", self.cfg(n), |l| {
            l.arg(&mut theta.buf).arg(&mut m.buf).arg(&mut v.buf).arg(&grad.buf);
            match bbox {
                Some(bx) => l.arg(&bx.snapshot.buf),
                None => l.arg(&null),
            };
            l.arg(&n64)
                .arg(&cfg.lr)
                .arg(&cfg.beta1)
                .arg(&cfg.beta2)
                .arg(&cfg.eps)
                .arg(&cfg.weight_decay)
                .arg(&bc1)
                .arg(&bc2)
                .arg(&b)
                .arg(&project);
        })
    }
}

fn check_box(name: &str, n: usize, bbox: Option<GpuBox<'_>>) -> Result<()> {
    if let Some(bx) = bbox {
        ensure!(bx.snapshot.numel() == n, "{name}: snapshot has {} elements, θ has {n}", bx.snapshot.numel());
        ensure!(bx.b >= 0.0, "{name}: box radius b = {} must be ≥ 0", bx.b);
    }
    Ok(())
}

/// (N, C, product of the remaining dims) of an [N, C, ...] shape.
fn channel_dims(shape: &[usize]) -> Result<(usize, usize, usize)> {
    ensure!(shape.len() >= 2, "expected at least [N, C], got shape {shape:?}");
    Ok((shape[0], shape[1], shape[2..].iter().product()))
}
