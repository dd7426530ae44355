//! The console log line, like the tutorial's
//! `step 10, loss = 4.62 (320.5 examples/sec; 0.399 sec/batch)`, plus the share of step
//! time spent waiting for input and an ETA. With towers, as in `cifar10_multi_gpu_train.py`,
//! examples/sec counts every tower's batch and sec/batch is the step time over the towers.

use std::time::{Duration, Instant};

/// Accumulates timings between two log lines.
pub struct Progress {
    batch_size: usize,
    towers: usize,
    max_steps: u64,
    window_start: Instant,
    window_steps: u64,
    window_wait: Duration,
    total_wait: Duration,
    total_start: Instant,
}

/// Throughput over the last window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub examples_per_sec: f64,
    pub sec_per_step: f64,
    /// Fraction of the window's wall time the step spent waiting for its batch.
    pub input_wait: f64,
}

impl Progress {
    /// Progress of a run of `max_steps` steps of `towers` batches of `batch_size` examples.
    pub fn new(batch_size: usize, towers: usize, max_steps: u64) -> Progress {
        let now = Instant::now();
        Progress {
            batch_size,
            towers: towers.max(1),
            max_steps,
            window_start: now,
            window_steps: 0,
            window_wait: Duration::ZERO,
            total_wait: Duration::ZERO,
            total_start: now,
        }
    }

    /// Records one finished step and how long it waited for its input.
    pub fn step_done(&mut self, input_wait: Duration) {
        self.window_steps += 1;
        self.window_wait += input_wait;
        self.total_wait += input_wait;
    }

    /// Rates since the last call, then starts a new window.
    pub fn take_rates(&mut self) -> Rates {
        let elapsed = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let steps = self.window_steps.max(1) as f64;
        let rates = Rates {
            examples_per_sec: steps * (self.batch_size * self.towers) as f64 / elapsed,
            sec_per_step: elapsed / steps,
            input_wait: self.window_wait.as_secs_f64() / elapsed,
        };
        self.window_start = Instant::now();
        self.window_steps = 0;
        self.window_wait = Duration::ZERO;
        rates
    }

    /// Fraction of all wall time since the start spent waiting for input.
    pub fn total_input_wait(&self) -> f64 {
        self.total_wait.as_secs_f64() / self.total_start.elapsed().as_secs_f64().max(1e-9)
    }

    /// The tutorial's log line for `step` (completed steps) with `loss`.
    pub fn line(&self, step: u64, loss: f64, rates: &Rates) -> String {
        let remaining = self.max_steps.saturating_sub(step) as f64 * rates.sec_per_step;
        format!(
            "{}: step {step}, loss = {loss:.2} ({:.1} examples/sec; {:.3} sec/batch; input wait {:.1}%; ETA {})",
            utc_now(),
            rates.examples_per_sec,
            rates.sec_per_step / self.towers as f64,
            100.0 * rates.input_wait,
            format_duration(remaining)
        )
    }
}

/// `1h02m03s`-style duration.
///
/// ```
/// assert_eq!(train::progress::format_duration(3723.4), "1h02m03s");
/// assert_eq!(train::progress::format_duration(59.0), "59s");
/// ```
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, sec) => format!("{h}h{min:02}m{sec:02}s"),
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS` (no time-zone crate needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn line_has_the_tutorials_fields_and_an_eta() {
        let p = Progress::new(128, 1, 1000);
        let rates = Rates { examples_per_sec: 256.0, sec_per_step: 0.5, input_wait: 0.01 };
        let line = p.line(900, 2.345, &rates);
        assert!(
            line.contains("step 900, loss = 2.35 (256.0 examples/sec; 0.500 sec/batch; input wait 1.0%; ETA 50s)"),
            "{line}"
        );
        // two towers: a step of 0.5 s is two batches of 0.25 s each
        let two = Progress::new(128, 2, 1000).line(900, 2.345, &Rates { examples_per_sec: 512.0, ..rates });
        assert!(two.contains("(512.0 examples/sec; 0.250 sec/batch; input wait 1.0%; ETA 50s)"), "{two}");
    }
}
