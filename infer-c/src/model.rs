//! Opening and closing models, and what a model says about itself: threads, class names,
//! training step, precision@1; the library version.

use std::ffi::{c_char, CStr};

use infer::Classifier;
// Either variant, float or int8: the file says which.
use model_format::{Model as ModelFile, NUM_CLASSES};

use crate::args::{non_null, output, write_out};
use crate::handles::{self, cifar10_model, Model};
use crate::status::cifar10_status::{self, *};
use crate::status::{guard, Failure};
use crate::CIFAR10_MAX_THREADS;

/// The library version (`major.minor.patch`), NUL-terminated.
const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(version) => version,
    Err(_) => panic!("the package version contains a NUL"),
};

/// Opens the model file at `path` (a NUL-terminated file name) and sets `*model` to its
/// handle (to 0 on failure). Each call on the model may use `threads` threads (1 to
/// `CIFAR10_MAX_THREADS`; 0: one per available core).
///
/// Errors: `CIFAR10_ERR_NULL_POINTER`, `CIFAR10_ERR_IO` (unreadable file),
/// `CIFAR10_ERR_INVALID_MODEL` (not a valid model file), `CIFAR10_ERR_INVALID_ARGUMENT`
/// (`threads` over the maximum).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `model` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_open_path(
    path: *const c_char,
    threads: u32,
    model: *mut cifar10_model,
) -> cifar10_status {
    guard(|| {
        non_null(path, "path")?;
        // SAFETY: checked non-NULL; writable per the caller's contract.
        unsafe { write_out(model, 0, "model")? };
        // SAFETY: checked non-NULL; NUL-terminated per the caller's contract.
        let path = unsafe { CStr::from_ptr(path) };
        let file = ModelFile::load(path_of(path))?;
        // SAFETY: as above.
        unsafe { open(file, threads, model) }
    })
}

/// Like `cifar10_open_path` for a model file's `len` bytes held by the caller (e.g.
/// embedded in the program); the library keeps its own copy of what it needs.
///
/// # Safety
/// `bytes` must be NULL or readable for `len` bytes; `model` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_open_bytes(
    bytes: *const u8,
    len: usize,
    threads: u32,
    model: *mut cifar10_model,
) -> cifar10_status {
    guard(|| {
        non_null(bytes, "bytes")?;
        // SAFETY: checked non-NULL; writable per the caller's contract.
        unsafe { write_out(model, 0, "model")? };
        // SAFETY: non-NULL, readable for `len` bytes per the caller's contract (u8: no alignment).
        let bytes = unsafe { std::slice::from_raw_parts(bytes, len) };
        let file = ModelFile::from_bytes(bytes)?;
        // SAFETY: as above.
        unsafe { open(file, threads, model) }
    })
}

/// Builds the engine, registers the model and writes its handle to `*model`.
///
/// # Safety
/// `model` must be non-NULL and writable.
unsafe fn open(file: ModelFile, threads: u32, model: *mut cifar10_model) -> Result<(), Failure> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()).min(CIFAR10_MAX_THREADS as usize),
        t if t > CIFAR10_MAX_THREADS => {
            return Err(Failure::new(
                CIFAR10_ERR_INVALID_ARGUMENT,
                format!("threads is {t}, expected 0 (one per core) to {CIFAR10_MAX_THREADS}"),
            ))
        }
        t => t as usize,
    };
    let classifier = Classifier::from_model(&file, threads)?;
    let handle = handles::insert(Model { classifier, metadata: file.metadata().clone(), threads });
    // SAFETY: the caller's contract; `write_out` already wrote through it.
    unsafe { model.write(handle) };
    Ok(())
}

#[cfg(unix)]
fn path_of(path: &CStr) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()))
}

#[cfg(not(unix))]
fn path_of(path: &CStr) -> &std::path::Path {
    // Outside Unix, file names are Unicode: take the string as UTF-8.
    std::path::Path::new(std::str::from_utf8(path.to_bytes()).unwrap_or("\u{fffd}"))
}

/// Closes the model `*model` and sets `*model` to 0. Calls already running on it finish
/// first (the model is freed when the last one returns). NULL `model` or `*model == 0`:
/// nothing to do, `CIFAR10_OK`; so closing twice through the same variable is harmless.
///
/// Errors: `CIFAR10_ERR_CLOSED_HANDLE` (another copy of the handle was closed),
/// `CIFAR10_ERR_INVALID_HANDLE`.
///
/// # Safety
/// `model` must be NULL or point to a readable and writable handle.
#[no_mangle]
pub unsafe extern "C" fn cifar10_close(model: *mut cifar10_model) -> cifar10_status {
    guard(|| {
        // SAFETY: NULL or readable per the caller's contract.
        let Some(handle) = (unsafe { model.as_mut() }) else { return Ok(()) };
        if *handle != 0 {
            handles::remove(*handle)?;
            *handle = 0;
        }
        Ok(())
    })
}

