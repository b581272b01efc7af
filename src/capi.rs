//! The C ABI (`include/mtcool.h`): load a model file, ask what it takes and gives, prepare 8-bit
//! images as training did, run a batch into buffers the caller owns, free. Every function returns a
//! status code (0 = ok) and leaves a message for `mtc_last_error`; no panic crosses the boundary
//! (each body runs under `catch_unwind`).
//!
//! The functions take raw pointers yet are not `unsafe fn`: their callers are C programs, for which the
//! header states the contract (valid, sized buffers; handles from `mtc_load`); NULL is checked and
//! reported as `MTC_ERR_ARG`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::model::{Arch, TaskSpec};
use crate::predict::Predictor;
use crate::preprocess::Inputs;
use crate::Tensor;

pub const MTC_OK: c_int = 0;
pub const MTC_ERR_ARG: c_int = 1;
pub const MTC_ERR_IO: c_int = 2;
pub const MTC_ERR_FORMAT: c_int = 3;
pub const MTC_ERR_SHAPE: c_int = 4;
pub const MTC_ERR_RUNTIME: c_int = 5;
pub const MTC_ERR_PANIC: c_int = 6;

/// A loaded model and how its inputs are prepared.
pub struct MtcModel {
    predictor: Predictor,
    inputs: Option<Inputs>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: String) {
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

/// Runs `body`, turning an error into its code and message and a panic into `MTC_ERR_PANIC`.
fn guard(body: impl FnOnce() -> Result<(), (c_int, String)>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_error(String::new());
            MTC_OK
        }
        Ok(Err((code, msg))) => {
            set_error(msg);
            code
        }
        Err(p) => {
            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
            set_error(format!("internal error: {}", what.unwrap_or_else(|| "panic".into())));
            MTC_ERR_PANIC
        }
    }
}

fn arg(msg: &str) -> (c_int, String) {
    (MTC_ERR_ARG, msg.to_string())
}

fn model<'a>(m: *const MtcModel) -> Result<&'a MtcModel, (c_int, String)> {
    // SAFETY: a non-null handle is one mtc_load returned and mtc_free has not released (the contract).
    unsafe { m.as_ref() }.ok_or_else(|| arg("model handle is NULL"))
}

/// The model's input size: the checkpoint's record, else MultiLeNet's fixed 1×28×28.
fn input_shape(m: &MtcModel) -> Result<(usize, usize, usize), (c_int, String)> {
    match (&m.inputs, m.predictor.model().cfg.arch) {
        (Some(i), _) => Ok((i.channels, i.height, i.width)),
        (None, Arch::Lenet) => Ok((1, 28, 28)),
        (None, _) => Err((MTC_ERR_FORMAT, "this checkpoint has no input record (`mtcool.inputs`)".into())),
    }
}

/// Task `task`'s spec (an argument error when there is no such task).
fn task_spec(m: &MtcModel, task: c_int) -> Result<TaskSpec, (c_int, String)> {
    let tasks = &m.predictor.model().cfg.tasks;
    usize::try_from(task).ok().and_then(|t| tasks.get(t)).copied().ok_or_else(|| arg("no such task"))
}

/// Loads a model file written by mtcool; on success `*out` is a handle for `mtc_free`.
#[no_mangle]
pub extern "C" fn mtc_load(path: *const c_char, out: *mut *mut MtcModel) -> c_int {
    guard(|| {
        if path.is_null() || out.is_null() {
            return Err(arg("path and out must not be NULL"));
        }
        // SAFETY: a non-null path is a NUL-terminated string (the contract).
        let path = unsafe { CStr::from_ptr(path) }.to_str().map_err(|_| arg("path is not UTF-8"))?;
        let bytes = std::fs::read(path).map_err(|e| (MTC_ERR_IO, format!("{path}: {e}")))?;
        let fmt = |e: anyhow::Error| (MTC_ERR_FORMAT, format!("{path}: {e:#}"));
        let inputs = crate::checkpoint::inputs(&bytes).map_err(fmt)?;
        let model = crate::checkpoint::from_bytes(&bytes).map_err(fmt)?;
        let handle = Box::new(MtcModel { predictor: Predictor::from_model(model), inputs });
        // SAFETY: out is non-null and points to writable storage (the contract).
        unsafe { *out = Box::into_raw(handle) };
        Ok(())
    })
}

/// Releases a handle (NULL is ignored).
#[no_mangle]
pub extern "C" fn mtc_free(m: *mut MtcModel) {
    if !m.is_null() {
        // SAFETY: m came from mtc_load and is freed once (the contract).
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(m) })));
    }
}

/// This thread's last error message ("" after a success); valid until this thread's next call.
#[no_mangle]
pub extern "C" fn mtc_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[no_mangle]
pub extern "C" fn mtc_num_tasks(m: *const MtcModel, n: *mut c_int) -> c_int {
    guard(|| {
        let m = model(m)?;
        // SAFETY: checked non-null just below; points to writable storage (the contract).
        let n = unsafe { n.as_mut() }.ok_or_else(|| arg("n is NULL"))?;
        *n = m.predictor.model().n_tasks() as c_int;
        Ok(())
    })
}

/// The input tensor's channels, height and width ([batch, channels, height, width], f32).
#[no_mangle]
pub extern "C" fn mtc_input_shape(m: *const MtcModel, c: *mut c_int, h: *mut c_int, w: *mut c_int) -> c_int {
    guard(|| {
        let (ch, hh, ww) = input_shape(model(m)?)?;
        if c.is_null() || h.is_null() || w.is_null() {
            return Err(arg("channels, height and width must not be NULL"));
        }
        // SAFETY: all three checked non-null; writable (the contract).
        unsafe { (*c, *h, *w) = (ch as c_int, hh as c_int, ww as c_int) };
        Ok(())
    })
}

