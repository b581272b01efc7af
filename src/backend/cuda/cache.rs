//! The caching allocator of device buffers: a dropped buffer goes back to a free list keyed by its
//! element type and exact length, and the next request for that length takes it instead of calling
//! the driver. A training step asks for the same shapes every time, so after the first step it
//! allocates nothing (exact lengths, not rounded size classes: a buffer's length stays its tensor's
//! element count, which every kernel wrapper relies on). Buffers go back to the driver only when the
//! [`Gpu`] and every buffer are gone.
//!
//! f32 tensors, f64 reduction scratch and u32 labels / argmax indices each have their own free lists.
//!
//! While a step is captured into a CUDA graph (`begin_capture` .. `end_capture`), the graph bakes in
//! the addresses of every buffer it touches: buffers freed during the capture, and buffers allocated
//! during it whenever they are freed later, go to an arena that is never handed out again (the graph's
//! memory), so no later tensor can share an address a replay writes to.
//!
//! [`Gpu`]: super::Gpu

use std::any::TypeId;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, DeviceRepr};

/// Byte counts of the cache, over every element type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryStats {
    /// Bytes held by live buffers.
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

/// An element type the cache holds.
pub trait Element: DeviceRepr + Copy + Send + Sync + 'static {}
impl Element for f32 {}
impl Element for f64 {}
impl Element for u32 {}

#[derive(Default)]
pub(crate) struct BufferCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Free buffers by (element type, length); each entry is a `Vec<CudaSlice<T>>` of that T.
    free: HashMap<(TypeId, usize), Box<dyn std::any::Any + Send>>,
    stats: MemoryStats,
    capturing: bool,
    /// Buffers a captured graph may use: kept, never reused.
    arena: Vec<Box<dyn std::any::Any + Send>>,
}

impl BufferCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached buffer of exactly `len` elements of T, if one is free.
    pub(crate) fn take<T: Element>(&self, len: usize) -> Option<CudaSlice<T>> {
        let mut g = self.lock();
        let list = g.free.get_mut(&(TypeId::of::<T>(), len))?.downcast_mut::<Vec<CudaSlice<T>>>()?;
        let buf = list.pop()?;
        g.stats.cached_bytes -= bytes::<T>(len);
        g.stats.reuses += 1;
        g.track_live(bytes::<T>(len));
        Some(buf)
    }

    /// Counts a buffer of `len` elements of T the driver just gave.
    pub(crate) fn note_driver_alloc<T: Element>(&self, len: usize) {
        let mut g = self.lock();
        g.stats.driver_allocs += 1;
        g.track_live(bytes::<T>(len));
    }

    fn put<T: Element>(&self, buf: CudaSlice<T>, pinned: bool) {
        let mut g = self.lock();
        let len = buf.len();
        g.stats.live_bytes -= bytes::<T>(len);
        if pinned || g.capturing {
            g.arena.push(Box::new(buf));
            return;
        }
        g.stats.cached_bytes += bytes::<T>(len);
        let list = g.free.entry((TypeId::of::<T>(), len)).or_insert_with(|| Box::new(Vec::<CudaSlice<T>>::new()));
        list.downcast_mut::<Vec<CudaSlice<T>>>().expect("free list of its own type").push(buf);
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    /// Restarts the peak from the bytes live now.
    pub(crate) fn reset_peak(&self) {
        let mut g = self.lock();
        g.stats.peak_bytes = g.stats.live_bytes;
    }

    /// Starts (or ends) a graph capture: see the module notes.
    pub(crate) fn set_capturing(&self, on: bool) {
        self.lock().capturing = on;
    }

    fn capturing(&self) -> bool {
        self.lock().capturing
    }
}

impl Inner {
    fn track_live(&mut self, b: u64) {
        self.stats.live_bytes += b;
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.live_bytes);
    }
}

fn bytes<T>(len: usize) -> u64 {
    (len * std::mem::size_of::<T>()) as u64
}

/// A device buffer: a `CudaSlice<T>` (through `Deref`) that returns to its cache on drop.
pub struct GpuBuf<T: Element = f32> {
    slice: Option<CudaSlice<T>>,
    cache: Arc<BufferCache>,
    /// Handed out during a graph capture: goes to the arena when dropped.
    pinned: bool,
}

impl<T: Element> GpuBuf<T> {
    pub(crate) fn new(slice: CudaSlice<T>, cache: Arc<BufferCache>) -> GpuBuf<T> {
        let pinned = cache.capturing();
        GpuBuf { slice: Some(slice), cache, pinned }
    }
}

impl<T: Element> Deref for GpuBuf<T> {
    type Target = CudaSlice<T>;
    fn deref(&self) -> &CudaSlice<T> {
        self.slice.as_ref().expect("a GpuBuf holds its slice until dropped")
    }
}

impl<T: Element> DerefMut for GpuBuf<T> {
    fn deref_mut(&mut self) -> &mut CudaSlice<T> {
        self.slice.as_mut().expect("a GpuBuf holds its slice until dropped")
    }
}

impl<T: Element> Drop for GpuBuf<T> {
    fn drop(&mut self) {
        if let Some(s) = self.slice.take() {
            self.cache.put(s, self.pinned);
        }
    }
}
