//! The pure-Rust CPU engine: for the convolutions, im2col written straight into a packed
//! layout and our own register-blocked single-precision product (`gemm.rs`) that adds the
//! bias and applies the ReLU as it stores; register-blocked dot products for the fully
//! connected layers (`dense.rs`); direct loops for pooling and LRN. No C or C++ code.
//!
//! # Kernels
//!
//! The inner loops come in three versions, picked at run time ([`Kernel`]): AVX-512, AVX2
//! with FMA, and portable Rust. All three compute every value with the same chain of fused
//! multiply-adds in the same order (the portable one with [`f32::mul_add`]), so they give
//! the same bits, and the bundled model's exact accuracy counts hold on any machine.
//! [`CpuEngine::new`] takes the fastest, or the one [`KERNEL_ENV`] names;
//! [`CpuEngine::with_kernel`] takes one explicitly.
//!
//! # Memory
//!
//! The engine holds a copy of the weights: 1,068,298 floats, the convolution kernels
//! packed for the product (padded to a whole number of row panels), about 4.3 MB in all
//! ([`CpuEngine::weight_bytes`]; the [`Weights`] it was built from can be dropped).
//! Each worker thread needs about 1.3 MB of scratch for one image at a time (the packed
//! im2col matrix of conv2: 1,600 × 144 floats, the zero-padded input, and two 64×24×24
//! maps; pooling and LRN keep a few hundred bytes on the stack) and 18 KB per example of its share of the batch for the fully connected part;
//! see [`CpuEngine::workspace_bytes`] for the exact figure at a batch size (about
//! 1.3 MB at batch 1 and 3.6 MB at batch 128 on one thread).
//!
//! # Allocation
//!
//! Everything a call needs lives in a [`Workspace`]: the first call sizes it for its batch
//! size, and later calls with that size or smaller allocate nothing at all, on any thread
//! and with any thread count (`tests/allocations.rs` counts every thread with a global
//! allocator): the helper threads are handed each call's work as a borrowed closure, and
//! wait on a mutex and condition variables that never allocate. What does allocate is
//! building the engine (the weights, and with `threads > 1` the helpers' shared state,
//! names and stacks, once) and a workspace's first call at a larger batch.
//! [`Engine::logits`] keeps the workspaces of finished calls (one per concurrent caller),
//! so a warm shared engine allocates nothing either.
//!
//! # Threads
//!
//! With `threads = 1` the engine runs on the calling thread and starts no thread. With more,
//! [`CpuEngine::new`] starts `threads - 1` helper threads that live as long as the engine
//! (named `infer-cpu-N`; they spin for 50 µs after each piece of work, then sleep). A batch
//! is split into that many chunks, one per thread; a batch smaller than that (one image)
//! shares out each layer instead: the im2col rows and then the output channels of each
//! convolution, the channels of pooling and LRN, and local3's outputs. One call at a
//! time uses the helpers: a concurrent call on a shared engine runs on its own thread.
//! The engine does not use `matrixmultiply` (nor its `MATMUL_NUM_THREADS` pool), so
//! `threads` is the whole story. Results are bitwise the same for any thread count and any
//! batch split.

mod conv;
mod dense;
mod gemm;
mod int8;
mod kernel;
mod lrn;
mod plan;
mod pool;
mod workers;
mod workspace;

use std::sync::Mutex;

use model_format::arch::INPUT_LEN;
use model_format::{Model, QuantizedWeights, Weights};

use ndarray::{ArrayView4, ArrayViewMut2};

use crate::engine::{check_input, check_output, Engine};
use crate::error::InferError;
use crate::error::MAX_INPUT_MAGNITUDE;
#[doc(hidden)]
pub use gemm::ProductBench;
use int8::Int8Plan;
pub use kernel::{Kernel, KERNEL_ENV};
use plan::Plan;
pub use workers::HELPER_THREAD_PREFIX;
use workers::{SharedChunks, Team, Workers};
pub use workspace::Workspace;
use workspace::{Scratch, Sizes};

