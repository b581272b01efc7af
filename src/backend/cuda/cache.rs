//! The caching allocator of [`GpuTensor`]s: a dropped tensor's buffer goes back to a free list keyed
//! by its exact length, and the next request for that length takes it instead of calling the driver.
//! A training step asks for the same shapes every time, so after the first step it allocates nothing
//! (exact lengths, not rounded size classes: the buffer's length stays the tensor's element count,
//! which every kernel wrapper relies on). Buffers are only returned to the driver when the [`Gpu`]
//! and every tensor are gone.
//!
//! [`Gpu`]: super::Gpu

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use cudarc::driver::CudaSlice;

/// Byte counts of the cache (f32 tensors only; scratch buffers of other types are not cached).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStats {
    /// Bytes held by live tensors.
    pub live_bytes: u64,
    /// The most `live_bytes` ever was.
    pub peak_bytes: u64,
    /// Bytes in the free lists, ready for reuse.
    pub cached_bytes: u64,
    /// Buffers obtained from the driver.
    pub driver_allocs: u64,
    /// Requests served from the free lists.
    pub reuses: u64,
}

#[derive(Default)]
pub(crate) struct BufferCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    free: HashMap<usize, Vec<CudaSlice<f32>>>,
    stats: MemoryStats,
}

impl BufferCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached buffer of exactly `len` elements, if one is free.
    pub(crate) fn take(&self, len: usize) -> Option<CudaSlice<f32>> {
        let mut g = self.lock();
        let buf = g.free.get_mut(&len)?.pop()?;
        g.stats.cached_bytes -= bytes(len);
        g.stats.reuses += 1;
        g.track_live(len);
        Some(buf)
    }

    /// Counts a buffer the driver just gave.
    pub(crate) fn note_driver_alloc(&self, len: usize) {
        let mut g = self.lock();
        g.stats.driver_allocs += 1;
        g.track_live(len);
    }

    fn put(&self, buf: CudaSlice<f32>) {
        let mut g = self.lock();
        let len = buf.len();
        g.stats.live_bytes -= bytes(len);
        g.stats.cached_bytes += bytes(len);
        g.free.entry(len).or_default().push(buf);
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.lock().stats
    }
}

impl Inner {
    fn track_live(&mut self, len: usize) {
        self.stats.live_bytes += bytes(len);
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.live_bytes);
    }
}

fn bytes(len: usize) -> u64 {
    len as u64 * 4
}

/// A tensor's device buffer: a `CudaSlice<f32>` (through `Deref`) that returns to its cache on drop.
pub struct GpuBuf {
    slice: Option<CudaSlice<f32>>,
    cache: Arc<BufferCache>,
}

impl GpuBuf {
    pub(crate) fn new(slice: CudaSlice<f32>, cache: Arc<BufferCache>) -> GpuBuf {
        GpuBuf { slice: Some(slice), cache }
    }
}

impl Deref for GpuBuf {
    type Target = CudaSlice<f32>;
    fn deref(&self) -> &CudaSlice<f32> {
        self.slice.as_ref().expect("a GpuBuf holds its slice until dropped")
    }
}

impl DerefMut for GpuBuf {
    fn deref_mut(&mut self) -> &mut CudaSlice<f32> {
        self.slice.as_mut().expect("a GpuBuf holds its slice until dropped")
    }
}

impl Drop for GpuBuf {
    fn drop(&mut self) {
        if let Some(s) = self.slice.take() {
            self.cache.put(s);
        }
    }
}
