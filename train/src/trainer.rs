//! The training loop: distorted batches from the input queue, forward/backward on every
//! tower, SGD with the staircase learning rate, the weights' moving average, periodic logs,
//! summaries, evaluations and checkpoints, and a final checkpoint on any orderly exit
//! (the step limit or a stop request such as Ctrl-C).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use model_format::arch::{INPUT_CHANNELS, INPUT_SIZE};
use model_format::cifar::Records;
use tch::{Device, Tensor};

use crate::checkpoint::{self, Checkpoint};
use crate::ema::{MovingAverage, MOVING_AVERAGE_DECAY};
use crate::error::TrainError;
use crate::evaluate::EvalSet;
use crate::inputs::InputQueue;
use crate::model::{initial_values, tensors_to_values};
use crate::progress::Progress;
use crate::schedule::LearningRate;
use crate::tensorboard::Board;
use crate::towers::Towers;

/// Decay of the loss moving averages shown in TensorBoard (the tutorial's 0.9).
const LOSS_AVERAGE_DECAY: f64 = 0.9;
/// Batches each input worker keeps ready.
const QUEUE_DEPTH: usize = 4;

/// Every setting of a training run; [`TrainConfig::new`] gives the tutorial's values.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Where checkpoints and event files go.
    pub train_dir: PathBuf,
    /// Train until this many steps are done (counting steps of earlier, resumed runs).
    pub max_steps: u64,
    pub batch_size: usize,
    /// Steps between console log lines (0: none).
    pub log_frequency: u64,
    pub seed: u64,
    pub devices: Vec<Device>,
    pub towers_per_device: usize,
    pub learning_rate: f64,
    pub learning_rate_decay_factor: f64,
    pub epochs_per_decay: f64,
    pub moving_average_decay: f64,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept in `train_dir`.
    pub keep_checkpoints: usize,
    /// Continue from the newest checkpoint in `train_dir`.
    pub resume: bool,
    /// Steps between histogram/image summaries (0: no event file at all).
    pub summary_every: u64,
    /// Steps between precision@1 evaluations with the averaged weights (0: none).
    pub eval_every: u64,
    /// Threads making input batches.
    pub input_workers: usize,
}

