//! Steady-state inference allocates nothing: after a warm-up call has sized the workspace,
//! a call with one thread makes no heap allocation at all (the convolutions' packing
//! buffers live in the workspace too). With more threads the only allocations are those
//! `std::thread::scope` makes to start each helper thread. Kept in its own test binary
//! because it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use infer::cpu::{CpuEngine, Workspace};
use infer::{random_weights, Engine};
use model_format::arch::{Layer, INPUT_LEN, LAYERS, NUM_CLASSES};
use ndarray::{Array2, ArrayView4};

struct Counting;

thread_local! {
    // Only the test's own thread is counted, in counters of its own: the harness and the
    // other test may allocate on other threads meanwhile.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// (allocations, bytes allocated) on this thread while counting.
    static COUNTS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

fn record(size: usize) {
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            COUNTS.with(|counts| counts.set((counts.get().0 + 1, counts.get().1 + size)));
        }
    });
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

/// `(allocations, bytes allocated)` made by `f` on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (usize, usize, R) {
    COUNTS.with(|counts| counts.set((0, 0)));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    let (allocations, bytes) = COUNTS.with(Cell::get);
    (allocations, bytes, result)
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
fn one_thread_allocates_nothing_once_warm() {
    let engine = CpuEngine::new(&random_weights(1), 1).unwrap();
    for batch in [1, 3, 128] {
        let [explicit, pooled] = steady_state(&engine, batch);
        assert_eq!(explicit, (0, 0), "batch {batch}: (allocations, bytes) of a call with a warm workspace");
        assert_eq!(pooled, (0, 0), "batch {batch}: (allocations, bytes) of Engine::logits once warm");
    }
}

#[test]
fn more_threads_allocate_only_to_start_them() {
    // What starting one scoped thread costs the calling thread.
    let spawn = || std::thread::scope(|scope| drop(scope.spawn(|| ())));
    spawn();
    let (per_spawn, per_spawn_bytes, ()) = count(spawn);
    assert!(per_spawn > 0, "a thread start allocates (else this test would prove nothing)");

    let convolutions = LAYERS.iter().filter(|(_, l)| matches!(l, Layer::Conv(_))).count();
    let engine = CpuEngine::new(&random_weights(2), 2).unwrap();
    // One image: each convolution shares its output channels with one helper thread.
    // A batch: the second half runs on one helper thread for the whole call.
    for (batch, spawns) in [(1, convolutions), (4, 1), (128, 1)] {
        for (allocations, bytes) in steady_state(&engine, batch) {
            assert_eq!(
                allocations,
                spawns * per_spawn,
                "batch {batch}: allocations beyond starting {spawns} thread(s)"
            );
            // A spawn also boxes its closure, whose captures (a few references and
            // lengths) the empty closure above lacks: a buffer would be far larger.
            let most = spawns * (per_spawn_bytes + CAPTURES);
            assert!(
                (spawns * per_spawn_bytes..=most).contains(&bytes),
                "batch {batch}: {bytes} bytes, more than starting {spawns} thread(s)"
            );
        }
    }
}

/// Bytes a spawned closure's captures may add to a thread start.
const CAPTURES: usize = 128;
