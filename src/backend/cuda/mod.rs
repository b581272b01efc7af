//! The CUDA backend: one context, one non-default stream and the embedded kernels (`kernels/*.cu`,
//! see `crate::kernels`), with a typed Rust function per op that returns fresh output tensors (the
//! `*_into` helpers behind them are private to this module). With `set_poison(true)` (the parity suite)
//! every fresh buffer is filled with NaN first, so an output element a kernel never writes fails.
//!
//! Kernels are launched with 256 threads per block and a grid-stride loop over at most 32 blocks per
//! SM. Every launch is checked and names its kernel on failure; kernels run asynchronously, so a fault
//! inside one surfaces at the next synchronising call ([`Gpu::download`], [`Gpu::synchronize`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, ensure, Context, Result};
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream, LaunchArgs, LaunchConfig};
use cudarc::nvrtc::Ptx;

mod attention;
mod cache;
mod concat;
mod conv;
mod dropout;
mod elementwise;
pub mod errors;
mod linear;
mod loss;
mod noise;
mod norm;
mod optim;
mod pool;
mod upsample;

pub use cache::{Element, GpuBuf, MemoryStats};
pub use errors::cuda_error;
pub use loss::REDUCE_CHUNK;
pub use norm::{GpuBatchNormGrads, GpuBatchNormStats};
pub use pool::GpuArgmax;

use crate::kernels;
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
    /// Kernels launched since the last [`Gpu::take_launched`], each once, in first-launch order (the
    /// parity suite attributes each checked output to the kernels that produced it). Bounded by the
    /// number of kernels, so a long training run never grows it.
    launched: Mutex<Vec<&'static str>>,
    cache: Arc<cache::BufferCache>,
    info: crate::device::GpuInfo,
    /// While kernel timing is on (`mtcool profile`): each launch's name and its start and end events.
    kernel_times: Mutex<Option<Vec<KernelTiming>>>,
    /// The work (FLOPs, bytes) the next launch does, when its wrapper states it (see [`Gpu::work`]).
    pending_work: Mutex<(f64, f64)>,
    /// Fill fresh f32 buffers with NaN (0xFF bytes) before handing them out.
    poison: std::sync::atomic::AtomicBool,
    /// While a training step is being captured into a CUDA graph: where its kernels read their
    /// per-step scalars, and the owner (parameter index) of each optimiser slot handed out so far.
    step_capture: Mutex<Option<(StepScalars, Vec<usize>)>>,
}

/// One timed launch (`mtcool profile`).
struct KernelTiming {
    name: &'static str,
    start: CudaEvent,
    end: CudaEvent,
    flops: f64,
    bytes: f64,
}

/// Device addresses of a captured step's per-step scalars: the step number the noisy kernels read
/// (u32), and a table of [lr, bc1, bc2] triples, one per optimiser launch, `max_slots` long.
#[derive(Clone, Copy, Debug)]
pub struct StepScalars {
    pub step_ptr: u64,
    pub hyper_ptr: u64,
    pub max_slots: usize,
}

