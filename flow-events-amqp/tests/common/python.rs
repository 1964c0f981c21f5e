//! The Python interpreter of the interop tests, and a consumer script run with it.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::{URL, WAIT};

/// What the project's virtualenv holds (see `.ci/run`).
const SETUP: &str = "python3 -m venv .venv && .venv/bin/pip install pika opentelemetry-api";

/// The interpreter named by `FLOW_EVENTS_PYTHON` (a virtualenv with pika and
/// opentelemetry-api). Not set: fails under `CI=true`, otherwise prints why
/// the test is skipped.
pub fn python() -> Option<String> {
    match std::env::var("FLOW_EVENTS_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "FLOW_EVENTS_PYTHON is not set and CI=true: point it at a python of a virtualenv ({SETUP})"
                );
            }
            eprintln!(
                "skipping the Python interop test: set FLOW_EVENTS_PYTHON to a python of a virtualenv ({SETUP})"
            );
            None
        }
    }
}

/// A Python consumer of one event: `tests/interop/<script>` run with the
/// broker URL, `exchange` and `binding`, once it has printed READY.
pub struct PythonConsumer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl PythonConsumer {
    pub async fn start(python: &str, script: &str, exchange: &str, binding: &str) -> Self {
        let path = format!("{}/tests/interop/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(python)
            .arg(&path)
            .arg(URL)
            .arg(exchange)
            .arg(binding)
            .arg(WAIT.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut consumer = Self { child, lines };
        assert_eq!(consumer.line().await, "READY");
        consumer
    }

    /// The next line it prints.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the Python consumer answers in time")
            .expect("read")
            .expect("a line")
    }

    /// The JSON line it prints for the event, once it has exited with success.
    pub async fn json(mut self) -> serde_json::Value {
        let line = self.line().await;
        let got: serde_json::Value = serde_json::from_str(&line).expect("JSON from Python");
        println!("python read: {got}");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the consumer exits")
            .expect("status");
        assert!(status.success(), "{status}");
        got
    }
}