impl TrainConfig {
    /// The tutorial's settings, writing to `train_dir`, on every CUDA device or the CPU.
    pub fn new(train_dir: impl Into<PathBuf>) -> TrainConfig {
        TrainConfig {
            train_dir: train_dir.into(),
            max_steps: 1_000_000,
            batch_size: 128,
            log_frequency: 10,
            seed: 0,
            devices: crate::towers::default_devices(),
            towers_per_device: 1,
            learning_rate: 0.1,
            learning_rate_decay_factor: 0.1,
            epochs_per_decay: 350.0,
            moving_average_decay: MOVING_AVERAGE_DECAY,
            checkpoint_every: 1000,
            keep_checkpoints: 5,
            resume: false,
            summary_every: 100,
            eval_every: 0,
            input_workers: 1,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Steps completed (including resumed ones).
    pub step: u64,
    /// The checkpoint written at the end.
    pub checkpoint: PathBuf,
    /// Total loss of the last step.
    pub last_loss: f64,
    /// Examples per second over this run's steps.
    pub examples_per_sec: f64,
    /// Fraction of this run's wall time spent waiting for input.
    pub input_wait: f64,
    /// True when a stop request ended the run before `max_steps`.
    pub interrupted: bool,
}

/// The state that evolves step by step.
struct RunState {
    step: u64,
    seed: u64,
    towers: Towers,
    ema: MovingAverage,
}

/// Trains on `train` (the training records), evaluating on `test` when
/// `config.eval_every` asks; returns when `max_steps` are done or `stop` is set.
pub fn train(
    config: &TrainConfig,
    train: Arc<Records>,
    test: Option<&Records>,
    stop: &AtomicBool,
) -> Result<TrainOutcome, TrainError> {
    std::fs::create_dir_all(&config.train_dir).map_err(TrainError::io(&config.train_dir))?;
    let mut state = start_state(config, train.len())?;
    state.towers.check_batch_size(config.batch_size)?;
    let schedule = LearningRate::new(
        config.learning_rate,
        config.learning_rate_decay_factor,
        config.epochs_per_decay,
        config.batch_size,
    );
    let mut board = if config.summary_every > 0 { Some(Board::create(&config.train_dir)?) } else { None };
    let eval_set = match (config.eval_every, test) {
        (0, _) | (_, None) => None,
        (_, Some(records)) => Some(EvalSet::new(records)),
    };
    let mut queue = InputQueue::start(
        Arc::clone(&train),
        state.seed,
        config.batch_size,
        state.step,
        config.input_workers,
        QUEUE_DEPTH,
    );
    let mut progress = Progress::new(config.batch_size, config.max_steps);
    let (first_step, run_start) = (state.step, Instant::now());
    let (mut loss_average, mut ce_average): (Option<f64>, Option<f64>) = (None, None);
    let mut last_loss = f64::NAN;
    let shape = [config.batch_size as i64, INPUT_CHANNELS as i64, INPUT_SIZE as i64, INPUT_SIZE as i64];

    while state.step < config.max_steps && !stop.load(Ordering::Relaxed) {
        let waited = Instant::now();
        let batch = queue.next_batch();
        let input_wait = waited.elapsed();
        let images = Tensor::f_from_slice(&batch.images)?.f_view(shape)?;
        let labels = Tensor::f_from_slice(&batch.labels)?;
        let step = state.step;
        let summarise = board.is_some() && step % config.summary_every == 0;

        let out = state.towers.compute(&images, &labels, summarise)?;
        if !out.total_loss.is_finite() {
            return Err(TrainError::NonFiniteLoss { step, loss: out.total_loss });
        }
        let learning_rate = schedule.at(step);
        state.towers.apply(&out.gradients, learning_rate)?;
        state.step += 1;
        // TensorFlow's moving average reads global_step after the gradient step has
        // incremented it, so the first update uses num_updates = 1.
        state.ema.update(state.towers.master().params(), state.step)?;
        progress.step_done(input_wait);
        last_loss = out.total_loss;
        loss_average = Some(moving(loss_average, out.total_loss));
        ce_average = Some(moving(ce_average, out.cross_entropy));

        if config.log_frequency > 0 && state.step % config.log_frequency == 0 {
            let rates = progress.take_rates();
            println!("{}", progress.line(state.step, out.total_loss, &rates));
            if let Some(board) = board.as_mut() {
                board.scalar("examples_per_sec", state.step, rates.examples_per_sec)?;
                board.scalar("input_wait_fraction", state.step, rates.input_wait)?;
            }
        }
        if let (true, Some(board)) = (summarise, board.as_mut()) {
            board.scalar("cross_entropy (raw)", state.step, out.cross_entropy)?;
            board.scalar("cross_entropy", state.step, ce_average.unwrap_or(out.cross_entropy))?;
            board.scalar("total_loss (raw)", state.step, out.total_loss)?;
            board.scalar("total_loss", state.step, loss_average.unwrap_or(out.total_loss))?;
            board.scalar("learning_rate", state.step, learning_rate)?;
            if let Some(activations) = &out.activations {
                board.activations(state.step, activations)?;
            }
            board.weights_and_gradients(state.step, state.towers.master().params(), &out.gradients)?;
            board.images(state.step, &images)?;
        }
        if let Some(eval_set) = &eval_set {
            if state.step % config.eval_every == 0 {
                let precision =
                    eval_set.precision_of(&tensors_to_values(state.ema.shadow())?, state.towers.master().device())?;
                println!(
                    "{}: step {}, precision @ 1 = {precision:.4} ({} test images, averaged weights)",
                    crate::progress::utc_now(),
                    state.step,
                    eval_set.len()
                );
                if let Some(board) = board.as_mut() {
                    board.scalar("precision @ 1", state.step, precision)?;
                }
            }
        }
        if config.checkpoint_every > 0 && state.step % config.checkpoint_every == 0 && state.step < config.max_steps {
            save(config, &state, train.len())?;
        }
    }
    drop(queue);
    let checkpoint = save(config, &state, train.len())?;
    if let Some(board) = board.as_mut() {
        board.flush()?;
    }
    let steps_run = state.step - first_step;
    Ok(TrainOutcome {
        step: state.step,
        checkpoint,
        last_loss,
        examples_per_sec: (steps_run * config.batch_size as u64) as f64 / run_start.elapsed().as_secs_f64().max(1e-9),
        input_wait: progress.total_input_wait(),
        interrupted: state.step < config.max_steps,
    })
}

fn moving(average: Option<f64>, value: f64) -> f64 {
    match average {
        Some(a) => LOSS_AVERAGE_DECAY * a + (1.0 - LOSS_AVERAGE_DECAY) * value,
        None => value,
    }
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
        (_, None) => (0, config.seed, initial_values(config.seed), None),
    };
    let towers = Towers::new(&raw, &config.devices, config.towers_per_device)?;
    let ema = match ema {
        Some(values) => {
            let master = towers.master().device();
            let shadow = values
                .iter()
                .zip(towers.master().params())
                .map(|(v, p)| Ok(Tensor::f_from_slice(v)?.f_view(p.size().as_slice())?.f_to_device(master)?))
                .collect::<Result<Vec<_>, TrainError>>()?;
            MovingAverage::from_tensors(shadow, config.moving_average_decay)
        }
        None => MovingAverage::new(towers.master().params(), config.moving_average_decay),
    };
    Ok(RunState { step, seed, towers, ema })
}

fn check_compatible(
    ckpt: &Checkpoint,
    path: &Path,
    config: &TrainConfig,
    train_examples: usize,
) -> Result<(), TrainError> {
    let problem = if ckpt.batch_size != config.batch_size {
        Some(format!("was trained with --batch-size {}, this run asks for {}", ckpt.batch_size, config.batch_size))
    } else if ckpt.train_examples != train_examples {
        Some(format!("was trained on {} examples, this run has {}", ckpt.train_examples, train_examples))
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(TrainError::Checkpoint {
            path: path.into(),
            problem: format!("{problem}: the input order would not continue"),
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
        batch_size: config.batch_size,
        train_examples,
        ema_decay: state.ema.decay,
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
        assert_ne!(a.raw, initial_values(3), "training changed nothing");
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
    fn a_resume_with_another_batch_size_is_refused() {
        let dir = temp_dir("batch");
        let never = AtomicBool::new(false);
        train(&config(&dir, 2), records(16), None, &never).unwrap();
        let other = TrainConfig { resume: true, batch_size: 4, ..config(&dir, 4) };
        let err = train(&other, records(16), None, &never).unwrap_err().to_string();
        assert!(err.contains("--batch-size 8") && err.contains("model.ckpt-"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
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
