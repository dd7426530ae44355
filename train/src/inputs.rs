//! The training input pipeline: examples shuffled across the whole training set every
//! epoch, distorted (see [`crate::distort`]), grouped into batches, and produced by worker
//! threads ahead of the training step through bounded queues.
//!
//! Batch `s` holds the examples at positions `s·B .. (s+1)·B` of an endless sequence of
//! epochs, epoch `e` being a permutation drawn from `(seed, e)`; example `i` of the batch is
//! distorted with draws from the stream of `(seed, s)`. So a batch depends only on the seed
//! and the step, whichever worker makes it and whenever. With towers, `B` is the step's
//! examples over all towers (towers × per-tower batch), tower `i` taking the `i`-th slice.
//!
//! Workers write each batch straight into the tensor the towers read (no copy in between),
//! and reuse those tensors: each worker has a pool of batch buffers, allocated once and
//! filled in place, and a batch goes back to its worker's pool when the trainer drops it.
//! When the run uses a CUDA device the buffers are pinned (page-locked) host memory, so the
//! towers' copies to the device are asynchronous DMA transfers; a buffer is then reused
//! only once the devices are known to have read it ([`InFlight`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use model_format::arch::{INPUT_CHANNELS, INPUT_LEN, INPUT_SIZE};
use model_format::cifar::Records;
use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

use crate::distort::Distortion;
use crate::seeding::{stream, Purpose};

/// One training batch, ready for the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub step: u64,
    /// `[B, 3, 24, 24]` values, NCHW.
    pub images: Vec<f32>,
    /// `B` labels, 0–9.
    pub labels: Vec<i64>,
}

/// The order of the examples in one epoch.
pub fn epoch_order(seed: u64, epoch: u64, examples: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..examples as u32).collect();
    order.shuffle(&mut stream(seed, Purpose::EpochOrder, epoch));
    order
}

/// Builds batches; keeps the current epoch's order so that it is drawn once per epoch.
pub struct BatchMaker {
    records: Arc<Records>,
    seed: u64,
    batch_size: usize,
    /// Examples of the whole step (every process's), of which this maker makes
    /// `first .. first + batch_size`.
    step_examples: usize,
    first: usize,
    order: Option<(u64, Vec<u32>)>,
}

impl BatchMaker {
    pub fn new(records: Arc<Records>, seed: u64, batch_size: usize) -> BatchMaker {
        BatchMaker::slice(records, seed, batch_size, (batch_size, 0))
    }

    /// Makes examples `first .. first + batch_size` of steps of `step_examples` examples:
    /// one process's share of a data-parallel step, the same examples with the same
    /// distortions as a single process making the whole step would give those towers.
    pub fn slice(
        records: Arc<Records>,
        seed: u64,
        batch_size: usize,
        (step_examples, first): (usize, usize),
    ) -> BatchMaker {
        assert!(first + batch_size <= step_examples, "a slice inside the step");
        BatchMaker { records, seed, batch_size, step_examples, first, order: None }
    }

    /// The step's distortion stream, past the draws of the examples before this slice.
    fn distortions(&self, step: u64) -> rand_chacha::ChaCha8Rng {
        let mut rng = stream(self.seed, Purpose::Distortion, step);
        for _ in 0..self.first {
            Distortion::draw(&mut rng);
        }
        rng
    }

    fn position(&self, step: u64, i: usize) -> u64 {
        step * self.step_examples as u64 + (self.first + i) as u64
    }

