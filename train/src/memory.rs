//! Whether a run's batches fit in memory, checked before the run starts: a batch too large
//! for the machine would otherwise grow until the kernel kills the process, with no message.
//!
//! The estimate comes from the architecture: one example's forward pass produces
//! `Σ activations` values ([`model_format::arch::activation_shapes`], 125,578 floats, plus the
//! 1,728 input values), and training keeps about that much for the backward pass, plus
//! pooling indices, LRN intermediates and gradient buffers. Measured with libtorch 2.11 on
//! the CPU (peak RSS at batches 1,024 and 4,096, the slope), a step takes 1.35× the
//! activations' bytes per example; [`bytes_per_example`] uses 1.5× for a margin.
//!
//! CUDA memory cannot be queried through tch, so the check covers what lives in host
//! memory (CPU towers and the input queue); a CUDA tower that runs out of memory stops the
//! run with libtorch's out-of-memory error, which [`crate::TrainError`] completes with a hint
//! to lower `--batch-size`.

use model_format::arch::{activation_shapes, INPUT_LEN};
use tch::Device;

use crate::config::TrainConfig;
use crate::error::TrainError;

/// Training memory per example on a CPU tower, in bytes (see the module docs): 4 bytes ×
/// (input + every activation) × 1.5.
pub fn bytes_per_example() -> u64 {
    let activations: usize = activation_shapes().iter().map(|s| s.len()).sum();
    (4 * (INPUT_LEN + activations) as u64) * 3 / 2
}

/// Host memory of one queued batch example: its input values and its label.
const QUEUED_BYTES_PER_EXAMPLE: u64 = 4 * INPUT_LEN as u64 + 8;
/// Batches alive per input worker besides its queue: the one being made and the one in use.
const BATCHES_IN_FLIGHT: u64 = 2;

/// Host memory the run needs, in bytes: the CPU towers' training memory and the input queue
/// (`queue_depth` batches per worker, plus those being made and used).
pub fn host_bytes_needed(config: &TrainConfig, queue_depth: usize) -> u64 {
    let batch = config.batch_size as u64;
    let cpu_towers = config.devices.iter().filter(|d| **d == Device::Cpu).count() * config.towers_per_device;
    // Saturating: an absurd --batch-size must give "too large", not an overflow.
    let towers = (cpu_towers as u64).saturating_mul(batch).saturating_mul(bytes_per_example());
    // With a CUDA device, used batches wait for the devices before their buffers are reused.
    let awaiting_devices =
        if config.devices.iter().any(|d| d.is_cuda()) { crate::inputs::IN_FLIGHT_LIMIT as u64 } else { 0 };
    let queued_batches = config.input_workers as u64 * (queue_depth as u64 + BATCHES_IN_FLIGHT + awaiting_devices);
    let global_batch = batch.saturating_mul(config.tower_count() as u64);
    let queue = queued_batches.saturating_mul(global_batch).saturating_mul(QUEUED_BYTES_PER_EXAMPLE);
    towers.saturating_add(queue)
}

/// Memory this process may still use, in bytes: `MemAvailable` of `/proc/meminfo`, lowered to
/// the cgroup's remaining allowance when a limit is set (containers). `None` where neither
/// can be read (not Linux).
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| mem_available(&text));
    let cgroup = cgroup_allowance();
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable:` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `memory.max − memory.current` of the cgroup v2 this process runs in, when limited.
fn cgroup_allowance() -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{name}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?; // "max" (no limit) does not parse
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Refuses a run whose host memory estimate exceeds `available` bytes, naming `--batch-size`
/// and the largest per-tower batch that would fit. Nothing is checked when `available` is
/// unknown.
pub fn check_fits(config: &TrainConfig, queue_depth: usize, available: Option<u64>) -> Result<(), TrainError> {
    let Some(available) = available else { return Ok(()) };
    let needed = host_bytes_needed(config, queue_depth);
    if needed <= available {
        return Ok(());
    }
    let per_example = host_bytes_needed(&TrainConfig { batch_size: 1, ..config.clone() }, queue_depth);
    let largest = available / per_example.max(1);
    Err(TrainError::Config(format!(
        "--batch-size {} needs about {} of memory ({} tower(s), {} per example for training on the CPU, plus the input \
         queue) but {} is available: the valid range here is 1 to {largest} examples per tower",
        config.batch_size,
        gib(needed),
        config.tower_count(),
        gib(bytes_per_example()),
        gib(available),
    )))
}

fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(batch_size: usize) -> TrainConfig {
        TrainConfig { batch_size, devices: vec![Device::Cpu], ..TrainConfig::new("unused") }
    }

    #[test]
    fn the_estimate_follows_the_architecture() {
        // 1,728 input values and 125,578 activation values, 4 bytes each, times 1.5
        assert_eq!(bytes_per_example(), (1_728 + 125_578) * 4 * 3 / 2);
        let one = host_bytes_needed(&config(1), 4);
        assert_eq!(host_bytes_needed(&config(128), 4), 128 * one);
    }

    #[test]
    fn a_batch_that_cannot_fit_is_refused_with_the_flag_and_the_range() {
        let eight_gib = 8u64 << 30;
        check_fits(&config(128), 4, Some(eight_gib)).unwrap();
        let err = check_fits(&config(100_000), 4, Some(eight_gib)).unwrap_err().to_string();
        assert!(err.contains("--batch-size 100000") && err.contains("valid range here is 1 to "), "{err}");
        // the largest batch it names does fit
        let largest: usize = err.rsplit("1 to ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
        check_fits(&config(largest), 4, Some(eight_gib)).unwrap();
        assert!(check_fits(&config(largest + 1), 4, Some(eight_gib)).is_err());
        check_fits(&config(100_000), 4, None).unwrap();
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   21000000 kB\n";
        assert_eq!(mem_available(text), Some(21_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert!(available_bytes().is_some_and(|b| b > 0), "this test runs on Linux");
    }
}
