//! Status codes, the per-thread last-error message, and [`guard`], which runs the body of
//! every exported function so that neither an error nor a panic crosses the C boundary
//! as anything but a status code.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use infer::InferError;
use model_format::WeightsError;

/// What every `cifar10_` function returns: `CIFAR10_OK` (0) or the kind of failure;
/// `cifar10_last_error` then describes it.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum cifar10_status {
    /// Success.
    CIFAR10_OK = 0,
    /// A required pointer argument is NULL.
    CIFAR10_ERR_NULL_POINTER = 1,
    /// The handle is 0 or was never returned by `cifar10_open_*`.
    CIFAR10_ERR_INVALID_HANDLE = 2,
    /// The handle was closed (handles are never reused, so this is always detected).
    CIFAR10_ERR_CLOSED_HANDLE = 3,
    /// `n` is 0: a batch needs at least one image.
    CIFAR10_ERR_EMPTY_BATCH = 4,
    /// `n` is over `CIFAR10_MAX_BATCH`.
    CIFAR10_ERR_BATCH_TOO_LARGE = 5,
    /// A buffer's length does not match `n` (e.g. `images_len != n * CIFAR10_IMAGE_LEN`).
    CIFAR10_ERR_BUFFER_LENGTH = 6,
    /// The model file could not be read.
    CIFAR10_ERR_IO = 7,
    /// The model bytes are not a valid model (corrupt, truncated, wrong tensors).
    CIFAR10_ERR_INVALID_MODEL = 8,
    /// An argument is out of range: `threads`, `k`, a class index, a misaligned pointer.
    CIFAR10_ERR_INVALID_ARGUMENT = 9,
    /// A string does not fit the caller's buffer (the length needed is still reported).
    CIFAR10_ERR_BUFFER_TOO_SMALL = 10,
    /// The model file does not record this metadata field.
    CIFAR10_ERR_NOT_AVAILABLE = 11,
    /// A bug inside the library was caught (a Rust panic); the library is still usable.
    CIFAR10_ERR_PANIC = 12,
    /// The engine failed for another reason.
    CIFAR10_ERR_INTERNAL = 13,
}

use cifar10_status::*;

/// A failed call: its status and the message `cifar10_last_error` will give.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: cifar10_status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: cifar10_status, message: impl Into<String>) -> Self {
        Failure { status, message: message.into() }
    }
}

impl From<InferError> for Failure {
    fn from(e: InferError) -> Self {
        let status = match &e {
            InferError::Weights(w) => weights_status(w),
            InferError::EmptyBatch => CIFAR10_ERR_EMPTY_BATCH,
            InferError::Shape { .. } | InferError::Length { .. } => CIFAR10_ERR_BUFFER_LENGTH,
            InferError::InputOutOfRange { .. } => CIFAR10_ERR_INVALID_ARGUMENT,
            _ => CIFAR10_ERR_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

impl From<WeightsError> for Failure {
    fn from(e: WeightsError) -> Self {
        Failure::new(weights_status(&e), e.to_string())
    }
}

/// An unreadable file is an I/O error; anything wrong with the bytes is an invalid model.
fn weights_status(e: &WeightsError) -> cifar10_status {
    match e {
        WeightsError::Io { .. } => CIFAR10_ERR_IO,
        WeightsError::InFile { source, .. } => weights_status(source),
        _ => CIFAR10_ERR_INVALID_MODEL,
    }
}

thread_local! {
    /// The message of this thread's last call; `None` after a success.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Runs the body of an exported function: records its outcome as this thread's last error
/// and turns a panic into `CIFAR10_ERR_PANIC`, since unwinding into C is undefined.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> cifar10_status {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        Err(Failure::new(
            CIFAR10_ERR_PANIC,
            format!("internal error in libcifar10 (caught panic: {what}); please report it"),
        ))
    });
    match outcome {
        Ok(()) => {
            record(None);
            CIFAR10_OK
        }
        Err(failure) => {
            // A NUL inside the message would cut it short in C: show it instead.
            record(Some(CString::new(failure.message.replace('\0', "\\0")).unwrap_or_default()));
            failure.status
        }
    }
}

fn record(message: Option<CString>) {
    // Fails only while the thread is being torn down, when nobody can read it any more.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = message);
}

/// Sets `*message` to the message describing this thread's last failed call: a
/// NUL-terminated UTF-8 string, empty when the last call succeeded. It stays valid until
/// this thread's next `cifar10_` call (other than this one, which changes nothing).
///
/// Returns `CIFAR10_ERR_NULL_POINTER` when `message` is NULL.
///
/// # Safety
/// `message` must be NULL or point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn cifar10_last_error(message: *mut *const c_char) -> cifar10_status {
    if message.is_null() {
        return CIFAR10_ERR_NULL_POINTER;
    }
    let text =
        LAST_ERROR.try_with(|last| last.borrow().as_ref().map(|s| s.as_ptr())).ok().flatten().unwrap_or(c"".as_ptr());
    // SAFETY: the caller guarantees `message` is writable; checked non-null above.
    unsafe { message.write(text) };
    CIFAR10_OK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, CIFAR10_ERR_PANIC);
        assert!(last_error().contains("caught panic: boom"), "{}", last_error());
        assert_eq!(guard(|| Ok(())), CIFAR10_OK);
        assert_eq!(last_error(), "");
    }

    #[test]
    fn a_failure_sets_the_message_of_this_thread_only() {
        let status = guard(|| Err(Failure::new(CIFAR10_ERR_EMPTY_BATCH, "empty")));
        assert_eq!(status, CIFAR10_ERR_EMPTY_BATCH);
        assert_eq!(last_error(), "empty");
        std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
    }

    fn last_error() -> String {
        let mut message = std::ptr::null();
        // SAFETY: `message` is a valid out-pointer.
        assert_eq!(unsafe { cifar10_last_error(&mut message) }, CIFAR10_OK);
        // SAFETY: the library returns a NUL-terminated string valid until the next call.
        unsafe { std::ffi::CStr::from_ptr(message) }.to_str().unwrap().to_string()
    }
}