    /// The record index at `position` of the endless epoch sequence.
    fn example_at(&mut self, position: u64) -> usize {
        let n = self.records.len() as u64;
        let epoch = position / n;
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.order = Some((epoch, epoch_order(self.seed, epoch, n as usize)));
        }
        let (_, order) = self.order.as_ref().expect("just set");
        order[(position % n) as usize] as usize
    }

    /// Batch `step`.
    pub fn make(&mut self, step: u64) -> Batch {
        let mut images = vec![0f32; self.batch_size * INPUT_LEN];
        let mut labels = vec![0i64; self.batch_size];
        self.fill(step, &mut images, &mut labels);
        Batch { step, images, labels }
    }

    /// Writes batch `step` into `images` (`B × INPUT_LEN` values) and `labels` (`B`).
    pub fn fill(&mut self, step: u64, images: &mut [f32], labels: &mut [i64]) {
        let b = self.batch_size;
        assert!(images.len() == b * INPUT_LEN && labels.len() == b, "buffers for {b} examples");
        let mut rng = self.distortions(step);
        for (i, (out, label)) in images.chunks_exact_mut(INPUT_LEN).zip(labels.iter_mut()).enumerate() {
            let index = self.example_at(self.position(step, i));
            Distortion::draw(&mut rng).apply(self.records.image(index), out);
            *label = i64::from(self.records.label(index));
        }
    }

    /// Batch `step`'s records and random choices, drawn exactly as [`BatchMaker::fill`]
    /// draws them (for [`crate::augment`], which applies them on a device).
    pub fn draws(&mut self, step: u64) -> Draws {
        let b = self.batch_size;
        let mut rng = self.distortions(step);
        let mut draws = Draws::with_capacity(b);
        for i in 0..b {
            let index = self.example_at(self.position(step, i));
            let d = Distortion::draw(&mut rng);
            draws.records.push(index as i64);
            draws.top.push(d.top as i64);
            draws.left.push(d.left as i64);
            draws.flip.push(i64::from(d.flip));
            draws.brightness.push(d.brightness);
            draws.contrast.push(d.contrast);
        }
        draws
    }

    /// Batch `step` as tensors `[B,3,24,24]` and `[B]`, in fresh memory (pinned when
    /// `pin_for` is a CUDA device). The input workers use [`BatchMaker::fill_buffers`] on
    /// reused buffers instead.
    pub fn make_tensors(&mut self, step: u64, pin_for: Option<Device>) -> Result<TensorBatch, tch::TchError> {
        let (images, labels) = batch_buffers(self.batch_size, pin_for)?;
        self.fill_buffers(step, images, labels, None)
    }

    /// Writes batch `step` into `images` `[B,3,24,24]` and `labels` `[B]` (contiguous host
    /// tensors that nothing else uses), in place; the batch returns them to `pool` when
    /// dropped.
    pub fn fill_buffers(
        &mut self,
        step: u64,
        mut images: Tensor,
        mut labels: Tensor,
        pool: Option<Sender<(Tensor, Tensor)>>,
    ) -> Result<TensorBatch, tch::TchError> {
        let (image_values, label_values) = (host_values::<f32>(&mut images), host_values::<i64>(&mut labels));
        self.fill(step, image_values, label_values);
        Ok(TensorBatch { step, images, labels, pool })
    }
}

/// Fresh host tensors for a batch of `batch_size` examples, pinned when `pin_for` is a CUDA
/// device. Pinned through libtorch's `_pin_memory` with the device given, which picks that
/// device's pinned allocator without the deprecated `pin_memory(device)` /
/// `is_pinned(device)` forms (each warned on every call in libtorch 2.11).
pub fn batch_buffers(batch_size: usize, pin_for: Option<Device>) -> Result<(Tensor, Tensor), tch::TchError> {
    let b = batch_size as i64;
    let shape = [b, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64];
    let images = Tensor::f_empty(shape, (Kind::Float, Device::Cpu))?;
    let labels = Tensor::f_empty([b], (Kind::Int64, Device::Cpu))?;
    match pin_for.filter(|d| d.is_cuda()) {
        Some(device) => Ok((images.f_internal_pin_memory(device)?, labels.f_internal_pin_memory(device)?)),
        None => Ok((images, labels)),
    }
}

/// One batch's records and [`Distortion`]s, field by field (one entry per example).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Draws {
    /// Record indices into the training set.
    pub records: Vec<i64>,
    pub top: Vec<i64>,
    pub left: Vec<i64>,
    /// 1 to flip left–right, else 0.
    pub flip: Vec<i64>,
    pub brightness: Vec<f32>,
    pub contrast: Vec<f32>,
}

