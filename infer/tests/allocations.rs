//! Steady-state inference allocates nothing, on any thread, with the float or the int8 model: after a warm-up call has sized
//! the workspace, a call makes no heap allocation at all, neither on the calling thread nor
//! on the engine's helper threads (started once, with the engine, and handed each call's
//! work without boxing it). Kept in its own test binary because it installs a counting
//! global allocator, and a single test, because it counts on every thread of the process:
//! a second test running meanwhile would be counted too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use infer::cpu::{CpuEngine, Kernel, Workspace};
use infer::{random_weights, Engine};
use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use model_format::quantized::{ActivationQuant, QuantizedWeights};
use ndarray::{Array2, ArrayView4};

struct Counting;

/// Whether allocations are being counted (on every thread).
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

fn record(size: usize) {
    if COUNTING.load(Ordering::SeqCst) {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(size, Ordering::SeqCst);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `(allocations, bytes allocated)` made by all threads while `f` runs.
fn count<R>(f: impl FnOnce() -> R) -> (usize, usize, R) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let result = f();
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCATIONS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst), result)
}

/// `(allocations, bytes)` of one warm call through an explicit workspace with ndarray views
/// and one through the shared engine's workspace pool, each after a warm-up call of the same
/// batch size.
fn steady_state(engine: &CpuEngine, batch: usize) -> [(usize, usize); 2] {
    let input: Vec<f32> = (0..batch * INPUT_LEN).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect();
    let mut logits = vec![0f32; batch * NUM_CLASSES];
    let view = ArrayView4::from_shape((batch, 3, 24, 24), &input).unwrap();
    let mut out = Array2::<f32>::zeros((batch, NUM_CLASSES));
    let mut workspace = Workspace::new();
    engine.logits_with(&mut workspace, view, out.view_mut()).unwrap();
    let (explicit, explicit_bytes, result) = count(|| engine.logits_with(&mut workspace, view, out.view_mut()));
    result.unwrap();
    engine.logits_flat(&input, batch, &mut logits).unwrap();
    let (pooled, pooled_bytes, result) = count(|| engine.logits_flat(&input, batch, &mut logits));
    result.unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
    assert_eq!(out.as_slice().unwrap(), &logits[..], "the ndarray and slice forms agree");
    [(explicit, explicit_bytes), (pooled, pooled_bytes)]
}

#[test]
fn warm_calls_allocate_nothing_on_any_thread() {
    // The counter sees other threads: check that it does, else this test would prove nothing.
    let (spawned, _, ()) = count(|| std::thread::scope(|scope| drop(scope.spawn(|| drop(vec![0u8; 64])))));
    assert!(spawned >= 1, "allocations on another thread are counted");

    let int8_model = QuantizedWeights::uniform(0.01, ActivationQuant::from_range(-2.0, 2.0));
    for kernel in [Kernel::best(), Kernel::Portable] {
        for (threads, int8) in [1, 2, 3].into_iter().flat_map(|t| [(t, false), (t, true)]) {
            let engine = if int8 {
                CpuEngine::int8_with_kernel(&int8_model, threads, kernel).unwrap()
            } else {
                CpuEngine::with_kernel(&random_weights(1), threads, kernel).unwrap()
            };
            // Batch 1 shares each layer between the threads; larger ones give each a chunk.
            let batches: &[usize] = if kernel == Kernel::Portable { &[1, 3] } else { &[1, 3, 128] };
            for &batch in batches {
                let [explicit, pooled] = steady_state(&engine, batch);
                let variant = if int8 { "int8" } else { "float" };
                let what = format!(
                    "{variant} model, {kernel} kernel, {threads} thread(s), batch {batch}: (allocations, bytes)"
                );
                assert_eq!(explicit, (0, 0), "{what} of a call with a warm workspace");
                assert_eq!(pooled, (0, 0), "{what} of Engine::logits once warm");
            }
        }
    }
}
