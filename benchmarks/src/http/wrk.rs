//! The load generator: `wrk` with a Lua script that posts one event and
//! prints its summary as one JSON line.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use serde::Deserialize;
use tokio::process::Command;

use super::HttpSettings;
use crate::payload::EVENT_TYPE;

/// Size of the request body, as the original service's clients sent.
pub(super) const BODY_BYTES: usize = 250;

/// Fails, saying how to install it, when `wrk` is not there.
pub(super) async fn check_wrk() -> anyhow::Result<()> {
    let found = Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok();
    anyhow::ensure!(
        found,
        "wrk not found (Debian: apt-get install wrk); benchmarks/run.sh installs it"
    );
    Ok(())
}

/// The request body: an event of `BODY_BYTES` bytes.
fn body() -> String {
    let fixed = format!(r#"{{"type":"{EVENT_TYPE}","data":{{"pad":""}}}}"#).len();
    let pad = "x".repeat(BODY_BYTES.saturating_sub(fixed));
    format!(r#"{{"type":"{EVENT_TYPE}","data":{{"pad":"{pad}"}}}}"#)
}

/// Writes the `wrk` script: POST the body, print the summary as one JSON line.
pub(super) fn wrk_script() -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "flow-events-bench-{}-{:04x}.lua",
        std::process::id(),
        fastrand::u16(..)
    ));
    let script = format!(
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{body}'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"#,
        body = body()
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What the script prints.
#[derive(Debug, Deserialize)]
pub(super) struct WrkJson {
    pub(super) requests: u64,
    pub(super) duration_us: u64,
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) max_us: f64,
    pub(super) status: u64,
    pub(super) connect: u64,
    pub(super) read: u64,
    pub(super) write: u64,
    pub(super) timeout: u64,
}

/// Runs `wrk` for `seconds` against `port`.
pub(super) async fn wrk(
    settings: &HttpSettings,
    script: &Path,
    port: u16,
    seconds: u32,
) -> anyhow::Result<WrkJson> {
    let output = Command::new("wrk")
        .args(["-t", &settings.threads.to_string()])
        .args(["-c", &settings.connections.to_string()])
        .args(["-d", &format!("{seconds}s")])
        .arg("-s")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/events"))
        .kill_on_drop(true)
        .output()
        .await
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRK_JSON "))
        .with_context(|| {
            format!(
                "wrk printed no result ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    serde_json::from_str(line).context("reading wrk's result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_an_event_of_the_planned_size() {
        let b = body();
        assert_eq!(b.len(), BODY_BYTES);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["type"], EVENT_TYPE);
    }
}
