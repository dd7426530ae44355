//! Model handles: ids into a process-wide registry, never pointers.
//!
//! A handle is a 64-bit id taken from a counter that only goes up, so an id is never
//! reused: after `cifar10_close`, every use of the old id is reported as
//! `CIFAR10_ERR_CLOSED_HANDLE`, and an id that was never issued (or 0) as
//! `CIFAR10_ERR_INVALID_HANDLE`, without ever touching freed memory. A pointer handle could
//! not tell a closed model from a live one (the memory may be reused), and a magic number
//! in freed memory is itself a use-after-free. Each call clones the model's `Arc` out of
//! the registry and releases the lock before working, so calls on one handle run in
//! parallel, and a `cifar10_close` racing with a call only frees the model when that call
//! returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use infer::Classifier;
use model_format::Metadata;

use crate::status::cifar10_status::{CIFAR10_ERR_CLOSED_HANDLE, CIFAR10_ERR_INVALID_HANDLE};
use crate::status::Failure;

/// A model opened by `cifar10_open_path` or `cifar10_open_bytes`; 0 is never a model.
#[allow(non_camel_case_types)]
pub type cifar10_model = u64;

/// What a handle stands for.
pub(crate) struct Model {
    pub(crate) classifier: Classifier,
    pub(crate) metadata: Metadata,
    pub(crate) threads: usize,
}

struct Registry {
    /// The id the next opened model gets.
    next: u64,
    open: BTreeMap<u64, Arc<Model>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { next: 1, open: BTreeMap::new() });

/// No code panics while holding the lock, but a poisoned registry must not turn every
/// later call into a panic either.
fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers `model` and returns its new handle.
pub(crate) fn insert(model: Model) -> cifar10_model {
    let mut registry = registry();
    let id = registry.next;
    registry.next += 1;
    registry.open.insert(id, Arc::new(model));
    id
}

/// The model behind `handle`, kept alive for the caller even if it is closed meanwhile.
pub(crate) fn get(handle: cifar10_model) -> Result<Arc<Model>, Failure> {
    let registry = registry();
    match registry.open.get(&handle) {
        Some(model) => Ok(Arc::clone(model)),
        None => Err(unknown(handle, registry.next)),
    }
}

/// Unregisters `handle`; the model is freed once no call is using it.
pub(crate) fn remove(handle: cifar10_model) -> Result<(), Failure> {
    let mut registry = registry();
    let model = registry.open.remove(&handle).ok_or_else(|| unknown(handle, registry.next))?;
    drop(registry);
    drop(model); // outside the lock: freeing 4 MB of weights need not block other callers
    Ok(())
}

fn unknown(handle: cifar10_model, next: u64) -> Failure {
    if handle == 0 {
        Failure::new(CIFAR10_ERR_INVALID_HANDLE, "model handle is 0 (no model): open one with cifar10_open_path")
    } else if handle < next {
        Failure::new(CIFAR10_ERR_CLOSED_HANDLE, format!("model handle {handle} was closed"))
    } else {
        Failure::new(CIFAR10_ERR_INVALID_HANDLE, format!("model handle {handle} was never opened"))
    }
}
