//! Reusable buffers: once a [`Workspace`] has served a batch size, later calls with that
//! size or smaller allocate nothing (with one thread; with more, only the thread starts do).

use super::plan::Plan;

/// Buffers of one worker thread: per-image ping-pong maps and scratch (`col`: the
/// convolutions' zero-padded input and packed im2col matrix), plus the dense activations
/// of its chunk of the batch.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) ping: Vec<f32>,
    pub(crate) pong: Vec<f32>,
    pub(crate) col: Vec<f32>,
    pub(crate) rows_a: Vec<f32>,
    pub(crate) rows_b: Vec<f32>,
}

impl Scratch {
    /// Grows the buffers (never shrinks them) to serve `rows` examples.
    fn reserve(&mut self, plan: &Plan, rows: usize) {
        grow(&mut self.ping, plan.map_len);
        grow(&mut self.pong, plan.map_len);
        grow(&mut self.col, plan.col_len);
        grow(&mut self.rows_a, rows * plan.dense_len);
        grow(&mut self.rows_b, rows * plan.dense_len);
    }

    fn bytes(&self) -> usize {
        let floats =
            [&self.ping, &self.pong, &self.col, &self.rows_a, &self.rows_b].iter().map(|v| v.len()).sum::<usize>();
        floats * std::mem::size_of::<f32>()
    }
}

fn grow(buffer: &mut Vec<f32>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
}

/// The scratch memory of [`super::CpuEngine`], the matrix products' packing buffers
/// included: one set of buffers per worker thread.
///
/// [`super::CpuEngine::logits_with`] (and [`super::CpuEngine::logits_flat_with`]) takes one explicitly; the [`crate::Engine`]
/// implementation keeps a small pool of them so that a shared engine reuses memory too.
///
/// ```
/// use infer::cpu::{CpuEngine, Workspace};
/// let engine = CpuEngine::new(&infer::random_weights(1), 1)?;
/// let mut workspace = Workspace::new();
/// let input = vec![0.0f32; 2 * model_format::arch::INPUT_LEN];
/// let mut logits = [0.0f32; 2 * model_format::NUM_CLASSES];
/// engine.logits_flat_with(&mut workspace, &input, 2, &mut logits)?;
/// assert_eq!(workspace.bytes(), engine.workspace_bytes(2));
/// # Ok::<(), infer::InferError>(())
/// ```
#[derive(Debug, Default)]
pub struct Workspace {
    pub(crate) slots: Vec<Scratch>,
}

impl Workspace {
    /// An empty workspace; it grows on first use.
    pub fn new() -> Self {
        Workspace::default()
    }

    /// Makes room for `workers` threads of `rows` examples each.
    pub(crate) fn reserve(&mut self, plan: &Plan, workers: usize, rows: usize) {
        if self.slots.len() < workers {
            self.slots.resize_with(workers, Scratch::default);
        }
        for slot in &mut self.slots[..workers] {
            slot.reserve(plan, rows);
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.slots.iter().map(Scratch::bytes).sum()
    }
}