/// Task `task`'s kind (0 = classification: logits [batch, classes]; 1 = segmentation: logits
/// [batch, classes, height, width]) and class count.
#[no_mangle]
pub extern "C" fn mtc_task(m: *const MtcModel, task: c_int, kind: *mut c_int, classes: *mut c_int) -> c_int {
    guard(|| {
        let t = task_spec(model(m)?, task)?;
        if kind.is_null() || classes.is_null() {
            return Err(arg("kind and classes must not be NULL"));
        }
        let k = matches!(t, TaskSpec::Segment { .. }) as c_int;
        // SAFETY: both checked non-null; writable (the contract).
        unsafe { (*kind, *classes) = (k, t.classes() as c_int) };
        Ok(())
    })
}

/// How many floats task `task`'s output holds for `batch` images.
#[no_mangle]
pub extern "C" fn mtc_output_len(m: *const MtcModel, task: c_int, batch: c_int, len: *mut usize) -> c_int {
    guard(|| {
        let m = model(m)?;
        let (_, h, w) = input_shape(m)?;
        let t = task_spec(m, task)?;
        let b = usize::try_from(batch).map_err(|_| arg("batch must be ≥ 0"))?;
        let per = if matches!(t, TaskSpec::Segment { .. }) { t.classes() * h * w } else { t.classes() };
        // SAFETY: checked non-null just below; writable (the contract).
        *unsafe { len.as_mut() }.ok_or_else(|| arg("len is NULL"))? = b * per;
        Ok(())
    })
}

/// Prepares one 8-bit image (`pixels`: height × width × channels, interleaved, row-major) as training
/// did (resize, normalisation) into `out`: channels × input height × input width floats.
#[no_mangle]
pub extern "C" fn mtc_prepare(
    m: *const MtcModel,
    pixels: *const u8,
    width: c_int,
    height: c_int,
    channels: c_int,
    out: *mut f32,
) -> c_int {
    guard(|| {
        let m = model(m)?;
        let inputs = m.inputs.as_ref().ok_or((MTC_ERR_FORMAT, "this checkpoint has no input record".into()))?;
        let (w, h) = (u32::try_from(width).unwrap_or(0), u32::try_from(height).unwrap_or(0));
        if pixels.is_null() || out.is_null() || w == 0 || h == 0 || !(1..=4).contains(&channels) {
            return Err(arg("pixels and out must not be NULL; width, height > 0; channels 1 to 4"));
        }
        let n = (w as usize) * (h as usize) * channels as usize;
        // SAFETY: the caller provides width·height·channels readable bytes (the contract).
        let raw = unsafe { std::slice::from_raw_parts(pixels, n) }.to_vec();
        let img = match channels {
            1 => image::GrayImage::from_raw(w, h, raw).map(image::DynamicImage::ImageLuma8),
            2 => image::GrayAlphaImage::from_raw(w, h, raw).map(image::DynamicImage::ImageLumaA8),
            3 => image::RgbImage::from_raw(w, h, raw).map(image::DynamicImage::ImageRgb8),
            _ => image::RgbaImage::from_raw(w, h, raw).map(image::DynamicImage::ImageRgba8),
        }
        .ok_or_else(|| arg("pixel buffer size"))?;
        let x = inputs.prepare(&img).map_err(|e| (MTC_ERR_SHAPE, format!("{e:#}")))?;
        // SAFETY: the caller provides channels·height·width writable floats of the model (the contract).
        unsafe { std::slice::from_raw_parts_mut(out, x.len()) }.copy_from_slice(&x);
        Ok(())
    })
}

/// Runs `batch` prepared images (`images`: batch × channels × height × width floats) and writes task
/// t's logits to `outputs[t]` (`mtc_output_len` floats each).
#[no_mangle]
pub extern "C" fn mtc_run(m: *const MtcModel, images: *const f32, batch: c_int, outputs: *const *mut f32) -> c_int {
    guard(|| {
        let m = model(m)?;
        let (c, h, w) = input_shape(m)?;
        let b = usize::try_from(batch).ok().filter(|&b| b > 0).ok_or_else(|| arg("batch must be ≥ 1"))?;
        if images.is_null() || outputs.is_null() {
            return Err(arg("images and outputs must not be NULL"));
        }
        // SAFETY: the caller provides batch·c·h·w readable floats (the contract).
        let data = unsafe { std::slice::from_raw_parts(images, b * c * h * w) }.to_vec();
        let x = Tensor::new(&[b, c, h, w], data).map_err(|e| (MTC_ERR_SHAPE, format!("{e:#}")))?;
        let logits = m.predictor.logits(&x).map_err(|e| (MTC_ERR_RUNTIME, format!("{e:#}")))?;
        // SAFETY: outputs holds one pointer per task (the contract).
        let outs = unsafe { std::slice::from_raw_parts(outputs, logits.len()) };
        if outs.iter().any(|p| p.is_null()) {
            return Err(arg("an output pointer is NULL"));
        }
        for (l, &p) in logits.iter().zip(outs) {
            // SAFETY: each output holds mtc_output_len(task, batch) writable floats (the contract).
            unsafe { std::slice::from_raw_parts_mut(p, l.numel()) }.copy_from_slice(l.data());
        }
        Ok(())
    })
}
