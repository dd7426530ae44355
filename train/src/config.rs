//! A training run's settings ([`TrainConfig`]), the part of them that shapes the optimisation
//! and is stored in every checkpoint ([`Schedule`]), and their checks: every bad value is
//! refused before anything runs, with the flag and its valid range in the message.

use std::path::PathBuf;

use tch::Device;

use crate::augment::AugmentOn;
use crate::ema::MOVING_AVERAGE_DECAY;
use crate::error::TrainError;

/// Most libtorch intra-op threads accepted by `--threads`.
pub const MAX_THREADS: usize = 1024;

/// Every setting of a training run; [`TrainConfig::new`] gives the tutorial's values.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Where checkpoints and event files go.
    pub train_dir: PathBuf,
    /// Train until this many steps are done (counting steps of earlier, resumed runs).
    pub max_steps: u64,
    /// Examples per tower per step: as in `cifar10_multi_gpu_train.py`, every tower reads its
    /// own batch, so a step trains on `batch_size × towers` examples.
    pub batch_size: usize,
    /// Steps between console log lines (0: none). Losses are read back from the device only
    /// at these steps (and at summary, evaluation and checkpoint steps).
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
    /// Threads making input batches on the host (with [`AugmentOn::Host`]).
    pub input_workers: usize,
    /// Where the distortions run: input threads of the host, or batched ops on the first
    /// tower's device.
    pub augment_on: AugmentOn,
    /// Deterministic cuDNN convolutions (and no cuDNN autotuning): reproducible CUDA runs at
    /// some cost in speed. Off by default; no effect on the CPU, which is deterministic anyway.
    pub deterministic_cudnn: bool,
    /// This process's rank among `world_size` data-parallel processes (`RANK`): its towers
    /// are the global towers `rank × tower_count() ..`, and only rank 0 writes files.
    pub rank: usize,
    /// Processes training together (`WORLD_SIZE`); 1 for a run on its own.
    pub world_size: usize,
}

impl TrainConfig {
    /// The tutorial's settings, writing to `train_dir`, on every CUDA device or the CPU.
    ///
    /// ```
    /// let config = train::config::TrainConfig::new("runs/a");
    /// assert_eq!((config.batch_size, config.moving_average_decay), (128, 0.9999));
    /// config.check_flags().unwrap();
    /// ```
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
            augment_on: AugmentOn::Host,
            deterministic_cudnn: false,
            rank: 0,
            world_size: 1,
        }
    }

    /// Number of towers: `towers_per_device` on each device.
    pub fn tower_count(&self) -> usize {
        self.devices.len() * self.towers_per_device
    }

    /// Examples per step over this process's towers.
    pub fn global_batch(&self) -> usize {
        self.batch_size * self.tower_count()
    }

    /// Towers over every process: the gradients are averaged over these, and the learning
    /// rate decays after proportionally fewer steps.
    pub fn total_towers(&self) -> usize {
        self.tower_count() * self.world_size
    }

    /// Examples per step over every process.
    pub fn world_batch(&self) -> usize {
        self.batch_size * self.total_towers()
    }

    /// Where this process's examples start in the step's examples of every process.
    pub fn first_example(&self) -> usize {
        self.rank * self.global_batch()
    }

    /// True for the process that writes checkpoints, summaries and logs.
    pub fn is_chief(&self) -> bool {
        self.rank == 0
    }

    /// The settings a resumed run must share with its checkpoint.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            batch_size: self.batch_size,
            towers: self.tower_count(),
            world_size: self.world_size,
            learning_rate: self.learning_rate,
            learning_rate_decay_factor: self.learning_rate_decay_factor,
            epochs_per_decay: self.epochs_per_decay,
            moving_average_decay: self.moving_average_decay,
        }
    }

    /// Checks every flag's range (not the memory: see [`crate::memory::check_fits`]).
    pub fn check_flags(&self) -> Result<(), TrainError> {
        at_least_one("--batch-size", self.batch_size, "examples per tower per step")?;
        at_least_one("--towers", self.towers_per_device, "towers per device")?;
        at_least_one("WORLD_SIZE", self.world_size, "processes training together")?;
        if self.rank >= self.world_size {
            return Err(TrainError::Config(format!(
                "RANK {} is outside the valid range 0 to {} (WORLD_SIZE {} minus 1)",
                self.rank,
                self.world_size - 1,
                self.world_size
            )));
        }
        at_least_one("--input-workers", self.input_workers, "threads making input batches")?;
        at_least_one("--keep-checkpoints", self.keep_checkpoints, "checkpoints kept")?;
        if self.devices.is_empty() {
            return Err(TrainError::Config("--devices: the list is empty (use e.g. `cpu` or `cuda:0,cuda:1`)".into()));
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        let reals = [
            ("--learning-rate", self.learning_rate, "(0, ∞)", positive(self.learning_rate)),
            (
                "--learning-rate-decay-factor",
                self.learning_rate_decay_factor,
                "(0, 1]",
                self.learning_rate_decay_factor > 0.0 && self.learning_rate_decay_factor <= 1.0,
            ),
            ("--num-epochs-per-decay", self.epochs_per_decay, "(0, ∞)", positive(self.epochs_per_decay)),
            (
                "--moving-average-decay",
                self.moving_average_decay,
                "(0, 1)",
                self.moving_average_decay > 0.0 && self.moving_average_decay < 1.0,
            ),
        ];
        // NaN fails every comparison above, so it is refused too.
        for (flag, value, range, valid) in reals {
            if !valid {
                return Err(TrainError::Config(format!("{flag} {value} is outside the valid range {range}")));
            }
        }
        Ok(())
    }
}

