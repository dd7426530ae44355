//! The training loop: distorted batches from the input queue, forward/backward on every
//! tower, SGD with the staircase learning rate, the weights' moving average, periodic logs,
//! summaries, evaluations and checkpoints, and a final checkpoint on any orderly exit
//! (the step limit or a stop request such as Ctrl-C).
//!
//! The loop never waits for the device except where the host needs a value: the losses stay
//! on the device (with their moving averages) and are read back only at log, summary,
//! evaluation and checkpoint steps, and at the end. A non-finite loss makes those averages
//! non-finite for good, so divergence at any step is caught at the next read, and no
//! checkpoint of a diverged model is written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use model_format::cifar::Records;
use tch::{Device, Kind, Tensor};

use crate::augment::{AugmentOn, DeviceInputs};
use crate::checkpoint::{self, Checkpoint};
pub use crate::config::TrainConfig;
use crate::ema::MovingAverage;
use crate::error::TrainError;
use crate::evaluate::EvalSet;
use crate::inputs::{InFlight, InputQueue, TensorBatch, IN_FLIGHT_LIMIT};
use crate::model::tensors_to_values;
use crate::progress::Progress;
use crate::schedule::LearningRate;
use crate::tensorboard::{StepSummary, SummaryThread, IMAGES_SHOWN};
use crate::towers::{StepOutput, Towers};
use model_format::init::initial_tensors;

/// Decay of the loss moving averages shown in TensorBoard (the tutorial's 0.9).
const LOSS_AVERAGE_DECAY: f64 = 0.9;
/// Batches each input worker keeps ready.
pub const QUEUE_DEPTH: usize = 4;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Steps completed (including resumed ones).
    pub step: u64,
    /// The checkpoint written at the end.
    pub checkpoint: PathBuf,
    /// Total loss of the last step (NaN when no step ran).
    pub last_loss: f64,
    /// Steps per second over this run.
    pub steps_per_sec: f64,
    /// Examples per second over this run's steps (all towers of every rank).
    pub examples_per_sec: f64,
    /// Fraction of this run's wall time spent waiting for input.
    pub input_wait: f64,
    /// True when a stop request ended the run before `max_steps`.
    pub interrupted: bool,
    /// Fraction of this run's wall time the loop spent on summary steps (taking snapshots).
    pub summary_share: f64,
    /// Fraction of this run's wall time the summary thread spent reading back, making
    /// histograms and writing, beside the steps.
    pub summary_thread_share: f64,
    /// Seconds per step spent in the data-parallel all-reduce (0 alone), waiting for the
    /// slowest rank included.
    pub all_reduce_per_step: f64,
}

/// The state that evolves step by step.
struct RunState {
    step: u64,
    seed: u64,
    towers: Towers,
    ema: MovingAverage,
    losses: DeviceLosses,
}

/// What the loop needs beside the state: the run's fixed parts.
struct Run<'a> {
    config: &'a TrainConfig,
    train_examples: usize,
    schedule: LearningRate,
    board: Option<SummaryThread>,
    /// Time the loop itself spent on summary steps (taking the snapshots, sending them).
    summary_time: std::time::Duration,
    eval_set: Option<EvalSet>,
    progress: Progress,
    /// The other processes of a data-parallel run.
    group: Option<&'a c10d::ProcessGroup>,
    /// Time spent in the gradients' all-reduce.
    all_reduce_time: std::time::Duration,
    /// This process's stop request (Ctrl-C).
    stop: &'a AtomicBool,
    /// Whether any rank asked to stop, as of the last all-reduce: ranks stop together after
    /// the same step, so none is left waiting in a collective.
    any_rank_stopping: bool,
}

/// Trains on `train` (the training records), evaluating on `test` when
/// `config.eval_every` asks; returns when `max_steps` are done or `stop` is set. Every flag
/// and the memory the batches need are checked before anything is written.
pub fn train(
    config: &TrainConfig,
    train: Arc<Records>,
    test: Option<&Records>,
    stop: &AtomicBool,
) -> Result<TrainOutcome, TrainError> {
    train_observed(config, train, test, stop, &mut |_, _| {})
}

