//! Child processes that print their result as a JSON line: the memory
//! child (this program again) and the aio-pika script.

use anyhow::Context;
use serde::de::DeserializeOwned;
use tokio::process::Command;

/// Runs `command` to its end (killed if the caller gives up) and reads the
/// last line of its output that is a JSON object; `what` names it in errors.
pub(crate) async fn json_result<T: DeserializeOwned>(
    mut command: Command,
    what: &str,
) -> anyhow::Result<T> {
    let output = command
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no result"))?;
    serde_json::from_str(line).with_context(|| format!("reading the result of {what}"))
}