/// The default `--input-workers` for `towers` towers of which `cuda_towers` are on CUDA
/// devices, on a machine with `cores` cores. CPU towers use every core for the step itself,
/// and one input thread keeps up with them (it makes a batch of 128 in about 1.5 ms against
/// a step of 75 ms on 2 cores); CUDA towers eat inputs far faster than one thread makes them
/// (8–12 µs an image), so they get two threads each, leaving a core for each tower's worker
/// thread.
///
/// ```
/// assert_eq!(train::config::default_input_workers(2, 1, 0), 1);
/// assert_eq!(train::config::default_input_workers(16, 1, 1), 2);
/// assert_eq!(train::config::default_input_workers(16, 8, 8), 8);
/// assert_eq!(train::config::default_input_workers(2, 2, 2), 1);
/// ```
pub fn default_input_workers(cores: usize, towers: usize, cuda_towers: usize) -> usize {
    if cuda_towers == 0 {
        return 1;
    }
    (2 * cuda_towers).min(cores.saturating_sub(towers)).max(1)
}

fn at_least_one(flag: &str, value: usize, what: &str) -> Result<(), TrainError> {
    if value == 0 {
        return Err(TrainError::Config(format!("{flag} 0: must be at least 1 ({what})")));
    }
    Ok(())
}

/// Checks `--threads`: libtorch's intra-op thread count, 1 to [`MAX_THREADS`].
///
/// ```
/// assert_eq!(train::config::check_threads(2).unwrap(), 2);
/// assert!(train::config::check_threads(0).unwrap_err().to_string().contains("--threads 0"));
/// ```
pub fn check_threads(threads: usize) -> Result<i32, TrainError> {
    if !(1..=MAX_THREADS).contains(&threads) {
        return Err(TrainError::Config(format!(
            "--threads {threads} is outside the valid range 1 to {MAX_THREADS} (libtorch intra-op threads)"
        )));
    }
    Ok(threads as i32)
}

/// The settings that shape the optimisation: the learning rate at each step, the examples a
/// step sees and the moving average. A checkpoint stores them, and a resumed run must use the
/// same ones, or the resumed run would follow another schedule than the one it started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Examples per tower per step.
    pub batch_size: usize,
    /// Towers over all devices of one process.
    pub towers: usize,
    /// Processes (`WORLD_SIZE`), each with `towers` towers.
    pub world_size: usize,
    pub learning_rate: f64,
    pub learning_rate_decay_factor: f64,
    pub epochs_per_decay: f64,
    pub moving_average_decay: f64,
}

