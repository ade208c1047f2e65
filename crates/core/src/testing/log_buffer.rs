//! An in-memory sink for log lines, so that tests can assert what was logged.

use std::sync::{Arc, Mutex};

/// A `std::io::Write` whose clones share one buffer. Hand a `tracing_subscriber` fmt layer
/// `move || buffer.clone()` as its writer (a closure returning a writer is a `MakeWriter`),
/// then read what was logged with [`LogBuffer::text`].
///
/// ```
/// use std::io::Write;
/// use fleetscale_core::testing::LogBuffer;
///
/// let buffer = LogBuffer::default();
/// let mut writer = buffer.clone();
/// writeln!(writer, "WARN sent, outcome unknown").unwrap();
/// assert_eq!(buffer.text(), "WARN sent, outcome unknown\n");
/// ```
#[derive(Clone, Debug, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything written so far, as text.
    ///
    /// # Panics
    /// When what was written is not UTF-8 (log lines always are).
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes).expect("log lines are UTF-8")
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
