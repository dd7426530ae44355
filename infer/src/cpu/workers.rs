//! Persistent helper threads: started once with the engine, they wait for work and run
//! parts of each call (chunks of the batch, or shares of one image's layers). A call hands
//! them a borrowed closure, so dispatching allocates nothing; a helper that has just
//! finished spins briefly before it sleeps, so the next layer of the same image reaches it
//! in microseconds rather than a wake-up's tens. Every thread, the caller included, claims
//! parts until none is left: a helper that the OS has not scheduled yet (a busy machine)
//! delays nothing, the caller runs its parts instead.
//!
//! One call at a time uses the helpers: a concurrent call (a shared engine in a server)
//! finds them busy and runs on its own thread, with the same results.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::kernel::{Kernel, Part};
use crate::error::InferError;

/// The name of each helper thread is this prefix and its index (`infer-cpu-1`, …), so that
/// a profiler, or a server counting the engine's CPU time from `/proc`, can find them.
pub const HELPER_THREAD_PREFIX: &str = "infer-cpu-";

/// How long an idle thread spins (checking for work) before it sleeps on a condition variable.
const SPIN: Duration = Duration::from_micros(50);

/// A part of a job: called with the part's index.
type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// The helper threads of one engine.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    /// Held by the call that is using the helpers.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workers({} helper threads)", self.handles.len())
    }
}

/// What the calling thread and the helpers share.
struct Shared {
    /// Bumped for each job (and to stop): a helper runs a job when it sees a new value.
    epoch: AtomicU64,
    /// The current job, valid while `remaining > 0`; written before `epoch` is bumped.
    job: Mutex<Option<Job>>,
    /// The current job's epoch (low 32 bits) above the index of the next part to claim.
    claims: AtomicU64,
    /// Parts of the current job not finished yet.
    remaining: AtomicUsize,
    /// A helper's part panicked: the caller panics too, once every helper is done.
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Sleeping helpers wait here for a new epoch, the caller for `remaining == 0`.
    sleep: Mutex<()>,
    wake: Condvar,
    done: Condvar,
}

/// A job as the helpers see it: the caller's closure with its lifetime erased, and how many
/// parts it has.
#[derive(Clone, Copy)]
struct Job {
    task: *const Task<'static>,
    parts: usize,
    /// The epoch that announced it: a late helper claims no part of a later job with it.
    epoch: u64,
}

// SAFETY: the closure is `Sync`, and the caller keeps it alive until every helper is done
// with it (see `Team::run`).
unsafe impl Send for Job {}

impl Workers {
    /// Starts `threads - 1` helpers (none for one thread).
    pub(crate) fn new(threads: usize) -> Result<Self, InferError> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            claims: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let mut workers = Workers { shared, handles: Vec::new(), busy: Mutex::new(()) };
        // Each helper says when its thread is up: a thread's start allocates (on the new
        // thread), and that must be over before the engine is handed out, not fall into a
        // call that promises to allocate nothing.
        let (started, up) = std::sync::mpsc::channel();
        for index in 1..threads.max(1) {
            let shared = Arc::clone(&workers.shared);
            let started = started.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{HELPER_THREAD_PREFIX}{index}"))
                .spawn(move || {
                    let _ = started.send(());
                    drop(started);
                    helper(&shared)
                })
                .map_err(|e| InferError::Backend(format!("cannot start CPU engine thread {index}: {e}")))?;
            workers.handles.push(handle);
        }
        for _ in &workers.handles {
            up.recv().map_err(|_| InferError::Backend("a CPU engine thread stopped while starting".into()))?;
        }
        Ok(workers)
    }

    /// The helpers for one call, or none when another call is using them.
    pub(crate) fn team(&self) -> Team<'_> {
        if self.handles.is_empty() {
            return Team::alone();
        }
        let guard = match self.busy.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Team::alone(),
        };
        Team { shared: Some(&self.shared), _busy: Some(guard), size: self.handles.len() + 1 }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        drop(self.shared.sleep.lock().unwrap_or_else(|p| p.into_inner()));
        self.shared.wake.notify_all();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// The threads one call may use: the caller, plus the helpers when they were free.
pub(crate) struct Team<'a> {
    shared: Option<&'a Arc<Shared>>,
    _busy: Option<MutexGuard<'a, ()>>,
    size: usize,
}

impl Team<'_> {
    /// Runs `parts` parts of a step, each compiled for `kernel`'s instruction set.
    pub(crate) fn run_parts<P: Part>(&self, parts: usize, kernel: Kernel, part: &P) {
        self.run(parts, &|i| kernel.run_part(part, i));
    }

    /// A team of the calling thread alone.
    pub(crate) fn alone() -> Team<'static> {
        Team { shared: None, _busy: None, size: 1 }
    }

    /// Threads in the team, the caller included.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs `task(0)`, …, `task(parts - 1)`, each once, on whichever threads of the team
    /// claim them (the calling thread too); returns when all are done. With a team of one,
    /// the parts run one after the other on the calling thread.
    pub(crate) fn run(&self, parts: usize, task: &Task<'_>) {
        let Some(shared) = self.shared.filter(|_| parts > 1) else {
            (0..parts).for_each(task);
            return;
        };
        // SAFETY: only the lifetime is erased; `Wait` below keeps `task` borrowed until
        // every part has finished, even if one panics.
        let task: *const Task<'static> = unsafe { std::mem::transmute(task as *const Task<'_>) };
        // One call at a time holds the team, so nothing else moves the epoch meanwhile.
        let epoch = shared.epoch.load(Ordering::SeqCst) + 1;
        let job = Job { task, parts, epoch };
        *shared.job.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
        shared.remaining.store(parts, Ordering::SeqCst);
        shared.claims.store((epoch & EPOCH_BITS) << 32, Ordering::SeqCst);
        shared.epoch.store(epoch, Ordering::SeqCst);
        drop(shared.sleep.lock().unwrap_or_else(|p| p.into_inner()));
        shared.wake.notify_all();
        let wait = Wait(shared);
        run_claimed(shared, &job);
        drop(wait);
        if shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a part of a CPU engine call panicked");
        }
    }
}

