//! Reusable buffers: once a [`Workspace`] has served a batch size, later calls with that
//! size or smaller allocate nothing (with one thread; with more, only the thread starts do).

/// The buffer sizes a compiled network (float or int8) needs, per image or per example.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sizes {
    /// Largest per-image map activation (floats).
    pub(crate) map_len: usize,
    /// Float convolution scratch for one image: packed im2col and padded input (floats).
    pub(crate) col_len: usize,
    /// Features entering the first dense layer.
    pub(crate) flat_len: usize,
    /// Widest per-example vector in the dense part (floats).
    pub(crate) dense_len: usize,
    /// Int8 convolution scratch for one image: quantized padded input and im2col rows (bytes).
    pub(crate) byte_len: usize,
    /// Widest quantized dense input per example (bytes).
    pub(crate) qrow_len: usize,
}

/// Buffers of one worker thread: per-image ping-pong maps and scratch (`col`: the float
/// convolutions' zero-padded input and packed im2col matrix; `bytes`: the int8 ones'), plus
/// the dense activations of its chunk of the batch (`qrows`: quantized, for int8 layers).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) ping: Vec<f32>,
    pub(crate) pong: Vec<f32>,
    pub(crate) col: Vec<f32>,
    pub(crate) rows_a: Vec<f32>,
    pub(crate) rows_b: Vec<f32>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) qrows: Vec<u8>,
}

impl Scratch {
    /// Grows the buffers (never shrinks them) to serve `rows` examples.
    fn reserve(&mut self, sizes: &Sizes, rows: usize) {
        grow(&mut self.ping, sizes.map_len);
        grow(&mut self.pong, sizes.map_len);
        grow(&mut self.col, sizes.col_len);
        grow(&mut self.rows_a, rows * sizes.dense_len);
        grow(&mut self.rows_b, rows * sizes.dense_len);
        grow(&mut self.bytes, sizes.byte_len);
        grow(&mut self.qrows, rows * sizes.qrow_len);
    }

    fn bytes(&self) -> usize {
        let floats =
            [&self.ping, &self.pong, &self.col, &self.rows_a, &self.rows_b].iter().map(|v| v.len()).sum::<usize>();
        floats * std::mem::size_of::<f32>() + self.bytes.len() + self.qrows.len()
    }
}

fn grow<T: Clone + Default>(buffer: &mut Vec<T>, len: usize) {
    if buffer.len() < len {
        buffer.resize(len, T::default());
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
    pub(crate) fn reserve(&mut self, sizes: &Sizes, workers: usize, rows: usize) {
        if self.slots.len() < workers {
            self.slots.resize_with(workers, Scratch::default);
        }
        for slot in &mut self.slots[..workers] {
            slot.reserve(sizes, rows);
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.slots.iter().map(Scratch::bytes).sum()
    }
}