/// [`train`], calling `observe` after every step with the number of steps done and what the
/// step computed: a window on the loop for tests and tools (e.g. which threads ran the
/// towers), without a log line.
pub fn train_observed(
    config: &TrainConfig,
    train: Arc<Records>,
    test: Option<&Records>,
    stop: &AtomicBool,
    observe: &mut dyn FnMut(u64, &StepOutput),
) -> Result<TrainOutcome, TrainError> {
    train_in_group(config, train, test, stop, observe, None)
}

/// [`train_observed`] as one rank of a data-parallel run: `group` joins the
/// `config.world_size` processes (`None` exactly when the run is alone). Every rank starts
/// from rank 0's weights (or its checkpoint), makes its towers' share of each step's
/// examples, and applies the gradients averaged over every tower of every rank (one
/// all-reduce a step), so all ranks make the same updates; rank 0 alone writes checkpoints,
/// summaries and logs, and evaluates.
pub fn train_in_group(
    config: &TrainConfig,
    train: Arc<Records>,
    test: Option<&Records>,
    stop: &AtomicBool,
    observe: &mut dyn FnMut(u64, &StepOutput),
    group: Option<&c10d::ProcessGroup>,
) -> Result<TrainOutcome, TrainError> {
    config.check_flags()?;
    match group {
        None if config.world_size > 1 => {
            return Err(TrainError::Config(format!(
                "WORLD_SIZE {} needs a process group (none was connected)",
                config.world_size
            )))
        }
        Some(g) if (g.rank(), g.world_size()) != (config.rank, config.world_size) => {
            return Err(TrainError::Config(format!(
                "the process group is rank {} of {}, the settings say RANK {} of WORLD_SIZE {}",
                g.rank(),
                g.world_size(),
                config.rank,
                config.world_size
            )))
        }
        _ => {}
    }
    crate::memory::check_fits(config, QUEUE_DEPTH, crate::memory::available_bytes())?;
    crate::cudnn::configure(config.deterministic_cudnn);
    if config.is_chief() {
        std::fs::create_dir_all(&config.train_dir).map_err(TrainError::io(&config.train_dir))?;
    }
    let mut state = match group {
        None => start_state(config, train.len())?,
        Some(group) => start_state_in_group(config, train.len(), group)?,
    };
    let mut run = Run {
        config,
        train_examples: train.len(),
        schedule: LearningRate::new(
            config.learning_rate,
            config.learning_rate_decay_factor,
            config.epochs_per_decay,
            config.batch_size,
            config.total_towers(),
        ),
        board: if config.summary_every > 0 && config.is_chief() {
            Some(SummaryThread::create(&config.train_dir)?)
        } else {
            None
        },
        summary_time: std::time::Duration::ZERO,
        eval_set: match (config.eval_every, test, config.is_chief()) {
            (0, _, _) | (_, None, _) | (_, _, false) => None,
            (_, Some(records), true) => Some(EvalSet::new(records)),
        },
        progress: Progress::new(config.batch_size, config.total_towers(), config.max_steps),
        group,
        all_reduce_time: std::time::Duration::ZERO,
        stop,
        any_rank_stopping: false,
    };
    let mut inputs = Inputs::start(config, train, &state)?;
    let (first_step, run_start) = (state.step, Instant::now());

    let stopping = |run: &Run| match run.group {
        None => stop.load(Ordering::Relaxed),
        Some(_) => run.any_rank_stopping,
    };
    while state.step < config.max_steps && !stopping(&run) {
        let waited = Instant::now();
        let batch = inputs.next_batch(state.step)?;
        run.progress.step_done(waited.elapsed());
        let out = train_step(&mut run, &mut state, &batch)?;
        inputs.done_with(batch);
        observe(state.step, &out);
    }
    drop(inputs);
    let last_loss = state.losses.read(state.step)?.map_or(f64::NAN, |l| l.total);
    if let Some(group) = group {
        // A rank that stopped early (Ctrl-C) would leave the others in an all-reduce: meet
        // before saving, so that a lost rank is reported rather than a half-written end.
        group.barrier()?;
    }
    let checkpoint = if config.is_chief() {
        save(config, &state, run.train_examples)?
    } else {
        config.train_dir.join(checkpoint::file_name(state.step))
    };
    if let Some(board) = run.board.as_mut() {
        board.flush()?;
    }
    let seconds = run_start.elapsed().as_secs_f64().max(1e-9);
    let summary_thread = run.board.as_ref().map_or(0.0, |b| b.busy().as_secs_f64());
    let steps_run = (state.step - first_step) as f64;
    Ok(TrainOutcome {
        step: state.step,
        checkpoint,
        last_loss,
        steps_per_sec: steps_run / seconds,
        examples_per_sec: steps_run * config.world_batch() as f64 / seconds,
        input_wait: run.progress.total_input_wait(),
        interrupted: state.step < config.max_steps,
        summary_share: run.summary_time.as_secs_f64() / seconds,
        summary_thread_share: summary_thread / seconds,
        all_reduce_per_step: run.all_reduce_time.as_secs_f64() / steps_run.max(1.0),
    })
}

