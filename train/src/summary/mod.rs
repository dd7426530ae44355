//! TensorBoard event files: scalars, histograms and images the trainer logs as it runs.
//!
//! An event file is a sequence of TFRecords ([`write_record`]), each an `Event` protobuf
//! ([`proto`]); the first one announces the format (`file_version = "brain.Event:2"`). Files are
//! readable by TensorBoard 2.x (`tensorboard --logdir LOG_DIR`) while they are being written.
//!
//! ```
//! use train::summary::SummaryWriter;
//!
//! let log_dir = std::env::temp_dir().join(format!("summary-doc-{}", std::process::id()));
//! let mut writer = SummaryWriter::create(&log_dir)?;
//! writer.scalar("loss", 1, 2.30)?;
//! writer.histogram("conv1/weights", 1, &[-0.1, 0.0, 0.2])?;
//! writer.image("input", 1, 2, 2, 1, &[0, 85, 170, 255])?; // 2x2 greyscale
//! writer.flush()?;
//! assert!(writer.path().starts_with(&log_dir));
//! # std::fs::remove_dir_all(&log_dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod histogram;
pub mod image;
pub mod proto;
mod tfrecord;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;

use proto::{Event, Payload, Summary, Value, What};
pub use tfrecord::{masked_crc32c, write_record};

/// The `file_version` TensorBoard expects in the first event of a file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Longest time an event may sit in the write buffer, so that a live TensorBoard sees progress
/// without the trainer having to call [`SummaryWriter::flush`] itself.
const MAX_UNFLUSHED: Duration = Duration::from_secs(10);

/// Numbers the files this process creates, so two writers started in the same second on the
/// same directory get different names.
static FILES_CREATED: AtomicU64 = AtomicU64::new(0);

/// Appends events to one new event file in a log directory.
///
/// Writes go through a buffer that is flushed when [`flush`](Self::flush) is called, when an
/// event finds the buffer older than 10 seconds, and (errors ignored) on drop. The writer is
/// `Send`, so it can be moved into the thread that runs the training loop.
#[derive(Debug)]
pub struct SummaryWriter {
    path: PathBuf,
    out: BufWriter<File>,
    last_flush: Instant,
}

impl SummaryWriter {
    /// Creates `log_dir` (and its parents) if needed and starts a new file in it named
    /// `events.out.tfevents.<unix secs>.<hostname>.<pid>.<n>`, holding the version header.
    ///
    /// The error names the directory or file that could not be created.
    pub fn create(log_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(log_dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create TensorBoard log directory {}: {e}", log_dir.display()))
        })?;
        let (path, file) = create_event_file(log_dir)?;
        let mut writer = Self { path, out: BufWriter::new(file), last_flush: Instant::now() };
        let header = Event { wall_time: wall_time(), step: 0, what: Some(What::FileVersion(FILE_VERSION.into())) };
        writer.write_event(&header)?;
        // TensorBoard picks the file up as soon as the header is on disk.
        writer.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs `value` under `tag` at `step` (`Summary.Value.simple_value`). NaN and infinities are
    /// written as they are: TensorBoard shows them, which is how a diverging run gets noticed.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> io::Result<()> {
        self.write_value(step, tag, Payload::SimpleValue(value))
    }

    /// Logs the distribution of `values` under `tag` at `step`, with TensorFlow's default
    /// exponential buckets (see [`histogram::histogram`]).
    ///
    /// Errors (kind `InvalidInput`, naming the tag) if a value is NaN or infinite.
    pub fn histogram(&mut self, tag: &str, step: i64, values: &[f32]) -> io::Result<()> {
        let histo = histogram::histogram(values).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("histogram {tag:?}: values include NaN or infinity"))
        })?;
        self.write_value(step, tag, Payload::Histo(histo))
    }

    /// Logs an 8-bit image under `tag` at `step`, PNG-encoded. `pixels_hwc` holds `height` rows
    /// of `width` pixels of `channels` interleaved bytes (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA).
    ///
    /// Errors (kind `InvalidInput`, naming the tag) on a bad channel count, a zero dimension or a
    /// buffer of the wrong length.
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        height: usize,
        width: usize,
        channels: usize,
        pixels_hwc: &[u8],
    ) -> io::Result<()> {
        let encoded = image::encode_png(height, width, channels, pixels_hwc)
            .map_err(|e| io::Error::new(e.kind(), format!("image {tag:?}: {e}")))?;
        // encode_png accepted the sizes, so they fit in i32.
        let image = proto::Image {
            height: height as i32,
            width: width as i32,
            colorspace: channels as i32,
            encoded_image_string: encoded,
        };
        self.write_value(step, tag, Payload::Image(image))
    }

    /// Pushes buffered events to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        self.out.flush().map_err(|e| self.write_error(e))
    }

    fn write_value(&mut self, step: i64, tag: &str, payload: Payload) -> io::Result<()> {
        let value = Value { tag: tag.into(), payload: Some(payload) };
        let summary = Summary { value: vec![value] };
        let event = Event { wall_time: wall_time(), step, what: Some(What::Summary(summary)) };
        self.write_event(&event)?;
        if self.last_flush.elapsed() >= MAX_UNFLUSHED {
            self.flush()?;
        }
        Ok(())
    }

    fn write_event(&mut self, event: &Event) -> io::Result<()> {
        write_record(&mut self.out, &event.encode_to_vec()).map_err(|e| self.write_error(e))
    }

    fn write_error(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("cannot write TensorBoard event file {}: {e}", self.path.display()))
    }
}

/// Creates a file that did not exist before (never appending to another writer's file).
fn create_event_file(log_dir: &Path) -> io::Result<(PathBuf, File)> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let prefix = format!("events.out.tfevents.{secs}.{}.{}", hostname(), std::process::id());
    loop {
        let n = FILES_CREATED.fetch_add(1, Ordering::Relaxed);
        let path = log_dir.join(format!("{prefix}.{n}"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            // Left by another process with our pid (another container on a shared volume).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create TensorBoard event file {}: {e}", path.display()),
                ))
            }
        }
    }
}

/// The machine's name as TensorFlow puts it in event file names; "localhost" if unknown.
fn hostname() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    // The name becomes part of a file name.
    let name: String = name.trim().chars().map(|c| if c == '/' || c.is_whitespace() { '_' } else { c }).collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Seconds since the Unix epoch, as `Event.wall_time` holds it.
fn wall_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