impl Draws {
    fn with_capacity(n: usize) -> Draws {
        Draws {
            records: Vec::with_capacity(n),
            top: Vec::with_capacity(n),
            left: Vec::with_capacity(n),
            flip: Vec::with_capacity(n),
            brightness: Vec::with_capacity(n),
            contrast: Vec::with_capacity(n),
        }
    }
}

/// The values of a contiguous CPU tensor of element type `T`, to be written in place.
fn host_values<T>(tensor: &mut Tensor) -> &mut [T] {
    assert!(tensor.device() == Device::Cpu && tensor.is_contiguous(), "a contiguous host tensor");
    assert_eq!(tensor.kind().elt_size_in_bytes(), std::mem::size_of::<T>(), "element size");
    let len = tensor.numel();
    // SAFETY: the tensor is contiguous, on the host, holds `len` elements of `T`'s size, and
    // nothing else refers to its storage while the exclusive borrow lasts (the batch tensors
    // are fresh and not yet shared).
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut T, len) }
}

/// One training batch as the towers read it. Dropping it gives its buffers back to the
/// input worker that filled them.
#[derive(Debug)]
pub struct TensorBatch {
    pub step: u64,
    /// `[B, 3, 24, 24]`, pinned when the run uses a CUDA device.
    pub images: Tensor,
    /// `[B]`, `Int64`.
    pub labels: Tensor,
    /// Where the buffers go back to (none for a batch made with fresh memory).
    pool: Option<Sender<(Tensor, Tensor)>>,
}

impl TensorBatch {
    /// A batch made on a device (no buffer to give back).
    pub fn on_device(step: u64, images: Tensor, labels: Tensor) -> TensorBatch {
        TensorBatch { step, images, labels, pool: None }
    }
}

impl Drop for TensorBatch {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            // The worker may be gone (the run is ending): then the buffers are freed.
            let _ = pool.send((self.images.shallow_clone(), self.labels.shallow_clone()));
        }
    }
}

/// Batches the training loop has used but whose host buffers a CUDA device may still be
/// copying from (the copies do not wait). They are released, back to their pools, after
/// waiting for the devices, once `limit` have gathered: a wait every `limit` steps, which
/// costs nothing while the host is at most `limit` steps ahead of the devices anyway. On a
/// run without CUDA devices the copies are done when the step returns, and a batch is
/// released at once.
pub struct InFlight {
    batches: VecDeque<TensorBatch>,
    cuda: Vec<usize>,
    limit: usize,
}

/// Batches kept in flight before [`InFlight`] waits for the devices.
pub const IN_FLIGHT_LIMIT: usize = 8;

impl InFlight {
    /// For a run on `devices`.
    pub fn new(devices: &[Device], limit: usize) -> InFlight {
        let mut cuda: Vec<usize> =
            devices.iter().filter_map(|d| if let Device::Cuda(i) = d { Some(*i) } else { None }).collect();
        cuda.dedup();
        InFlight { batches: VecDeque::new(), cuda, limit: limit.max(1) }
    }

    /// A batch whose step has been issued.
    pub fn push(&mut self, batch: TensorBatch) {
        if self.cuda.is_empty() {
            return;
        }
        self.batches.push_back(batch);
        if self.batches.len() >= self.limit {
            self.settle();
        }
    }

    /// Waits for the devices and releases every batch.
    pub fn settle(&mut self) {
        for &device in &self.cuda {
            tch::Cuda::synchronize(device as i64);
        }
        self.batches.clear();
    }

