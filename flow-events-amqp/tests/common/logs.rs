//! Captures the log lines that tell of a channel error (a stale ack closes a
//! channel with 406 PRECONDITION_FAILED), so a test can say none happened.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

/// Lines of interest, shared by every test of the binary.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

/// Words of a channel error; any line holding one is kept.
const MARKERS: &[&str] = &["PRECONDITION_FAILED", "unknown delivery tag"];

impl Captured {
    /// The captured lines that mention a channel error.
    pub fn channel_errors(&self) -> Vec<String> {
        self.0.lock().expect("lock").clone()
    }
}

/// One write of the formatter: a line (or a few).
pub struct LineWriter(Captured);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        for line in text.lines() {
            if MARKERS.iter().any(|m| line.contains(m)) {
                self.0.0.lock().expect("lock").push(line.to_owned());
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter(self.clone())
    }
}

/// Installs (once per binary) a subscriber that keeps every line of
/// flow-events (debug) and lapin (info) that mentions a channel error.
pub fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = Captured::default();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter("flow_events_core=debug,flow_events_amqp=debug,lapin=info")
                .with_ansi(false)
                .with_writer(captured.clone())
                .finish();
            // Another subscriber set first (by another helper) would see nothing here.
            let _ = tracing::subscriber::set_global_default(subscriber);
            captured
        })
        .clone()
}