/// Where the step's batches come from: input threads of the host ([`AugmentOn::Host`]), or
/// batched ops on the first tower's device ([`AugmentOn::Device`]). Either way batch `s`
/// depends only on `(seed, s)`.
enum Inputs {
    Host { queue: InputQueue, in_flight: InFlight },
    Device(DeviceInputs),
}

impl Inputs {
    fn start(config: &TrainConfig, train: Arc<Records>, state: &RunState) -> Result<Inputs, TrainError> {
        let batch = config.global_batch();
        // This process's towers take their slice of the examples of every process's towers.
        let slice = (config.world_batch(), config.first_example());
        Ok(match config.augment_on {
            AugmentOn::Host => {
                // Pinned host memory speeds up (and makes asynchronous) the copies to a
                // CUDA device.
                let pin_for = config.devices.iter().copied().find(|d| d.is_cuda());
                let workers = (config.input_workers, QUEUE_DEPTH);
                Inputs::Host {
                    queue: InputQueue::start_slice(train, state.seed, (batch, slice), state.step, workers, pin_for),
                    in_flight: InFlight::new(&config.devices, IN_FLIGHT_LIMIT),
                }
            }
            AugmentOn::Device => {
                Inputs::Device(DeviceInputs::slice(train, state.seed, (batch, slice), state.towers.master().device())?)
            }
        })
    }

    fn next_batch(&mut self, step: u64) -> Result<TensorBatch, TrainError> {
        match self {
            Inputs::Host { queue, .. } => Ok(queue.next_batch()?),
            Inputs::Device(inputs) => {
                let (images, labels) = inputs.batch(step)?;
                Ok(TensorBatch::on_device(step, images, labels))
            }
        }
    }

    /// The step that used `batch` has been issued.
    fn done_with(&mut self, batch: TensorBatch) {
        if let Inputs::Host { in_flight, .. } = self {
            in_flight.push(batch);
        }
    }
}

impl Drop for Inputs {
    fn drop(&mut self) {
        if let Inputs::Host { in_flight, .. } = self {
            in_flight.settle();
        }
    }
}

/// One step on `batch`, then whatever this step number calls for (log, summaries,
/// evaluation, checkpoint): the only places where the host waits for the device.
fn train_step(run: &mut Run, state: &mut RunState, batch: &TensorBatch) -> Result<StepOutput, TrainError> {
    let config = run.config;
    let step = state.step;
    let summarise = run.board.is_some() && step.is_multiple_of(config.summary_every);
    let out = match run.group {
        None => state.towers.compute(&batch.images, &batch.labels, summarise)?,
        Some(group) => {
            let summed = state.towers.compute_sum(&batch.images, &batch.labels, summarise)?;
            let start = Instant::now();
            let asked = run.stop.load(Ordering::Relaxed);
            let (out, any_stopping) = all_reduce_mean(group, summed, config.total_towers(), asked)?;
            run.all_reduce_time += start.elapsed();
            run.any_rank_stopping = any_stopping;
            out
        }
    };
    let learning_rate = run.schedule.at(step);
    state.towers.apply(&out.gradients, learning_rate)?;
    state.step += 1;
    // TensorFlow's moving average reads global_step after the gradient step has
    // incremented it, so the first update uses num_updates = 1.
    state.ema.update(state.towers.master().flat(), state.step)?;
    state.losses.add(&out)?;

    let every = |n: u64| n > 0 && state.step.is_multiple_of(n);
    let log_now = every(config.log_frequency);
    let eval_now = run.eval_set.is_some() && every(config.eval_every);
    let save_now = every(config.checkpoint_every) && state.step < config.max_steps && config.is_chief();
    // Only rank 0 logs; the others read their losses back only where the chief would save.
    let log_now = log_now && config.is_chief();
    if !(log_now || summarise || eval_now || save_now) {
        return Ok(out);
    }
    let losses = state.losses.read(state.step)?.expect("a step ran");
    if log_now {
        log(run, state.step, &losses)?;
    }
    if summarise {
        let start = Instant::now();
        summarise_step(run, state, &out, &batch.images, learning_rate, &losses)?;
        run.summary_time += start.elapsed();
    }
    if eval_now {
        evaluate(run, state)?;
    }
    if save_now {
        save(config, state, run.train_examples)?;
    }
    Ok(out)
}