impl Schedule {
    /// Each setting as (flag, value as text), in a fixed order. The text is Rust's shortest
    /// round-trip form, so equal values give equal text.
    pub fn fields(&self) -> [(&'static str, String); 7] {
        [
            ("--batch-size", self.batch_size.to_string()),
            ("towers", self.towers.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("--learning-rate", self.learning_rate.to_string()),
            ("--learning-rate-decay-factor", self.learning_rate_decay_factor.to_string()),
            ("--num-epochs-per-decay", self.epochs_per_decay.to_string()),
            ("--moving-average-decay", self.moving_average_decay.to_string()),
        ]
    }

    /// What differs between `self` (a checkpoint's) and `run` (this run's), one phrase each.
    ///
    /// ```
    /// let checkpoint = train::config::TrainConfig::new("a").schedule();
    /// let run = train::config::Schedule { batch_size: 64, ..checkpoint };
    /// assert_eq!(checkpoint.differences(&run), ["--batch-size 128 in the checkpoint, 64 in this run"]);
    /// ```
    pub fn differences(&self, run: &Schedule) -> Vec<String> {
        self.fields()
            .into_iter()
            .zip(run.fields())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((flag, a), (_, b))| match flag {
                "towers" => format!(
                    "{a} tower(s) in the checkpoint (devices × --towers), {b} in this run (each tower reads its own batch)"
                ),
                _ => format!("{flag} {a} in the checkpoint, {b} in this run"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig { devices: vec![Device::Cpu], ..TrainConfig::new("unused") }
    }

    fn refused(config: TrainConfig) -> String {
        config.check_flags().unwrap_err().to_string()
    }

    #[test]
    fn each_bad_flag_is_refused_with_its_name_and_range() {
        assert!(refused(TrainConfig { batch_size: 0, ..config() }).contains("--batch-size 0: must be at least 1"));
        assert!(refused(TrainConfig { towers_per_device: 0, ..config() }).contains("--towers 0"));
        assert!(refused(TrainConfig { input_workers: 0, ..config() }).contains("--input-workers 0"));
        assert!(refused(TrainConfig { keep_checkpoints: 0, ..config() }).contains("--keep-checkpoints 0"));
        assert!(refused(TrainConfig { devices: vec![], ..config() }).contains("--devices"));
        for decay in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
            let err = refused(TrainConfig { moving_average_decay: decay, ..config() });
            assert!(err.contains("--moving-average-decay") && err.contains("(0, 1)"), "{err}");
        }
        for rate in [0.0, -1.0, f64::INFINITY] {
            assert!(refused(TrainConfig { learning_rate: rate, ..config() }).contains("--learning-rate"));
        }
        for factor in [0.0, 1.01] {
            let err = refused(TrainConfig { learning_rate_decay_factor: factor, ..config() });
            assert!(err.contains("--learning-rate-decay-factor") && err.contains("(0, 1]"), "{err}");
        }
        assert!(refused(TrainConfig { epochs_per_decay: 0.0, ..config() }).contains("--num-epochs-per-decay"));
        let edge = TrainConfig { learning_rate_decay_factor: 1.0, moving_average_decay: 0.5, ..config() };
        edge.check_flags().unwrap();
    }

    #[test]
    fn threads_must_be_between_one_and_the_bound() {
        assert!(check_threads(0).unwrap_err().to_string().contains("1 to 1024"));
        assert!(check_threads(MAX_THREADS + 1).is_err());
        assert_eq!(check_threads(MAX_THREADS).unwrap(), 1024);
    }

    #[test]
    fn the_global_batch_is_the_per_tower_batch_times_the_towers() {
        let c = TrainConfig { batch_size: 64, devices: vec![Device::Cpu; 3], towers_per_device: 2, ..config() };
        assert_eq!((c.tower_count(), c.global_batch()), (6, 384));
        assert_eq!(c.schedule().towers, 6);
    }

    #[test]
    fn every_schedule_difference_is_named() {
        let a = config().schedule();
        let b = Schedule {
            batch_size: 64,
            towers: 2,
            world_size: 2,
            learning_rate: 0.05,
            learning_rate_decay_factor: 0.5,
            epochs_per_decay: 10.0,
            moving_average_decay: 0.999,
        };
        let found = a.differences(&b).join("; ");
        for flag in [
            "--batch-size",
            "tower",
            "WORLD_SIZE",
            "--learning-rate ",
            "--learning-rate-decay-factor",
            "--num-epochs",
            "--moving",
        ] {
            assert!(found.contains(flag), "{flag} missing from {found}");
        }
        assert!(a.differences(&a).is_empty());
    }
}
