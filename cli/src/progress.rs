//! Progress of long work (eval over 10,000 images, downloads): a live bar on a terminal,
//! and plain lines at every tenth of the way when stderr is a file or a pipe, as the
//! trainer logs (a bar's redraws would fill a CI log with control codes, or show nothing).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A redrawn bar with rate and ETA (for a terminal).
    Bar,
    /// One line per tenth of the work (for logs).
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// [`Mode::Bar`] when stderr is a terminal, else [`Mode::Lines`].
    pub fn for_stderr() -> Mode {
        if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }
}

/// Progress through `total` units of work, shown on stderr. With `unit` "bytes" the bar shows
/// sizes and transfer rates; a `total` of 0 means unknown (a spinner, and no plain lines).
///
/// ```
/// use cifar10_cli::progress::{Mode, Progress};
/// let progress = Progress::new(Mode::Lines, "evaluating", "images", 100);
/// for done in [50, 100] {
///     progress.set_position(done); // prints "evaluating: 50/100 images (50%)", then 100/100
/// }
/// progress.finish();
/// ```
pub struct Progress {
    mode: Mode,
    what: String,
    unit: String,
    total: u64,
    bar: ProgressBar,
    /// The last tenth (0–10) a line was printed for, so each is printed once.
    last_tenth: AtomicU64,
}

impl Progress {
    /// Starts showing progress through `total` `unit`s of `what` (e.g. "evaluating", "images").
    pub fn new(mode: Mode, what: &str, unit: &str, total: u64) -> Progress {
        let bar = match mode {
            Mode::Bar => {
                let bar = if total == 0 { ProgressBar::new_spinner() } else { ProgressBar::new(total) };
                bar.with_style(
                    ProgressStyle::with_template(&template(unit, total))
                        .expect("the progress template is valid")
                        .progress_chars("=> "),
                )
            }
            Mode::Lines | Mode::Quiet => ProgressBar::hidden(),
        };
        bar.set_message(what.to_string());
        Progress { mode, what: what.into(), unit: unit.into(), total, bar, last_tenth: AtomicU64::new(0) }
    }

    /// Records that `done` units are finished.
    pub fn set_position(&self, done: u64) {
        match self.mode {
            Mode::Bar => self.bar.set_position(done),
            Mode::Lines => self.line_at(done),
            Mode::Quiet => {}
        }
    }

    /// Continues from `done` units finished earlier (a resumed download): rates and ETA are
    /// measured from here.
    pub fn resume_from(&self, done: u64) {
        self.set_position(done);
        self.bar.reset_eta();
    }

    /// Clears the bar (plain lines stay: they are the log).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Leaves the bar where it stopped, for work that failed part-way.
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    fn line_at(&self, done: u64) {
        // An unknown total (0) has no tenths to report.
        let Some(tenth) = (done.min(self.total) * 10).checked_div(self.total) else { return };
        if tenth > self.last_tenth.fetch_max(tenth, Ordering::Relaxed) {
            eprintln!("{}", line(&self.what, &self.unit, done, self.total));
        }
    }
}

/// The bar's indicatif template for `unit` (sizes and byte rates for "bytes").
fn template(unit: &str, total: u64) -> String {
    match (unit, total) {
        ("bytes", 0) => "{msg} {spinner} {bytes} ({binary_bytes_per_sec})".into(),
        ("bytes", _) => "{msg} [{bar:40}] {bytes}/{total_bytes} ({binary_bytes_per_sec}, eta {eta})".into(),
        (unit, 0) => format!("{{msg}} {{spinner}} {{pos}} {unit} ({{per_sec}})"),
        (unit, _) => format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})"),
    }
}

/// The plain progress line: `evaluating: 1280/10000 images (12%)`.
///
/// ```
/// assert_eq!(cifar10_cli::progress::line("evaluating", "images", 1280, 10_000), "evaluating: 1280/10000 images (12%)");
/// ```
pub fn line(what: &str, unit: &str, done: u64, total: u64) -> String {
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    format!("{what}: {done}/{total} {unit} ({percent}%)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_printed_once_per_tenth() {
        let progress = Progress::new(Mode::Lines, "x", "items", 1000);
        let mut printed = Vec::new();
        for done in (0..=1000).step_by(128).chain([1000]) {
            let before = progress.last_tenth.load(Ordering::Relaxed);
            progress.set_position(done);
            if progress.last_tenth.load(Ordering::Relaxed) > before {
                printed.push(done);
            }
        }
        assert_eq!(printed, [128, 256, 384, 512, 640, 768, 896, 1000]);
    }

    #[test]
    fn an_unknown_total_prints_no_lines_and_every_template_is_valid() {
        let progress = Progress::new(Mode::Lines, "x", "bytes", 0);
        progress.set_position(5);
        assert_eq!(progress.last_tenth.load(Ordering::Relaxed), 0);
        for (unit, total) in [("bytes", 0), ("bytes", 9), ("images", 0), ("images", 9)] {
            assert!(ProgressStyle::with_template(&template(unit, total)).is_ok(), "{unit} {total}");
        }
    }
}
