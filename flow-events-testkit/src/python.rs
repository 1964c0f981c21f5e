//! The Python side of the interop tests (feature `python`): the interpreter
//! named by `FLOW_EVENTS_PYTHON`, and the scripts of this crate's `interop`
//! folder, run with it as a Python service would consume.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The interpreter named by `FLOW_EVENTS_PYTHON`, a virtualenv's python
/// with the packages `packages` (space-separated, as `pip install` takes
/// them). Not set: panics under `CI=true`, otherwise prints why the test is
/// skipped and returns `None`.
pub fn interpreter(packages: &str) -> Option<String> {
    match std::env::var("FLOW_EVENTS_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ => {
            let setup = format!("python3 -m venv .venv && .venv/bin/pip install {packages}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "FLOW_EVENTS_PYTHON is not set and CI=true: point it at a python of a virtualenv ({setup})"
                );
            }
            eprintln!(
                "skipping the Python interop test: set FLOW_EVENTS_PYTHON to a python of a virtualenv ({setup})"
            );
            None
        }
    }
}

/// The path of the interop script `name` (a file of the `interop` folder).
pub fn script(name: &str) -> String {
    format!("{}/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// An interop script running, read line by line; killed when dropped.
#[derive(Debug)]
pub struct Script {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    limit: Duration,
}

impl Script {
    /// Runs the interop script `name` with `python` and `args`; each line it
    /// prints must come within `limit`.
    pub fn start(python: &str, name: &str, args: &[&str], limit: Duration) -> Self {
        let mut child = Command::new(python)
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{name}: no stdout"));
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
            limit,
        }
    }

    /// Runs the interop script `name` as [`Script::start`] does, and waits
    /// until it prints `READY` (a consumer bound to what it reads).
    pub async fn ready(python: &str, name: &str, args: &[&str], limit: Duration) -> Self {
        let mut script = Self::start(python, name, args, limit);
        assert_eq!(script.line().await, "READY", "{name} is not ready");
        script
    }

    /// The next line it prints.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(self.limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("the Python script prints nothing within {:?}", self.limit))
            .unwrap_or_else(|e| panic!("reading the Python script's output: {e}"))
            .unwrap_or_else(|| panic!("the Python script ended without a line"))
    }

    /// The JSON line it prints next, once it has exited with success.
    pub async fn json(mut self) -> serde_json::Value {
        let line = self.line().await;
        let got: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("JSON from Python: {e}: {line}"));
        println!("python read: {got}");
        let status = tokio::time::timeout(self.limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the Python script does not exit within {:?}", self.limit))
            .unwrap_or_else(|e| panic!("the Python script's status: {e}"));
        assert!(status.success(), "the Python script exited with {status}");
        got
    }
}
