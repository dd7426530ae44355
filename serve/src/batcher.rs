//! Dynamic batching: requests wait in a bounded queue; a worker thread gathers them into
//! one batch (up to `max_batch` images, or until `max_wait` has passed since the first),
//! runs the engine once and sends each request its own rows of logits.
//!
//! The engine runs on dedicated std threads, never on the async runtime. Only one worker
//! gathers at a time, so batches fill up while the other workers compute.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use model_format::arch::{INPUT_LEN, NUM_CLASSES};
use tokio::sync::oneshot;

use super::cpu_time::thread_cpu;
use super::metrics::Metrics;
use infer::Engine;

/// The logits of one request (`images × NUM_CLASSES`), or why the engine failed.
pub type BatchResult = Result<Vec<f32>, String>;

/// How batches are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most images in one engine run.
    pub max_batch: usize,
    /// Longest the first request of a batch waits for others to join it.
    pub max_wait: Duration,
    /// Most images waiting in the queue; beyond it [`Batcher::submit`] refuses at once.
    pub max_queued_images: usize,
    /// Threads that run the engine (each on its own batch).
    pub workers: usize,
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue holds too many images already.
    Overloaded { queued: usize, limit: usize },
    /// More images than one batch may hold.
    TooLarge { images: usize, max_batch: usize },
    /// The server is shutting down.
    Closed,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Overloaded { queued, limit } => {
                write!(f, "server overloaded: {queued} images already queued (limit {limit}); retry later")
            }
            SubmitError::TooLarge { images, max_batch } => {
                write!(f, "request holds {images} images, more than the maximum batch of {max_batch}")
            }
            SubmitError::Closed => write!(f, "server is shutting down"),
        }
    }
}

struct Job {
    inputs: Vec<f32>,
    images: usize,
    reply: oneshot::Sender<BatchResult>,
}

struct Queue {
    jobs: VecDeque<Job>,
    queued_images: usize,
    closing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job arrives or the batcher closes.
    ready: Condvar,
    /// Held by the worker that is gathering a batch.
    gathering: Mutex<()>,
    config: BatchConfig,
    metrics: Arc<Metrics>,
}