fn log(run: &mut Run, step: u64, losses: &HostLosses) -> Result<(), TrainError> {
    let rates = run.progress.take_rates();
    println!("{}", run.progress.line(step, losses.total, &rates));
    if let Some(board) = run.board.as_mut() {
        board.scalar("examples_per_sec", step, rates.examples_per_sec)?;
        board.scalar("input_wait_fraction", step, rates.input_wait)?;
    }
    Ok(())
}

fn summarise_step(
    run: &mut Run,
    state: &RunState,
    out: &StepOutput,
    images: &Tensor,
    learning_rate: f64,
    losses: &HostLosses,
) -> Result<(), TrainError> {
    let Some(board) = run.board.as_mut() else { return Ok(()) };
    let step = state.step;
    board.scalar("cross_entropy (raw)", step, losses.cross_entropy)?;
    board.scalar("cross_entropy", step, losses.cross_entropy_average)?;
    board.scalar("total_loss (raw)", step, losses.total)?;
    board.scalar("total_loss", step, losses.total_average)?;
    board.scalar("learning_rate", step, learning_rate)?;
    // Device-side snapshots, taken in stream order: the weights' buffer is updated in place
    // by the next steps, the batch's buffer is reused; the step's gradients and activations
    // are its own and are never rewritten, so they are sent as they are.
    let weights = weights_snapshot(state.towers.master())?;
    let shown = images.size()[0].min(IMAGES_SHOWN);
    board.step_summary(StepSummary {
        step,
        weights,
        gradients: state.towers.gradient_views(&out.gradients)?,
        activations: out.activations.as_ref().map(|a| a.iter().map(|(n, t)| (*n, t.shallow_clone())).collect()),
        images: images.f_narrow(0, 0, shown)?.copy(),
    })
}

/// The weights of `net` now, as a copy that later updates do not touch (one copy of the
/// buffer, on the net's device, in stream order), seen per tensor.
fn weights_snapshot(net: &crate::model::Net) -> Result<Vec<Tensor>, TrainError> {
    crate::flat::views(&net.flat().copy(), net.params())
}

fn evaluate(run: &mut Run, state: &RunState) -> Result<(), TrainError> {
    let Some(eval_set) = &run.eval_set else { return Ok(()) };
    let precision = eval_set.precision_of(&tensors_to_values(state.ema.shadow())?, state.towers.master().device())?;
    println!(
        "{}: step {}, precision @ 1 = {precision:.4} ({} test images, averaged weights)",
        crate::progress::utc_now(),
        state.step,
        eval_set.len()
    );
    if let Some(board) = run.board.as_mut() {
        board.scalar("precision @ 1", state.step, precision)?;
    }
    Ok(())
}

/// The losses of the steps so far, on the device: the last step's and the tutorial's moving
/// averages (decay 0.9), updated without reading anything back.
#[derive(Default)]
struct DeviceLosses {
    /// `[total, cross-entropy, total average, cross-entropy average]` after the last step.
    values: Option<Tensor>,
}

/// [`DeviceLosses`] read back.
#[derive(Debug, Clone, Copy)]
struct HostLosses {
    total: f64,
    cross_entropy: f64,
    total_average: f64,
    cross_entropy_average: f64,
}

impl DeviceLosses {
    fn add(&mut self, out: &StepOutput) -> Result<(), TrainError> {
        let now = Tensor::f_stack(&[&out.total_loss, &out.cross_entropy], 0)?.f_to_kind(Kind::Double)?;
        let averages = match &self.values {
            Some(values) => {
                let previous = values.f_narrow(0, 2, 2)?;
                previous.f_mul_scalar(LOSS_AVERAGE_DECAY)?.f_add(&now.f_mul_scalar(1.0 - LOSS_AVERAGE_DECAY)?)?
            }
            None => now.shallow_clone(),
        };
        self.values = Some(Tensor::f_cat(&[now, averages], 0)?);
        Ok(())
    }