/// An f32 tensor in GPU memory: contiguous, row-major; `buf.len()` equals the product of `shape`.
/// Its buffer returns to the [`Gpu`]'s cache when it is dropped.
pub struct GpuTensor {
    pub shape: Vec<usize>,
    pub buf: GpuBuf,
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
        let ctx = CudaContext::new(ordinal).with_context(|| format!("creating a CUDA context on GPU {ordinal}"))?;
        // One stream carries all work, in order: cudarc's cross-stream event tracking is not needed, and
        // its event records and waits would land inside a captured graph.
        // SAFETY: no buffer exists yet, and every later one lives on this context's single stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().context("creating a CUDA stream")?;
        let module = ctx
            .load_module(Ptx::from_binary(fatbin.to_vec()))
            .with_context(|| format!("loading the kernels on {info} (built for sm_80/sm_90 + compute_90 PTX)"))?;
        let mut functions = HashMap::new();
        for &name in kernels::KERNEL_NAMES {
            let f = module.load_function(name).with_context(|| format!("kernel {name} missing from the fatbin"))?;
            functions.insert(name, f);
        }
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .context("reading the SM count")?
            .max(1) as u32;
        Ok(Gpu {
            ctx,
            stream,
            _module: module,
            functions,
            max_blocks: sms * BLOCKS_PER_SM,
            launched: Mutex::default(),
            cache: Arc::default(),
            info,
            kernel_times: Mutex::default(),
            pending_work: Mutex::default(),
            poison: Default::default(),
            step_capture: Mutex::default(),
        })
    }

    /// What the driver reported about this device when it was opened.
    pub fn info(&self) -> &crate::device::GpuInfo {
        &self.info
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits for all queued work; reports the first asynchronous error (e.g. a faulting kernel).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_error("waiting for the GPU's queued kernels"))
    }

    pub fn upload(&self, t: &Tensor) -> Result<GpuTensor> {
        self.upload_slice(t.shape(), t.data())
    }

    /// Copies host values of shape `shape` to the device.
    pub fn upload_slice(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        let t = Tensor::new(shape, data.to_vec())?;
        let mut buf = self.buffer(t.numel())?;
        let what = format!("copying a {:?} tensor ({}) to the GPU", t.shape(), mib(t.numel()));
        self.stream.memcpy_htod(t.data(), &mut *buf).map_err(cuda_error(what))?;
        Ok(GpuTensor { shape: t.shape().to_vec(), buf })
    }

    /// Copies to the host (waits for the kernels that produce `t`).
    pub fn download(&self, t: &GpuTensor) -> Result<Tensor> {
        Ok(Tensor::new(&t.shape, self.download_vec(&t.buf)?)?)
    }

    /// Copies a device buffer of any cached element type to a host vector (waits for its producers).
    pub fn download_vec<T: cache::Element + Default>(&self, buf: &GpuBuf<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(&**buf).map_err(cuda_error("copying a buffer from the GPU"))
    }

    /// A device copy of `t` with shape `shape` (same number of elements).
    pub fn copy_reshaped(&self, t: &GpuTensor, shape: &[usize]) -> Result<GpuTensor> {
        ensure!(shape.iter().product::<usize>() == t.numel(), "reshape of {:?} to {shape:?}", t.shape);
        let mut out = self.empty(shape)?;
        self.stream.memcpy_dtod(&*t.buf, &mut *out.buf).map_err(cuda_error("copying a tensor on the GPU"))?;
        Ok(out)
    }

    /// The device address of a buffer (for kernels that read a value through a pointer argument).
    pub fn device_addr<T: cache::Element>(&self, buf: &GpuBuf<T>) -> u64 {
        let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&**buf, &self.stream);
        ptr
    }

    /// Copies host values into a device buffer of the same length (no allocation).
    pub fn write_slice<T: cache::Element>(&self, host: &[T], dst: &mut GpuBuf<T>) -> Result<()> {
        ensure!(host.len() == dst.len(), "copy of {} values into a buffer of {}", host.len(), dst.len());
        self.stream.memcpy_htod(host, &mut **dst).map_err(cuda_error("copying values to the GPU"))
    }

    pub fn zeros(&self, shape: &[usize]) -> Result<GpuTensor> {
        let n = shape.iter().product();
        let mut buf = self.buffer(n)?;
        self.stream.memset_zeros(&mut *buf).map_err(cuda_error(format!("zeroing {} of GPU memory", mib(n))))?;
        Ok(GpuTensor { shape: shape.to_vec(), buf })
    }

    /// Sets every element of `t` to 0 in place.
    pub fn fill_zero(&self, t: &mut GpuTensor) -> Result<()> {
        let n = t.numel();
        self.stream.memset_zeros(&mut *t.buf).map_err(cuda_error(format!("zeroing {} of GPU memory", mib(n))))
    }

    /// A tensor whose contents are unspecified (every kernel below writes all of its output), or NaN
    /// while poisoning is on.
    pub fn empty(&self, shape: &[usize]) -> Result<GpuTensor> {
        Ok(GpuTensor { shape: shape.to_vec(), buf: self.buffer(shape.iter().product())? })
    }

    /// Fills every fresh buffer with 0xFF bytes (f32/f64 NaN, u32::MAX) from now on (`true`), or stops (`false`): the parity
    /// suite's way to see an output element that no kernel wrote.
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// A buffer of `n` f32s: a cached one of that length when one is free, else the driver's.
    fn buffer(&self, n: usize) -> Result<GpuBuf> {
        self.buffer_of::<f32>(n)
    }

    /// A buffer of `n` elements of T (contents unspecified), from the cache when it can.
    pub(crate) fn buffer_of<T: cache::Element>(&self, n: usize) -> Result<GpuBuf<T>> {
        let slice = match self.cache.take::<T>(n) {
            Some(s) => s,
            None => {
                let bytes = n * std::mem::size_of::<T>();
                // SAFETY: the element types (f32, f64, u32) have no invalid bit patterns; callers
                // overwrite the contents before reading.
                let s = unsafe { self.stream.alloc::<T>(n) }.map_err(cuda_error(format!(
                    "allocating {:.1} MiB of GPU memory",
                    bytes as f64 / (1 << 20) as f64
                )))?;
                self.cache.note_driver_alloc::<T>(n);
                s
            }
        };
        let mut buf = GpuBuf::new(slice, self.cache.clone());
        if self.poison.load(std::sync::atomic::Ordering::Relaxed) && n > 0 {
            let stream = self.stream.cu_stream();
            let (ptr, _sync) = cudarc::driver::DevicePtrMut::device_ptr_mut(&mut *buf, &self.stream);
            // SAFETY: `ptr` is this live buffer's start, on the stream it is used on.
            unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, n * std::mem::size_of::<T>(), stream) }
                .map_err(cuda_error("poisoning a fresh GPU buffer"))?;
        }
        Ok(buf)
    }

    /// Restarts the allocator's peak from the bytes live now (to measure one step's peak).
    pub fn reset_peak_memory(&self) {
        self.cache.reset_peak();
    }

    /// The caching allocator's byte counts (f32 tensors).
    pub fn memory_stats(&self) -> MemoryStats {
        self.cache.stats()
    }

    /// Starts handing `scalars` to the kernels that take per-step values (noise step, optimiser
    /// hyper-parameters) instead of their by-value arguments: the launches that follow are being
    /// captured into a graph that will be replayed with new values written there.
    pub fn begin_step_capture(&self, scalars: StepScalars) {
        *self.step_capture.lock().unwrap_or_else(|e| e.into_inner()) = Some((scalars, vec![]));
    }

    /// Starts (or ends) a stream capture of the following work into a CUDA graph, in relaxed mode
    /// (buffers may still be allocated), with the caching allocator keeping every buffer the capture
    /// touches for the graph (see `cache.rs`).
    pub fn begin_capture(&self) -> Result<()> {
        self.cache.set_capturing(true);
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        self.stream.begin_capture(mode).map_err(|e| {
            self.cache.set_capturing(false);
            cuda_error("starting a CUDA graph capture")(e)
        })
    }

    /// Ends the capture begun by [`Gpu::begin_capture`] and instantiates the graph.
    pub fn end_capture(&self) -> Result<cudarc::driver::CudaGraph> {
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        self.cache.set_capturing(false);
        graph.map_err(cuda_error("ending a CUDA graph capture"))?.ok_or_else(|| anyhow!("the captured graph is empty"))
    }

    /// Stops, returning the owner of each optimiser slot taken (in launch order).
    pub fn end_step_capture(&self) -> Vec<usize> {
        self.step_capture.lock().unwrap_or_else(|e| e.into_inner()).take().map(|(_, o)| o).unwrap_or_default()
    }

    /// The step-number address the noisy kernels read during a capture (0 otherwise).
    pub(crate) fn captured_step_ptr(&self) -> u64 {
        self.step_capture.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |(s, _)| s.step_ptr)
    }

    /// During a capture, the address of the next [lr, bc1, bc2] slot, noting `owner`; 0 otherwise.
    pub(crate) fn hyper_slot(&self, owner: Option<usize>) -> Result<u64> {
        let mut g = self.step_capture.lock().unwrap_or_else(|e| e.into_inner());
        let (Some((s, owners)), Some(owner)) = (g.as_mut(), owner) else { return Ok(0) };
        ensure!(owners.len() < s.max_slots, "captured step: more than {} optimiser launches", s.max_slots);
        owners.push(owner);
        Ok(s.hyper_ptr + 12 * (owners.len() as u64 - 1))
    }

    /// Runs `f` between two CUDA events on the stream; returns its result and the events' elapsed
    /// time in µs (the GPU time of the work `f` queued, waited for).
    pub fn time_us<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<(R, f64)> {
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.stream.record_event(timing).map_err(cuda_error("recording a timing event"))?;
        let r = f()?;
        let end = self.stream.record_event(timing).map_err(cuda_error("recording a timing event"))?;
        let ms = start.elapsed_ms(&end).map_err(cuda_error("reading a timing event"))?;
        Ok((r, ms as f64 * 1e3))
    }

    /// Starts timing every kernel launch with a pair of events (costs a little per launch).
    pub fn start_kernel_timing(&self) {
        *self.kernel_times.lock().unwrap_or_else(|e| e.into_inner()) = Some(vec![]);
    }

    /// Stops kernel timing and returns each launch's (kernel, µs, FLOPs, bytes), in launch order
    /// (waits for them); the work is 0 where the wrapper does not state it.
    pub fn stop_kernel_timing(&self) -> Result<Vec<(&'static str, f64, f64, f64)>> {
        let taken = self.kernel_times.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
        taken
            .into_iter()
            .map(|t| {
                let ms =
                    t.start.elapsed_ms(&t.end).map_err(cuda_error(format_args!("reading the timing of {}", t.name)))?;
                Ok((t.name, ms as f64 * 1e3, t.flops, t.bytes))
            })
            .collect()
    }

    /// States the work of the next launch, for the kernel profile: FLOPs of the matrix kernels, or the
    /// bytes a memory-bound kernel reads and writes.
    fn work(&self, flops: f64, bytes: f64) -> &Self {
        *self.pending_work.lock().unwrap_or_else(|e| e.into_inner()) = (flops, bytes);
        self
    }

    /// The distinct kernels launched since the previous call, in first-launch order.
    pub fn take_launched(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.launched.lock().unwrap_or_else(|e| e.into_inner()))
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
        let mut log = self.launched.lock().unwrap_or_else(|e| e.into_inner());
        if !log.contains(&name) {
            log.push(name);
        }
        drop(log);
        let timing = self.kernel_times.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        let (flops, bytes) = std::mem::take(&mut *self.pending_work.lock().unwrap_or_else(|e| e.into_inner()));
        let event = || {
            self.stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(cuda_error("recording a timing event"))
        };
        let start = if timing { Some(event()?) } else { None };
        let mut builder = self.stream.launch_builder(self.function(name));
        args(&mut builder);
        // SAFETY: each caller below pushes the parameter list of `kernels/*.cu` for `name` (pointers
        // to buffers of at least `n` elements, then scalars of the declared C types).
        unsafe { builder.launch(cfg) }.map(|_| ()).map_err(cuda_error(format_args!("launching kernel {name}")))?;
        if let Some(start) = start {
            let end = event()?;
            if let Some(v) = self.kernel_times.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                v.push(KernelTiming { name, start, end, flops, bytes });
            }
        }
        Ok(())
    }
}

/// `n` f32s in MiB, for messages.
fn mib(n: usize) -> String {
    format!("{:.1} MiB", n as f64 * 4.0 / (1 << 20) as f64)
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