/// The queue and its worker threads. Dropping it without [`Batcher::shutdown`] also
/// stops the workers once the queue is empty.
pub struct Batcher {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts `config.workers` threads running `engine`.
    pub fn start(engine: Arc<dyn Engine>, config: BatchConfig, metrics: Arc<Metrics>) -> Batcher {
        let config = BatchConfig { max_batch: config.max_batch.max(1), workers: config.workers.max(1), ..config };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue { jobs: VecDeque::new(), queued_images: 0, closing: false }),
            ready: Condvar::new(),
            gathering: Mutex::new(()),
            config,
            metrics,
        });
        let workers = (0..config.workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                let engine = Arc::clone(&engine);
                std::thread::Builder::new()
                    .name(format!("cifar10-engine-{i}"))
                    .spawn(move || work(&shared, engine.as_ref()))
                    .expect("spawning an engine thread")
            })
            .collect();
        Batcher { shared, workers: Mutex::new(workers) }
    }

    /// Queues `images` preprocessed inputs (`images × INPUT_LEN` values); the receiver
    /// gets their logits. Refuses at once when the queue is full.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use serve::{BatchConfig, Batcher, Metrics};
    /// use model_format::arch::{INPUT_LEN, NUM_CLASSES};
    /// let engine = infer::cpu::CpuEngine::new(&infer::random_weights(0), 1)?;
    /// let config = BatchConfig { max_batch: 8, max_wait: Duration::from_millis(1), max_queued_images: 64, workers: 1 };
    /// let batcher = Batcher::start(Arc::new(engine), config, Arc::new(Metrics::new(8)));
    /// let logits = batcher.submit(vec![0.0; 2 * INPUT_LEN], 2).unwrap().blocking_recv().unwrap().unwrap();
    /// assert_eq!(logits.len(), 2 * NUM_CLASSES);
    /// batcher.shutdown();
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn submit(&self, inputs: Vec<f32>, images: usize) -> Result<oneshot::Receiver<BatchResult>, SubmitError> {
        debug_assert_eq!(inputs.len(), images * INPUT_LEN);
        let config = &self.shared.config;
        if images > config.max_batch {
            return Err(SubmitError::TooLarge { images, max_batch: config.max_batch });
        }
        let (reply, receiver) = oneshot::channel();
        let mut queue = lock(&self.shared.queue);
        if queue.closing {
            return Err(SubmitError::Closed);
        }
        if queue.queued_images + images > config.max_queued_images {
            return Err(SubmitError::Overloaded { queued: queue.queued_images, limit: config.max_queued_images });
        }
        queue.queued_images += images;
        self.shared.metrics.set_queued_images(queue.queued_images);
        queue.jobs.push_back(Job { inputs, images, reply });
        drop(queue);
        self.shared.ready.notify_all();
        Ok(receiver)
    }

    /// Refuses new work, lets the workers finish everything queued, and joins them.
    /// Blocks: call it outside the async runtime.
    pub fn shutdown(&self) {
        lock(&self.shared.queue).closing = true;
        self.shared.ready.notify_all();
        let workers: Vec<_> = lock(&self.workers).drain(..).collect();
        for worker in workers {
            let _ = worker.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn work(shared: &Shared, engine: &dyn Engine) {
    let mut inputs = Vec::new();
    let mut logits = Vec::new();
    while let Some(jobs) = next_batch(shared) {
        let images: usize = jobs.iter().map(|j| j.images).sum();
        inputs.clear();
        for job in &jobs {
            inputs.extend_from_slice(&job.inputs);
        }
        logits.clear();
        logits.resize(images * NUM_CLASSES, 0.0);
        shared.metrics.record_batch(images);
        let cpu_before = thread_cpu();
        let outcome = catch_unwind(AssertUnwindSafe(|| engine.logits_flat(&inputs, images, &mut logits)));
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu()) {
            shared.metrics.add_engine_cpu(after.saturating_sub(before));
        }
        let outcome = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("engine {} failed: {e}", engine.name())),
            Err(_) => Err(format!("engine {} panicked", engine.name())),
        };
        let mut offset = 0;
        for job in jobs {
            let rows = job.images * NUM_CLASSES;
            let result = outcome.clone().map(|()| logits[offset..offset + rows].to_vec());
            offset += rows;
            // The client may have gone (timeout, disconnect): nothing to tell it.
            let _ = job.reply.send(result);
        }
    }
}