/// The pure-Rust engine (backend name `"cpu"`).
///
/// ```
/// use infer::{Engine, cpu::CpuEngine};
/// let engine = CpuEngine::new(&infer::random_weights(7), 1)?;
/// let input = vec![0.5f32; model_format::arch::INPUT_LEN]; // one preprocessed image
/// let mut logits = [0.0f32; model_format::NUM_CLASSES];
/// engine.logits_flat(&input, 1, &mut logits)?;
/// assert!(logits.iter().all(|v| v.is_finite()));
/// # Ok::<(), infer::InferError>(())
/// ```
#[derive(Debug)]
pub struct CpuEngine {
    net: Net,
    threads: usize,
    /// The `threads - 1` helper threads, started here and kept for the engine's life.
    workers: Workers,
    /// Workspaces of finished calls, reused by the next ones (one per concurrent caller).
    spare: Mutex<Vec<Workspace>>,
}

impl CpuEngine {
    /// Builds the engine from validated weights; `threads` (at least 1) is how many threads
    /// one call may use (the engine starts `threads - 1` helper threads now). The kernel is
    /// the fastest this CPU runs, unless [`KERNEL_ENV`] names another (an unknown name, or
    /// one this CPU cannot run, is an error).
    pub fn new(weights: &Weights, threads: usize) -> Result<Self, InferError> {
        CpuEngine::with_kernel(weights, threads, Kernel::from_env()?)
    }

    /// Like [`CpuEngine::new`], with the kernel given: every kernel gives the same bits, so
    /// this is for tests and benchmarks. A kernel this CPU cannot run is an error.
    ///
    /// ```
    /// use infer::cpu::{CpuEngine, Kernel};
    /// let engine = CpuEngine::with_kernel(&infer::random_weights(0), 1, Kernel::Portable)?;
    /// assert_eq!(engine.kernel(), Kernel::Portable);
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn with_kernel(weights: &Weights, threads: usize, kernel: Kernel) -> Result<Self, InferError> {
        model_format::bounds::check_float(weights, MAX_INPUT_MAGNITUDE)?;
        CpuEngine::start(Net::Float(Plan::build(weights, kernel)?), threads)
    }

    /// The engine on the int8 model: integer products accumulated in `i32` (AVX-512 VNNI,
    /// AVX2 or portable, after the kernel chosen as for [`CpuEngine::new`]), bitwise the same
    /// as `model_format::reference::int8_logits` (feature `reference`) with any kernel and thread count.
    ///
    /// ```
    /// use infer::{Engine, cpu::CpuEngine};
    /// use model_format::quantized::{ActivationQuant, QuantizedWeights};
    /// let model = QuantizedWeights::uniform(0.001, ActivationQuant::from_range(-2.0, 2.0));
    /// let engine = CpuEngine::new_int8(&model, 1)?;
    /// let mut logits = [0.0f32; 10];
    /// engine.logits_flat(&[0.5; model_format::arch::INPUT_LEN], 1, &mut logits)?;
    /// assert_eq!(logits, model_format::reference::int8_logits(&model, &[0.5; model_format::arch::INPUT_LEN]));
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn new_int8(model: &QuantizedWeights, threads: usize) -> Result<Self, InferError> {
        CpuEngine::int8_with_kernel(model, threads, Kernel::from_env()?)
    }

    /// Like [`CpuEngine::new_int8`], with the kernel given (for tests and benchmarks).
    pub fn int8_with_kernel(model: &QuantizedWeights, threads: usize, kernel: Kernel) -> Result<Self, InferError> {
        model_format::bounds::check_int8(model, MAX_INPUT_MAGNITUDE)?;
        CpuEngine::start(Net::Int8(Int8Plan::build(model, kernel)?), threads)
    }

    /// The engine on a model of either variant (see [`Model`]), with the kernel chosen as for
    /// [`CpuEngine::new`].
    ///
    /// ```
    /// let model = model_format::Model::Float(infer::random_weights(3));
    /// let engine = infer::cpu::CpuEngine::for_model(&model, 1)?;
    /// assert!(!engine.is_int8());
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn for_model(model: &Model, threads: usize) -> Result<Self, InferError> {
        match model {
            Model::Float(weights) => CpuEngine::new(weights, threads),
            Model::Int8(quantized) => CpuEngine::new_int8(quantized, threads),
        }
    }

    fn start(net: Net, threads: usize) -> Result<Self, InferError> {
        // 0 has always meant 1 here; above the bound is refused, not attempted.
        let threads = crate::error::check_threads("threads", threads.max(1))?;
        Ok(CpuEngine { net, threads, workers: Workers::new(threads)?, spare: Mutex::new(Vec::new()) })
    }

