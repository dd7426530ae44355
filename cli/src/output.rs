//! Writing reports to stdout without panicking when the reader goes away (`| head`).

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout; a closed pipe ends the output quietly, other errors are returned.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