/// Sets `*threads` to how many threads one call on `model` may use.
///
/// # Safety
/// `threads` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_threads(model: cifar10_model, threads: *mut u32) -> cifar10_status {
    guard(|| {
        non_null(threads, "threads")?;
        let model = handles::get(model)?;
        // SAFETY: checked non-NULL; writable per the caller's contract.
        unsafe { write_out(threads, model.threads as u32, "threads") }
    })
}

/// Copies the name of class `class_index` (0 to `CIFAR10_NUM_CLASSES - 1`), as recorded in
/// the model file, into `buffer` (`buffer_len` bytes, NUL included) and its length without
/// the NUL into `*name_len` (when `name_len` is not NULL), like `snprintf`: a `buffer`
/// too short gets `CIFAR10_ERR_BUFFER_TOO_SMALL` with `*name_len` still set, and `buffer`
/// may be NULL when `buffer_len` is 0 to ask for the length alone.
///
/// # Safety
/// `buffer` must be writable for `buffer_len` bytes; `name_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_class_name(
    model: cifar10_model,
    class_index: usize,
    buffer: *mut c_char,
    buffer_len: usize,
    name_len: *mut usize,
) -> cifar10_status {
    guard(|| {
        if buffer_len > 0 {
            non_null(buffer, "buffer")?;
        }
        let model = handles::get(model)?;
        let name = model.classifier.class_names().get(class_index).ok_or_else(|| {
            Failure::new(
                CIFAR10_ERR_INVALID_ARGUMENT,
                format!("class_index is {class_index}, expected 0 to {}", NUM_CLASSES - 1),
            )
        })?;
        if !name_len.is_null() {
            // SAFETY: checked non-NULL; writable per the caller's contract.
            unsafe { write_out(name_len, name.len(), "name_len")? };
        }
        if buffer_len <= name.len() {
            return Err(Failure::new(
                CIFAR10_ERR_BUFFER_TOO_SMALL,
                format!("class name {name:?} needs {} bytes with its NUL, buffer_len is {buffer_len}", name.len() + 1),
            ));
        }
        // SAFETY: non-NULL (buffer_len > 0 here) and writable for buffer_len bytes.
        let out = unsafe { output(buffer.cast::<u8>(), buffer_len, "buffer")? };
        out[..name.len()].copy_from_slice(name.as_bytes());
        out[name.len()] = 0;
        Ok(())
    })
}

/// Sets `*step` to the training step the model's weights come from, as its file records.
///
/// Errors: `CIFAR10_ERR_NOT_AVAILABLE` when the file does not record it.
///
/// # Safety
/// `step` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_step(model: cifar10_model, step: *mut u64) -> cifar10_status {
    guard(|| {
        non_null(step, "step")?;
        let model = handles::get(model)?;
        let value = model.metadata.step.ok_or_else(|| not_recorded("step"))?;
        // SAFETY: checked non-NULL; writable per the caller's contract.
        unsafe { write_out(step, value, "step") }
    })
}

/// Sets `*precision` to the model's precision@1 on the CIFAR-10 test set (0 to 1), as
/// measured when its file was written.
///
/// Errors: `CIFAR10_ERR_NOT_AVAILABLE` when the file does not record it.
///
/// # Safety
/// `precision` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_precision_at_1(model: cifar10_model, precision: *mut f64) -> cifar10_status {
    guard(|| {
        non_null(precision, "precision")?;
        let model = handles::get(model)?;
        let value = model.metadata.precision_at_1.ok_or_else(|| not_recorded("precision_at_1"))?;
        // SAFETY: checked non-NULL; writable per the caller's contract.
        unsafe { write_out(precision, value, "precision") }
    })
}

fn not_recorded(field: &str) -> Failure {
    Failure::new(CIFAR10_ERR_NOT_AVAILABLE, format!("the model file does not record {field}"))
}

/// Sets `*version` to the library version, a static NUL-terminated string such as "0.1.0".
///
/// # Safety
/// `version` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cifar10_version(version: *mut *const c_char) -> cifar10_status {
    guard(|| {
        // SAFETY: NULL (refused) or writable per the caller's contract.
        unsafe { write_out(version, VERSION.as_ptr(), "version") }
    })
}