    /// The kernel the engine runs.
    pub fn kernel(&self) -> Kernel {
        match &self.net {
            Net::Float(plan) => plan.kernel,
            Net::Int8(plan) => plan.kernel,
        }
    }

    /// Whether the engine runs the int8 model.
    pub fn is_int8(&self) -> bool {
        matches!(self.net, Net::Int8(_))
    }

    /// Threads one call may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Scratch bytes a call with `batch` examples needs (beside the 4.3 MB of weights): the
    /// size of the [`Workspace`] such a call grows, after which it allocates nothing.
    ///
    /// ```
    /// let engine = infer::cpu::CpuEngine::new(&infer::random_weights(0), 1)?;
    /// assert!(engine.workspace_bytes(128) > engine.workspace_bytes(1));
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn workspace_bytes(&self, batch: usize) -> usize {
        let mut workspace = Workspace::new();
        let (workers, rows) = split(batch.max(1), self.threads);
        workspace.reserve(self.net.sizes(), workers, rows);
        workspace.bytes()
    }

    /// Bytes of weights the engine holds (the parameters, with the convolution kernels
    /// packed and padded for the matrix product; for the int8 model, the `i8` weights padded
    /// to whole rows and four bytes per output channel for each of its correction, scale and
    /// bias).
    ///
    /// ```
    /// let engine = infer::cpu::CpuEngine::new(&infer::random_weights(0), 1)?;
    /// assert!(engine.weight_bytes() >= 4 * model_format::PARAM_COUNT);
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn weight_bytes(&self) -> usize {
        match &self.net {
            Net::Float(plan) => plan.weight_floats() * std::mem::size_of::<f32>(),
            Net::Int8(plan) => plan.weight_bytes(),
        }
    }

    /// Like [`Engine::logits_into`], with a workspace the caller holds: no lock, no pool, and,
    /// with one thread and standard-layout arrays, no allocation once the workspace has
    /// grown to the batch size.
    ///
    /// ```
    /// use infer::cpu::{CpuEngine, Workspace};
    /// use ndarray::{Array2, Array4};
    /// let engine = CpuEngine::new(&infer::random_weights(1), 1)?;
    /// let mut workspace = Workspace::new();
    /// let input = Array4::<f32>::from_elem((4, 3, 24, 24), 0.25);
    /// let mut logits = Array2::<f32>::zeros((4, 10));
    /// engine.logits_with(&mut workspace, input.view(), logits.view_mut())?;
    /// assert!(logits.iter().all(|v| v.is_finite()));
    /// # Ok::<(), infer::InferError>(())
    /// ```
    pub fn logits_with(
        &self,
        workspace: &mut Workspace,
        input: ArrayView4<f32>,
        mut out: ArrayViewMut2<f32>,
    ) -> Result<(), InferError> {
        let batch = check_input(&input)?;
        check_output(&out, batch)?;
        let input = input.as_standard_layout();
        let flat = input.as_slice().expect("a standard-layout array is contiguous");
        match out.as_slice_mut() {
            Some(slice) => self.logits_flat_with(workspace, flat, batch, slice),
            None => {
                let mut logits = vec![0f32; batch * self.net.out_len()];
                self.logits_flat_with(workspace, flat, batch, &mut logits)?;
                out.iter_mut().zip(logits).for_each(|(o, v)| *o = v);
                Ok(())
            }
        }
    }

    /// Like [`Engine::logits_flat`], with a workspace the caller holds.
    pub fn logits_flat_with(
        &self,
        workspace: &mut Workspace,
        input: &[f32],
        batch: usize,
        logits: &mut [f32],
    ) -> Result<(), InferError> {
        let out_len = self.net.out_len();
        check_lengths(input, batch, logits, out_len)?;
        let team = self.workers.team();
        let (workers, rows) = split(batch, team.size());
        workspace.reserve(self.net.sizes(), workers, rows);
        if workers == 1 {
            // Fewer images than threads (a single image): the threads share each layer.
            self.net.run_chunk(&mut workspace.slots[0], input, logits, &team);
            return Ok(());
        }
        let slots = SharedChunks::new(&mut workspace.slots[..workers], 1);
        let outputs = SharedChunks::new(logits, rows * out_len);
        team.run(workers, &|i| {
            // SAFETY: each part index runs once, so each chunk is borrowed once.
            let (slot, out) = unsafe { (&mut slots.get(i)[0], outputs.get(i)) };
            let input = &input[i * rows * INPUT_LEN..][..out.len() / out_len * INPUT_LEN];
            self.net.run_chunk(slot, input, out, &Team::alone());
        });
        Ok(())
    }
}