    /// Batches not yet released.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether every batch has been released.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

/// Buffers one input worker may own in all: its queue, the batch it is filling, the one the
/// loop is using and those in flight.
fn pool_capacity(depth: usize) -> usize {
    depth + IN_FLIGHT_LIMIT + 2
}

/// Worker threads producing batches `first_step, first_step + 1, …` ahead of the consumer.
/// Worker `w` makes the steps `≡ w (mod workers)` into its own bounded queue, and
/// [`InputQueue::next_batch`] reads the queues in turn, so batches arrive in step order.
pub struct InputQueue {
    queues: Vec<Receiver<Result<TensorBatch, tch::TchError>>>,
    next_step: u64,
    first_step: u64,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl InputQueue {
    /// Starts `workers` threads (at least one), each keeping up to `depth` batches of
    /// `batch_size` examples ready, in pinned memory when `pin_for` is a CUDA device.
    pub fn start(
        records: Arc<Records>,
        seed: u64,
        batch_size: usize,
        first_step: u64,
        workers: (usize, usize),
        pin_for: Option<Device>,
    ) -> InputQueue {
        InputQueue::start_slice(records, seed, (batch_size, (batch_size, 0)), first_step, workers, pin_for)
    }

    /// [`InputQueue::start`] for one process's share of a data-parallel step: batches of
    /// `batch_size` examples, examples `first ..` of steps of `step_examples` (see
    /// [`BatchMaker::slice`]), as `(batch_size, (step_examples, first))`.
    pub fn start_slice(
        records: Arc<Records>,
        seed: u64,
        (batch_size, slice): (usize, (usize, usize)),
        first_step: u64,
        (workers, depth): (usize, usize),
        pin_for: Option<Device>,
    ) -> InputQueue {
        let workers = workers.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut queues = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(depth.max(1));
            let mut maker = BatchMaker::slice(Arc::clone(&records), seed, batch_size, slice);
            let stop = Arc::clone(&stop);
            let handle = std::thread::Builder::new()
                .name(format!("input-{w}"))
                .spawn(move || {
                    let mut pool = Pool::new(batch_size, pin_for, pool_capacity(depth));
                    let mut step = first_step + w as u64;
                    while let Some(buffers) = pool.take(&stop) {
                        let batch = buffers.and_then(|(images, labels)| {
                            maker.fill_buffers(step, images, labels, Some(pool.give_back()))
                        });
                        if tx.send(batch).is_err() {
                            break;
                        }
                        step += workers as u64;
                    }
                })
                .expect("spawning an input thread");
            queues.push(rx);
            handles.push(handle);
        }
        InputQueue { queues, next_step: first_step, first_step, stop, workers: handles }
    }

    /// The next batch, in step order (blocks until it is ready).
    pub fn next_batch(&mut self) -> Result<TensorBatch, tch::TchError> {
        let queue = &self.queues[((self.next_step - self.first_step) % self.queues.len() as u64) as usize];
        let batch = queue.recv().expect("input worker thread died")?;
        debug_assert_eq!(batch.step, self.next_step);
        self.next_step += 1;
        Ok(batch)
    }
}

/// One input worker's batch buffers: allocated as needed up to a capacity, then reused.
struct Pool {
    batch_size: usize,
    pin_for: Option<Device>,
    capacity: usize,
    allocated: usize,
    returned: Receiver<(Tensor, Tensor)>,
    give_back: Sender<(Tensor, Tensor)>,
}

impl Pool {
    fn new(batch_size: usize, pin_for: Option<Device>, capacity: usize) -> Pool {
        let (give_back, returned) = channel();
        Pool { batch_size, pin_for, capacity, allocated: 0, returned, give_back }
    }

    /// Where a batch sends its buffers back.
    fn give_back(&self) -> Sender<(Tensor, Tensor)> {
        self.give_back.clone()
    }

    /// A free pair of buffers (a returned one, else a new one while under capacity, else the
    /// next one returned), or `None` once `stop` is set.
    fn take(&mut self, stop: &AtomicBool) -> Option<Result<(Tensor, Tensor), tch::TchError>> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            if let Ok(buffers) = self.returned.try_recv() {
                return Some(Ok(buffers));
            }
            if self.allocated < self.capacity {
                self.allocated += 1;
                return Some(batch_buffers(self.batch_size, self.pin_for));
            }
            if let Ok(buffers) = self.returned.recv_timeout(Duration::from_millis(50)) {
                return Some(Ok(buffers));
            }
        }
    }
}

