//! Steady-state inference allocates nothing of its own: after a warm-up call, the only
//! heap allocations left are `matrixmultiply`'s packing buffers (one per convolution
//! product, freed before it returns). Kept in its own test binary because it installs a
//! counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use infer::ndarray_engine::{NdarrayEngine, Workspace};
use infer::{random_weights, Engine};
use model_format::arch::{Layer, INPUT_LEN, LAYERS, NUM_CLASSES};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Only the test's own thread is counted: the harness may allocate on others meanwhile.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
            LIVE_BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `(allocations, bytes still live)` made by `f` on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (usize, usize, R) {
    let (a0, b0) = (ALLOCATIONS.load(Ordering::SeqCst), LIVE_BYTES.load(Ordering::SeqCst));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    let (a1, b1) = (ALLOCATIONS.load(Ordering::SeqCst), LIVE_BYTES.load(Ordering::SeqCst));
    (a1 - a0, b1.wrapping_sub(b0), result)
}

/// sgemm calls of one call: one per convolution per image (dense layers use dot products).
fn products(batch: usize) -> usize {
    LAYERS.iter().filter(|(_, l)| matches!(l, Layer::Conv(_))).count() * batch
}

#[test]
fn steady_state_inference_allocates_only_sgemm_packing() {
    // A single-threaded matrixmultiply (no pool) so that everything runs on this thread.
    std::env::set_var("MATMUL_NUM_THREADS", "1");
    let (a, b, c) = (vec![1f32; 64 * 64], vec![1f32; 64 * 64], vec![0f32; 64 * 64]);
    let mut c = c;
    let product = |c: &mut Vec<f32>| unsafe {
        matrixmultiply::sgemm(64, 64, 64, 1.0, a.as_ptr(), 64, 1, b.as_ptr(), 64, 1, 0.0, c.as_mut_ptr(), 64, 1)
    };
    product(&mut c); // first use sets up matrixmultiply's lazily built globals
    let (per_product, leaked, ()) = count(|| product(&mut c));
    assert_eq!(leaked, 0);

    let engine = NdarrayEngine::new(&random_weights(1), 1).unwrap();
    for batch in [1, 4] {
        let input = vec![0.25f32; batch * INPUT_LEN];
        let mut logits = vec![0f32; batch * NUM_CLASSES];
        let mut workspace = Workspace::new();
        engine.logits_with(&mut workspace, &input, batch, &mut logits).unwrap(); // warm-up
        let (allocations, live, result) = count(|| engine.logits_with(&mut workspace, &input, batch, &mut logits));
        result.unwrap();
        assert_eq!(allocations, products(batch) * per_product, "batch {batch}: engine allocated beyond sgemm packing");
        assert_eq!(live, 0, "batch {batch}: memory kept after the call");

        // The shared-engine path (workspace pool behind a lock) is as frugal once warm.
        engine.logits(&input, batch, &mut logits).unwrap();
        let (allocations, live, result) = count(|| engine.logits(&input, batch, &mut logits));
        result.unwrap();
        assert_eq!(allocations, products(batch) * per_product, "batch {batch}: Engine::logits allocated");
        assert_eq!(live, 0);
    }
}
