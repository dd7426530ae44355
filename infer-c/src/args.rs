//! Checks of the arguments C hands over, in the order the API documents: NULL pointers
//! first, then the handle, then `n`, then buffer lengths, and only then are slices formed.

use std::slice;

use crate::status::cifar10_status::*;
use crate::status::Failure;
use crate::CIFAR10_MAX_BATCH;

/// An error naming `what` when a required pointer is NULL.
pub(crate) fn non_null<T>(ptr: *const T, what: &str) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::new(CIFAR10_ERR_NULL_POINTER, format!("{what} is NULL")));
    }
    Ok(())
}

/// `n` when it is a batch size the library accepts: 1 to `CIFAR10_MAX_BATCH`.
pub(crate) fn batch(n: usize) -> Result<usize, Failure> {
    match n {
        0 => Err(Failure::new(CIFAR10_ERR_EMPTY_BATCH, "n is 0: give at least one image")),
        n if n > CIFAR10_MAX_BATCH => Err(Failure::new(
            CIFAR10_ERR_BATCH_TOO_LARGE,
            format!("n is {n}, over CIFAR10_MAX_BATCH ({CIFAR10_MAX_BATCH}): split the batch"),
        )),
        n => Ok(n),
    }
}

/// An error unless buffer `what` holds `expected` values (`n` times the item size).
pub(crate) fn expect_len(what: &str, found: usize, expected: usize, n: usize) -> Result<(), Failure> {
    if found != expected {
        return Err(Failure::new(
            CIFAR10_ERR_BUFFER_LENGTH,
            format!("{what}_len is {found}, expected {expected} for n = {n}"),
        ));
    }
    Ok(())
}

/// An error unless `ptr` is aligned for `T` (C compilers align `float*`, but a cast
/// `uint8_t*` may not be, and Rust must not read through a misaligned slice).
fn aligned<T>(ptr: *const T, what: &str) -> Result<(), Failure> {
    if !ptr.is_aligned() {
        return Err(Failure::new(
            CIFAR10_ERR_INVALID_ARGUMENT,
            format!("{what} is not aligned to {} bytes", std::mem::align_of::<T>()),
        ));
    }
    Ok(())
}

/// The caller's input buffer as a slice.
///
/// # Safety
/// `ptr` must be non-NULL and valid for reads of `len` values for the duration of the call.
pub(crate) unsafe fn input<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], Failure> {
    aligned(ptr, what)?;
    // SAFETY: non-NULL and aligned (checked), readable for `len` values (the caller's
    // contract); `len` was checked against `n ≤ CIFAR10_MAX_BATCH`, so the size fits `isize`.
    Ok(unsafe { slice::from_raw_parts(ptr, len) })
}

/// The caller's output buffer as a slice.
///
/// # Safety
/// `ptr` must be non-NULL, valid for writes of `len` values for the duration of the call,
/// and overlap no other buffer of the call.
pub(crate) unsafe fn output<'a, T>(ptr: *mut T, len: usize, what: &str) -> Result<&'a mut [T], Failure> {
    aligned(ptr, what)?;
    // SAFETY: as for `input`, plus exclusive access (the caller's contract).
    Ok(unsafe { slice::from_raw_parts_mut(ptr, len) })
}

/// Writes `value` through a required out-pointer.
///
/// # Safety
/// `ptr` must be NULL or valid for one write of `T`.
pub(crate) unsafe fn write_out<T>(ptr: *mut T, value: T, what: &str) -> Result<(), Failure> {
    non_null(ptr, what)?;
    aligned(ptr, what)?;
    // SAFETY: non-NULL and aligned (checked), writable (the caller's contract).
    unsafe { ptr.write(value) };
    Ok(())
}