    /// The losses after `step` steps (None before the first), or the divergence error when
    /// any loss so far was not finite.
    fn read(&self, step: u64) -> Result<Option<HostLosses>, TrainError> {
        let Some(values) = &self.values else { return Ok(None) };
        let v = Vec::<f64>::try_from(values.f_to_device(Device::Cpu)?)?;
        if let Some(&loss) = v.iter().find(|x| !x.is_finite()) {
            return Err(TrainError::NonFiniteLoss { step, loss });
        }
        Ok(Some(HostLosses { total: v[0], cross_entropy: v[1], total_average: v[2], cross_entropy_average: v[3] }))
    }
}

/// The sums of `out` (over this process's towers) summed over every rank and divided by
/// `total_towers`: the gradients, both losses and this rank's stop request (`stop`) in one
/// buffer, one all-reduce; also whether any rank asked to stop. Gloo works on the host, so a
/// CUDA buffer makes the trip through host memory.
fn all_reduce_mean(
    group: &c10d::ProcessGroup,
    out: StepOutput,
    total_towers: usize,
    stop: bool,
) -> Result<(StepOutput, bool), TrainError> {
    let device = out.gradients.device();
    let n = out.gradients.numel() as i64;
    let flag = Tensor::f_full([1], if stop { 1.0 } else { 0.0 }, (Kind::Float, device))?;
    let parts =
        [out.gradients.shallow_clone(), out.cross_entropy.f_reshape([1])?, out.total_loss.f_reshape([1])?, flag];
    let mut buffer = Tensor::f_cat(&parts, 0)?.f_to_device(Device::Cpu)?;
    group.all_reduce_sum(&mut buffer)?;
    // The buffer is on the host and the all-reduce has finished: reading the flag waits for
    // nothing.
    let any_stopping = buffer.f_double_value(&[n + 2])? > 0.0;
    let buffer = buffer.f_to_device(device)?;
    let n_towers = total_towers as f64;
    // The same kernels as the towers' own mean (an in-place division of the summed buffer,
    // a division of each summed loss), so 2 ranks × 1 tower give 1 rank × 2 towers' bits.
    let mut gradients = buffer.f_narrow(0, 0, n)?;
    let _ = gradients.f_div_scalar_(n_towers)?;
    let cross_entropy = buffer.f_select(0, n)?.f_div_scalar(n_towers)?;
    let total_loss = buffer.f_select(0, n + 1)?.f_div_scalar(n_towers)?;
    Ok((StepOutput { cross_entropy, total_loss, gradients, ..out }, any_stopping))
}

/// [`start_state`] for a rank of a data-parallel run: rank 0 makes it (fresh, or from its
/// checkpoint) and broadcasts the step, the seed, the weights and their averages, so every
/// rank starts from rank 0's state whatever its own files hold.
fn start_state_in_group(
    config: &TrainConfig,
    train_examples: usize,
    group: &c10d::ProcessGroup,
) -> Result<RunState, TrainError> {
    let chief = if config.is_chief() { Some(start_state(config, train_examples)) } else { None };
    let facts = match &chief {
        Some(Ok(state)) => [1, state.step as i64, state.seed as i64],
        Some(Err(_)) | None => [0, 0, 0],
    };
    let mut meta = Tensor::f_from_slice(&facts)?;
    group.broadcast(&mut meta, 0)?;
    let facts = Vec::<i64>::try_from(&meta)?;
    let mut state = match chief {
        Some(result) => result?,
        None if facts[0] == 0 => {
            return Err(TrainError::Config(format!(
                "rank {}: rank 0 could not start the run (its own message says why)",
                config.rank
            )))
        }
        None => {
            let (step, seed) = (facts[1] as u64, facts[2] as u64);
            // Placeholder values of the right shapes: the broadcast below overwrites them.
            let towers = Towers::new(&initial_tensors(seed), &config.devices, config.towers_per_device)?;
            let ema = MovingAverage::new(towers.master().params(), config.moving_average_decay)?;
            RunState { step, seed, towers, ema, losses: DeviceLosses::default() }
        }
    };
    for buffer in [state.towers.master().flat().shallow_clone(), state.ema.flat().shallow_clone()] {
        let mut host = buffer.f_to_device(Device::Cpu)?.f_contiguous()?;
        group.broadcast(&mut host, 0)?;
        tch::no_grad(|| buffer.shallow_clone().f_copy_(&host))?;
    }
    state.towers.copy_master_to_others()?;
    Ok(state)
}