/// Epoch bits kept beside the part index in `Shared::claims`.
const EPOCH_BITS: u64 = 0xffff_ffff;

/// Claims and runs parts of `job` until none is left.
fn run_claimed(shared: &Shared, job: &Job) {
    while let Some(i) = claim(shared, job) {
        // SAFETY: the caller keeps the closure alive until `remaining` reaches 0, which
        // needs this part's decrement below.
        if catch_unwind(AssertUnwindSafe(|| unsafe { (*job.task)(i) })).is_err() {
            shared.panicked.store(true, Ordering::SeqCst);
        }
        if shared.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            drop(shared.sleep.lock().unwrap_or_else(|p| p.into_inner()));
            shared.done.notify_all();
        }
    }
}

/// The next unclaimed part of `job`, if `job` is still the current job and has one left.
fn claim(shared: &Shared, job: &Job) -> Option<usize> {
    let mut current = shared.claims.load(Ordering::SeqCst);
    loop {
        let (epoch, next) = (current >> 32, (current & EPOCH_BITS) as usize);
        if epoch != job.epoch & EPOCH_BITS || next >= job.parts {
            return None;
        }
        match shared.claims.compare_exchange_weak(current, current + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Some(next),
            Err(seen) => current = seen,
        }
    }
}

/// Waits, when dropped, until every part of the current job has finished.
struct Wait<'a>(&'a Shared);

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        let start = Instant::now();
        while shared.remaining.load(Ordering::SeqCst) > 0 {
            if start.elapsed() > SPIN {
                let mut guard = shared.sleep.lock().unwrap_or_else(|p| p.into_inner());
                while shared.remaining.load(Ordering::SeqCst) > 0 {
                    guard = shared.done.wait(guard).unwrap_or_else(|p| p.into_inner());
                }
                break;
            }
            std::hint::spin_loop();
        }
        *shared.job.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// A helper's life: wait for a new epoch, claim and run parts of its job while any is left.
fn helper(shared: &Shared) {
    let mut seen = 0;
    loop {
        seen = next_epoch(shared, seen);
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let job = *shared.job.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(job) = job {
            run_claimed(shared, &job);
        }
    }
}

/// Spins, then sleeps, until the epoch differs from `seen`; returns the new epoch.
fn next_epoch(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    loop {
        let epoch = shared.epoch.load(Ordering::SeqCst);
        if epoch != seen {
            return epoch;
        }
        if start.elapsed() > SPIN {
            break;
        }
        std::hint::spin_loop();
    }
    let mut guard = shared.sleep.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let epoch = shared.epoch.load(Ordering::SeqCst);
        if epoch != seen {
            return epoch;
        }
        guard = shared.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
    }
}

/// A step whose output channels are computed apart from each other (pooling, LRN), so a team
/// can share them out.
pub(crate) trait ChannelStep: Sync {
    /// Channels `first..` of the output, as many as `out` holds (implementations are
    /// `#[inline(always)]`, see [`Part::run`]).
    fn channels(&self, input: &[f32], first: usize, out: &mut [f32]);
}

/// A range of output channels of a [`ChannelStep`]: one part of its job.
pub(crate) struct Channels<'a, S> {
    pub(crate) step: &'a S,
    pub(crate) input: &'a [f32],
    pub(crate) out: SharedChunks<'a, f32>,
    pub(crate) per_part: usize,
}

impl<S: ChannelStep> Part for Channels<'_, S> {
    #[inline(always)]
    fn run(&self, i: usize) {
        // SAFETY: each part index runs once, so each chunk is borrowed once.
        let out = unsafe { self.out.get(i) };
        self.step.channels(self.input, i * self.per_part, out);
    }
}

/// A mutable slice cut into chunks of `chunk` items that the parts of a job borrow, one
/// chunk per part, from several threads.
pub(crate) struct SharedChunks<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the chunks are disjoint; `get`'s contract keeps each one borrowed once.
unsafe impl<T: Send> Sync for SharedChunks<'_, T> {}

impl<'a, T> SharedChunks<'a, T> {
    pub(crate) fn new(slice: &'a mut [T], chunk: usize) -> Self {
        assert!(chunk > 0, "chunks hold at least one item");
        SharedChunks { ptr: slice.as_mut_ptr(), len: slice.len(), chunk, _borrow: std::marker::PhantomData }
    }

    /// Chunks, the last one possibly shorter.
    pub(crate) fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Chunk `i` (below [`Self::count`]).
    ///
    /// # Safety
    /// Each chunk may be borrowed only once at a time (each part of a job takes its own).
    pub(crate) unsafe fn get(&self, i: usize) -> &'a mut [T] {
        assert!(i < self.count(), "chunk {i} of {}", self.count());
        let start = i * self.chunk;
        std::slice::from_raw_parts_mut(self.ptr.add(start), self.chunk.min(self.len - start))
    }
}