/// The compiled network of either variant.
#[derive(Debug)]
enum Net {
    Float(Plan),
    Int8(Int8Plan),
}

impl Net {
    fn sizes(&self) -> &Sizes {
        match self {
            Net::Float(plan) => &plan.sizes,
            Net::Int8(plan) => plan.sizes(),
        }
    }

    fn out_len(&self) -> usize {
        match self {
            Net::Float(plan) => plan.out_len(),
            Net::Int8(plan) => plan.out_len(),
        }
    }

    fn run_chunk(&self, scratch: &mut Scratch, input: &[f32], logits: &mut [f32], team: &Team) {
        match self {
            Net::Float(plan) => run_chunk(plan, scratch, input, logits, team),
            Net::Int8(plan) => plan.run_chunk(scratch, input, logits, team),
        }
    }
}

/// `(workers, rows per worker)` for a batch on `threads` threads.
fn split(batch: usize, threads: usize) -> (usize, usize) {
    let workers = threads.min(batch).max(1);
    let rows = batch.div_ceil(workers);
    (batch.div_ceil(rows), rows)
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn logits_flat(&self, input: &[f32], batch: usize, logits: &mut [f32]) -> Result<(), InferError> {
        let taken = self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let mut workspace = taken.unwrap_or_default();
        let result = self.logits_flat_with(&mut workspace, input, batch, logits);
        self.spare.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(workspace);
        result
    }
}

fn check_lengths(input: &[f32], batch: usize, logits: &[f32], out_len: usize) -> Result<(), InferError> {
    if batch == 0 {
        return Err(InferError::EmptyBatch);
    }
    if input.len() != batch * INPUT_LEN {
        return Err(InferError::Length { what: "input", expected: batch * INPUT_LEN, found: input.len() });
    }
    if logits.len() != batch * out_len {
        return Err(InferError::Length { what: "logits", expected: batch * out_len, found: logits.len() });
    }
    Ok(())
}

/// The whole forward pass for one chunk of the batch on the current thread, helped by the
/// rest of the team inside each layer.
fn run_chunk(plan: &Plan, scratch: &mut Scratch, input: &[f32], logits: &mut [f32], team: &Team) {
    let rows = input.len() / INPUT_LEN;
    let Scratch { ping, pong, col, rows_a, rows_b, .. } = scratch;
    let mut maps = MapBuffers { ping, pong, col };
    for (image, flat) in input.chunks_exact(INPUT_LEN).zip(rows_a.chunks_exact_mut(plan.sizes.flat_len)) {
        map_steps(plan, image, &mut maps, flat, team);
    }
    let (mut current, mut next) = (rows_a, rows_b);
    for step in &plan.dense_steps {
        step.run(current, rows, next, team);
        std::mem::swap(&mut current, &mut next);
    }
    logits.copy_from_slice(&current[..logits.len()]);
}

/// The per-image buffers of one worker.
struct MapBuffers<'a> {
    ping: &'a mut [f32],
    pong: &'a mut [f32],
    col: &'a mut [f32],
}

/// Runs the per-image steps of one image and writes the flattened result to `flat`.
fn map_steps(plan: &Plan, image: &[f32], maps: &mut MapBuffers, flat: &mut [f32], team: &Team) {
    let Some((first, rest)) = plan.map_steps.split_first() else {
        flat.copy_from_slice(&image[..flat.len()]);
        return;
    };
    first.run(image, maps.ping, maps.col, team, plan.kernel);
    let (mut current, mut next) = (&mut *maps.ping, &mut *maps.pong);
    for step in rest {
        step.run(current, next, maps.col, team, plan.kernel);
        std::mem::swap(&mut current, &mut next);
    }
    flat.copy_from_slice(&current[..flat.len()]);
}