/// A fresh state, or the newest checkpoint's when resuming.
fn start_state(config: &TrainConfig, train_examples: usize) -> Result<RunState, TrainError> {
    let existing = checkpoint::latest(&config.train_dir)?;
    let (step, seed, raw, ema) = match (config.resume, existing) {
        (true, Some(path)) => {
            let ckpt = Checkpoint::load(&path)?;
            check_compatible(&ckpt, &path, config, train_examples)?;
            println!("resuming from {} (step {}, seed {})", path.display(), ckpt.step, ckpt.seed);
            (ckpt.step, ckpt.seed, ckpt.raw, Some(ckpt.ema))
        }
        (false, Some(path)) => {
            return Err(TrainError::Config(format!(
                "{} already holds checkpoints (newest {}): pass --resume to continue that run, or choose another --train-dir",
                config.train_dir.display(),
                path.display()
            )))
        }
        (_, None) => (0, config.seed, initial_tensors(config.seed), None),
    };
    let towers = Towers::new(&raw, &config.devices, config.towers_per_device)?;
    let ema = match ema {
        Some(values) => {
            // In the master's layout, so that the average's buffer lines up with the weights'.
            let shadow = crate::model::layout_tensors(&values, towers.master().device())?;
            MovingAverage::from_tensors(shadow, config.moving_average_decay)?
        }
        None => MovingAverage::new(towers.master().params(), config.moving_average_decay)?,
    };
    Ok(RunState { step, seed, towers, ema, losses: DeviceLosses::default() })
}

/// Refuses to resume a checkpoint trained with other schedule settings or on another
/// training set: the resumed run would not continue the run it claims to.
fn check_compatible(
    ckpt: &Checkpoint,
    path: &Path,
    config: &TrainConfig,
    train_examples: usize,
) -> Result<(), TrainError> {
    let mut problems = ckpt.schedule.differences(&config.schedule());
    if ckpt.train_examples != train_examples {
        problems.push(format!("trained on {} examples, this run has {}", ckpt.train_examples, train_examples));
    }
    if !problems.is_empty() {
        return Err(TrainError::Checkpoint {
            path: path.into(),
            problem: format!(
                "cannot resume with other settings: {}; rerun with the checkpoint's settings, or start a new --train-dir",
                problems.join("; ")
            ),
        });
    }
    if ckpt.seed != config.seed {
        println!("note: continuing with the checkpoint's seed {} (--seed {} ignored)", ckpt.seed, config.seed);
    }
    Ok(())
}