impl Drop for InputQueue {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers makes a worker blocked on a full queue return.
        self.queues.clear();
        for handle in self.workers.drain(..) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::IMAGE_LEN;

    fn records(n: usize) -> Arc<Records> {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|r| {
                std::iter::once((r % 10) as u8).chain((0..IMAGE_LEN).map(move |i| ((i * 7 + r * 31) % 256) as u8))
            })
            .collect();
        Arc::new(Records::from_bytes(bytes, "synthetic").unwrap())
    }

    fn from_tensors(batch: TensorBatch) -> Batch {
        assert_eq!(batch.images.size(), [8, 3, 24, 24]);
        Batch {
            step: batch.step,
            images: Vec::<f32>::try_from(batch.images.flatten(0, -1)).unwrap(),
            labels: Vec::<i64>::try_from(&batch.labels).unwrap(),
        }
    }

    #[test]
    fn every_epoch_visits_every_example_once_in_a_new_order() {
        let a = epoch_order(3, 0, 100);
        let b = epoch_order(3, 1, 100);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(3, 0, 100));
    }

    #[test]
    fn batches_cross_epoch_boundaries() {
        // 10 examples, batch 4: step 2 takes positions 8, 9 (epoch 0) and 10, 11 (epoch 1).
        let data = records(10);
        let mut maker = BatchMaker::new(Arc::clone(&data), 5, 4);
        let batch = maker.make(2);
        let (e0, e1) = (epoch_order(5, 0, 10), epoch_order(5, 1, 10));
        let expected: Vec<i64> =
            [e0[8], e0[9], e1[0], e1[1]].iter().map(|&i| i64::from(data.label(i as usize))).collect();
        assert_eq!(batch.labels, expected);
    }

    #[test]
    fn batches_filled_in_reused_buffers_stay_right() {
        let data = records(50);
        let mut direct = BatchMaker::new(Arc::clone(&data), 4, 8);
        let mut queue = InputQueue::start(Arc::clone(&data), 4, 8, 0, (1, 2), None);
        for step in 0..40 {
            assert_eq!(from_tensors(queue.next_batch().unwrap()), direct.make(step), "step {step}");
        }
    }

    #[test]
    fn a_pool_reuses_returned_buffers_and_allocates_no_more_than_its_capacity() {
        let never = AtomicBool::new(false);
        let mut pool = Pool::new(2, None, 2);
        let a = pool.take(&never).unwrap().unwrap();
        let _b = pool.take(&never).unwrap().unwrap();
        let a_address = a.0.data_ptr();
        pool.give_back().send(a).unwrap();
        // `a`'s storage is still alive (in the pool), so a fresh allocation could not have
        // its address.
        let c = pool.take(&never).unwrap().unwrap();
        assert_eq!(c.0.data_ptr(), a_address);
        assert_eq!(pool.allocated, 2);
        let stop = AtomicBool::new(true);
        assert!(pool.take(&stop).is_none(), "a stopped worker takes nothing");
    }

    #[test]
    fn in_flight_batches_without_cuda_are_released_at_once() {
        let mut in_flight = InFlight::new(&[Device::Cpu], 4);
        let mut maker = BatchMaker::new(records(10), 1, 2);
        in_flight.push(maker.make_tensors(0, None).unwrap());
        assert!(in_flight.is_empty());
    }

    #[test]
    fn queued_batches_do_not_depend_on_the_worker_count() {
        let data = records(50);
        let mut direct = BatchMaker::new(Arc::clone(&data), 9, 8);
        let expected: Vec<Batch> = (3..10).map(|s| direct.make(s)).collect();
        for workers in [1, 3] {
            let mut queue = InputQueue::start(Arc::clone(&data), 9, 8, 3, (workers, 2), None);
            let got: Vec<Batch> = (0..7).map(|_| from_tensors(queue.next_batch().unwrap())).collect();
            assert_eq!(got, expected, "{workers} workers");
        }
    }
}