/// Waits for work and gathers one batch; `None` once closing and the queue is empty.
fn next_batch(shared: &Shared) -> Option<Vec<Job>> {
    let _gathering = lock(&shared.gathering);
    let config = &shared.config;
    let mut queue = lock(&shared.queue);
    let first = loop {
        drop_abandoned(shared, &mut queue);
        if let Some(job) = pop(shared, &mut queue) {
            break job;
        }
        if queue.closing {
            return None;
        }
        queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner());
    };
    let deadline = Instant::now() + config.max_wait;
    let mut images = first.images;
    let mut jobs = vec![first];
    loop {
        drop_abandoned(shared, &mut queue);
        while queue.jobs.front().is_some_and(|next| images + next.images <= config.max_batch) {
            let job = pop(shared, &mut queue).expect("front exists");
            images += job.images;
            jobs.push(job);
            drop_abandoned(shared, &mut queue);
        }
        let now = Instant::now();
        let full = images >= config.max_batch || !queue.jobs.is_empty();
        if full || queue.closing || now >= deadline {
            return Some(jobs);
        }
        queue = shared.ready.wait_timeout(queue, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// Takes the job at the front of the queue.
fn pop(shared: &Shared, queue: &mut MutexGuard<'_, Queue>) -> Option<Job> {
    let job = queue.jobs.pop_front()?;
    queue.queued_images -= job.images;
    shared.metrics.set_queued_images(queue.queued_images);
    Some(job)
}

/// Drops the jobs at the front whose client no longer waits (timed out, disconnected).
fn drop_abandoned(shared: &Shared, queue: &mut MutexGuard<'_, Queue>) {
    while queue.jobs.front().is_some_and(|job| job.reply.is_closed()) {
        pop(shared, queue);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use infer::InferError;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Logit k of an input is its first value plus k; counts engine runs.
    struct Echo {
        runs: AtomicUsize,
    }

    impl Engine for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn logits_flat(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            for b in 0..batch {
                for k in 0..NUM_CLASSES {
                    logits[b * NUM_CLASSES + k] = input[b * INPUT_LEN] + k as f32;
                }
            }
            Ok(())
        }
    }

    fn config(max_batch: usize, max_wait_ms: u64) -> BatchConfig {
        BatchConfig { max_batch, max_wait: Duration::from_millis(max_wait_ms), max_queued_images: 16, workers: 1 }
    }

    #[test]
    fn concurrent_requests_share_one_run_and_get_their_own_rows() {
        let engine = Arc::new(Echo { runs: AtomicUsize::new(0) });
        let batcher = Batcher::start(engine.clone(), config(8, 200), Arc::new(Metrics::new(8)));
        let receivers: Vec<_> = (0..4).map(|i| batcher.submit(vec![i as f32; 2 * INPUT_LEN], 2).unwrap()).collect();
        for (i, receiver) in receivers.into_iter().enumerate() {
            let logits = receiver.blocking_recv().unwrap().unwrap();
            assert_eq!(logits.len(), 2 * NUM_CLASSES);
            assert_eq!(logits[0], i as f32);
            assert_eq!(logits[NUM_CLASSES + 9], i as f32 + 9.0);
        }
        // 8 images fill the batch at once: one run, not four.
        assert_eq!(engine.runs.load(Ordering::SeqCst), 1);
        batcher.shutdown();
    }

    /// Blocks in `logits` while the test holds `gate`.
    struct Gated {
        gate: Mutex<()>,
    }

    impl Engine for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }
        fn logits_flat(&self, _: &[f32], _: usize, logits: &mut [f32]) -> Result<(), InferError> {
            let _open = lock(&self.gate);
            logits.fill(0.0);
            Ok(())
        }
    }

    #[test]
    fn a_full_queue_refuses_quickly() {
        let engine = Arc::new(Gated { gate: Mutex::new(()) });
        let closed = lock(&engine.gate);
        let config = BatchConfig { max_queued_images: 3, ..config(2, 0) };
        let batcher = Batcher::start(engine.clone(), config, Arc::new(Metrics::new(2)));
        let first = batcher.submit(vec![0.0; 2 * INPUT_LEN], 2).unwrap();
        // Wait until the worker holds the first job (it then blocks in the engine).
        let start = Instant::now();
        while lock(&batcher.shared.queue).queued_images > 0 {
            assert!(start.elapsed() < Duration::from_secs(10), "worker never took the job");
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = batcher.submit(vec![0.0; 2 * INPUT_LEN], 2).unwrap();
        let refused = batcher.submit(vec![0.0; 2 * INPUT_LEN], 2).unwrap_err();
        assert_eq!(refused, SubmitError::Overloaded { queued: 2, limit: 3 });
        assert_eq!(
            batcher.submit(vec![0.0; 3 * INPUT_LEN], 3).unwrap_err(),
            SubmitError::TooLarge { images: 3, max_batch: 2 }
        );
        drop(closed);
        assert!(first.blocking_recv().unwrap().is_ok());
        assert!(second.blocking_recv().unwrap().is_ok());
        batcher.shutdown();
    }

    #[test]
    fn shutdown_finishes_queued_work() {
        let engine = Arc::new(Echo { runs: AtomicUsize::new(0) });
        let batcher = Batcher::start(engine, config(1, 0), Arc::new(Metrics::new(1)));
        let receivers: Vec<_> = (0..5).map(|i| batcher.submit(vec![i as f32; INPUT_LEN], 1).unwrap()).collect();
        batcher.shutdown();
        for (i, receiver) in receivers.into_iter().enumerate() {
            assert_eq!(receiver.blocking_recv().unwrap().unwrap()[0], i as f32);
        }
    }
}