fn save(config: &TrainConfig, state: &RunState, train_examples: usize) -> Result<PathBuf, TrainError> {
    let ckpt = Checkpoint {
        step: state.step,
        seed: state.seed,
        train_examples,
        schedule: config.schedule(),
        raw: state.towers.master().values()?,
        ema: tensors_to_values(state.ema.shadow())?,
    };
    ckpt.save(&config.train_dir, config.keep_checkpoints)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::arch::IMAGE_LEN;

    fn records(n: usize) -> Arc<Records> {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|r| {
                let label = (r % 10) as u8;
                // Class-dependent pictures so that the loss can fall.
                std::iter::once(label).chain((0..IMAGE_LEN).map(move |i| ((i * (label as usize + 1) + r) % 256) as u8))
            })
            .collect();
        Arc::new(Records::from_bytes(bytes, "synthetic").unwrap())
    }

    fn config(dir: &Path, max_steps: u64) -> TrainConfig {
        TrainConfig {
            max_steps,
            batch_size: 8,
            log_frequency: 0,
            seed: 3,
            devices: vec![Device::Cpu],
            checkpoint_every: 0,
            summary_every: 0,
            ..TrainConfig::new(dir)
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trainer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn final_checkpoint(dir: &Path) -> Checkpoint {
        Checkpoint::load(&checkpoint::latest(dir).unwrap().unwrap()).unwrap()
    }

    /// libtorch's reductions may split work differently with another thread count; the
    /// bit-for-bit comparisons run single-threaded (also much faster on a loaded CI box).
    fn single_threaded() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| tch::set_num_threads(1));
    }

    #[test]
    fn resuming_gives_the_same_bits_as_a_straight_run_and_same_seed_repeats() {
        single_threaded();
        let data = records(20); // batch 4: epochs of 5 steps, so the runs cross epochs
        let never = AtomicBool::new(false);
        let small = |dir: &Path, steps| TrainConfig { batch_size: 4, ..config(dir, steps) };
        let straight = temp_dir("straight");
        // two input workers here, one below: the batches must not depend on it
        train(&TrainConfig { input_workers: 2, ..small(&straight, 100) }, Arc::clone(&data), None, &never).unwrap();
        let split = temp_dir("split");
        let first = train(&small(&split, 50), Arc::clone(&data), None, &never).unwrap();
        assert_eq!(first.step, 50);
        let err = train(&small(&split, 100), Arc::clone(&data), None, &never).unwrap_err().to_string();
        assert!(err.contains("--resume"), "{err}");
        let outcome =
            train(&TrainConfig { resume: true, ..small(&split, 100) }, Arc::clone(&data), None, &never).unwrap();
        assert_eq!(outcome.step, 100);
        let (a, b) = (final_checkpoint(&straight), final_checkpoint(&split));
        assert_eq!(a.raw, b.raw);
        assert_eq!(a.ema, b.ema);
        assert_ne!(a.raw, initial_tensors(3), "training changed nothing");
        assert_ne!(a.ema, a.raw, "the average lags the weights");
        // The same seed again gives the same bits as the first 50 steps of the split run.
        let again = temp_dir("again");
        train(&small(&again, 50), Arc::clone(&data), None, &never).unwrap();
        let split_at_50 = Checkpoint::load(&split.join(checkpoint::file_name(50))).unwrap();
        assert_eq!(final_checkpoint(&again), split_at_50);
        for dir in [straight, split, again] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_resume_with_other_schedule_settings_is_refused_by_flag() {
        let dir = temp_dir("schedule");
        let never = AtomicBool::new(false);
        train(&config(&dir, 2), records(16), None, &never).unwrap();
        let resume = |dir: &Path| TrainConfig { resume: true, ..config(dir, 4) };
        let changes: [(TrainConfig, &str); 6] = [
            (TrainConfig { batch_size: 4, ..resume(&dir) }, "--batch-size 8 in the checkpoint, 4 in this run"),
            (TrainConfig { towers_per_device: 2, ..resume(&dir) }, "1 tower(s) in the checkpoint"),
            (TrainConfig { learning_rate: 0.05, ..resume(&dir) }, "--learning-rate 0.1 in the checkpoint, 0.05"),
            (TrainConfig { learning_rate_decay_factor: 0.5, ..resume(&dir) }, "--learning-rate-decay-factor 0.1"),
            (TrainConfig { epochs_per_decay: 1.0, ..resume(&dir) }, "--num-epochs-per-decay 350 in the checkpoint"),
            (TrainConfig { moving_average_decay: 0.99, ..resume(&dir) }, "--moving-average-decay 0.9999"),
        ];
        for (other, expected) in changes {
            let err = train(&other, records(16), None, &never).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("model.ckpt-"), "{expected}: {err}");
        }
        assert_eq!(train(&resume(&dir), records(16), None, &never).unwrap().step, 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_flags_are_refused_before_anything_is_written() {
        let dir = temp_dir("flags");
        let never = AtomicBool::new(false);
        for (bad, flag) in [
            (TrainConfig { moving_average_decay: 1.0, ..config(&dir, 2) }, "--moving-average-decay 1 "),
            (TrainConfig { batch_size: 0, ..config(&dir, 2) }, "--batch-size 0"),
            (TrainConfig { batch_size: 100_000_000, ..config(&dir, 2) }, "--batch-size 100000000 needs about"),
        ] {
            let err = train(&bad, records(8), None, &never).unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
        assert!(!dir.exists(), "a refused run created {}", dir.display());
    }

    /// The trainer's own loop with 2 towers × 4 examples makes the same updates as 1 tower × 8
    /// (same examples per step, same learning-rate schedule, same moving average).
    #[test]
    fn two_towers_of_4_train_like_one_tower_of_8() {
        single_threaded();
        let data = records(24);
        let never = AtomicBool::new(false);
        let one = temp_dir("one-tower");
        train(&config(&one, 6), Arc::clone(&data), None, &never).unwrap();
        let two = temp_dir("two-towers");
        let cfg = TrainConfig { batch_size: 4, towers_per_device: 2, ..config(&two, 6) };
        train(&cfg, data, None, &never).unwrap();
        let (a, b) = (final_checkpoint(&one), final_checkpoint(&two));
        assert_eq!((b.schedule.batch_size, b.schedule.towers), (4, 2));
        for (x, y) in a.raw.iter().chain(&a.ema).zip(b.raw.iter().chain(&b.ema)) {
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (u, v) in x.iter().zip(y) {
                assert!((u - v).abs() <= 1e-4 * scale.max(1e-3), "{u} vs {v}");
            }
        }
        for dir in [one, two] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    /// Distortions made by tensor ops on the (CPU) device train like the host's input
    /// threads: the same batches up to float rounding, so the same weights within the
    /// towers' bound; and the same seed gives the same bits again.
    #[test]
    fn augmenting_on_the_device_trains_like_the_host_pipeline() {
        single_threaded();
        let data = records(24);
        let never = AtomicBool::new(false);
        let (host, device, again) = (temp_dir("aug-host"), temp_dir("aug-device"), temp_dir("aug-again"));
        train(&config(&host, 6), Arc::clone(&data), None, &never).unwrap();
        let on_device = |dir: &Path| TrainConfig { augment_on: AugmentOn::Device, ..config(dir, 6) };
        train(&on_device(&device), Arc::clone(&data), None, &never).unwrap();
        train(&on_device(&again), Arc::clone(&data), None, &never).unwrap();
        let (a, b) = (final_checkpoint(&host), final_checkpoint(&device));
        for (x, y) in a.raw.iter().chain(&a.ema).zip(b.raw.iter().chain(&b.ema)) {
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (u, v) in x.iter().zip(y) {
                assert!((u - v).abs() <= 1e-4 * scale.max(1e-3), "{u} vs {v}");
            }
        }
        assert_eq!(final_checkpoint(&again), b);
        for dir in [host, device, again] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    /// The summary thread reads the weights while the next steps update them in place: what
    /// it gets must be a copy.
    #[test]
    fn the_summarised_weights_are_a_copy_that_updates_do_not_reach() {
        let net = crate::model::Net::new(Device::Cpu, 4);
        let snapshot = weights_snapshot(&net).unwrap();
        let before = tensors_to_values(&snapshot).unwrap();
        assert_eq!(before, net.values().unwrap());
        tch::no_grad(|| {
            let _ = net.flat().shallow_clone().f_add_scalar_(1.0).unwrap();
        });
        assert_eq!(tensors_to_values(&snapshot).unwrap(), before);
        assert_ne!(net.values().unwrap(), before);
    }

    #[test]
    fn an_unwritable_train_dir_is_named_in_the_error() {
        let file = std::env::temp_dir().join(format!("trainer-not-a-dir-{}", std::process::id()));
        std::fs::write(&file, b"x").unwrap();
        let dir = file.join("run");
        let err = train(&config(&dir, 1), records(8), None, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, TrainError::Io { .. }) && err.to_string().contains(&*dir.to_string_lossy()), "{err}");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_stop_request_still_writes_a_checkpoint() {
        let dir = temp_dir("stop");
        let stop = AtomicBool::new(true);
        let outcome = train(&config(&dir, 100), records(16), None, &stop).unwrap();
        assert!(outcome.interrupted);
        assert_eq!(final_checkpoint(&dir).step, 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_diverging_run_stops_with_a_clear_error() {
        let dir = temp_dir("nan");
        let never = AtomicBool::new(false);
        let cfg = TrainConfig { learning_rate: 1e30, ..config(&dir, 20) };
        let err = train(&cfg, records(16), None, &never).unwrap_err();
        assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
        assert!(err.to_string().contains("diverged"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn summaries_and_evaluation_are_written() {
        let dir = temp_dir("summaries");
        let never = AtomicBool::new(false);
        let data = records(40);
        let cfg = TrainConfig { summary_every: 5, eval_every: 10, learning_rate: 0.05, ..config(&dir, 30) };
        let outcome = train(&cfg, Arc::clone(&data), Some(&data), &never).unwrap();
        assert!(outcome.last_loss.is_finite());
        let events: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents"))
            .collect();
        assert_eq!(events.len(), 1);
        assert!(events[0].metadata().unwrap().len() > 10_000, "histograms and images were written");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
