//! The Python side of the interop tests: the testkit's interop scripts, run
//! against the test broker.

use flow_events_testkit::python::{Script, interpreter};

use super::{URL, WAIT};

/// The interpreter named by `FLOW_EVENTS_PYTHON`, a virtualenv with pika and
/// opentelemetry-api (see `.ci/run`); `None` when the test is skipped.
pub fn python() -> Option<String> {
    interpreter("pika opentelemetry-api")
}

/// The arguments of an interop script after the broker URL, and its time
/// limit last.
fn arguments<'a>(names: &[&'a str], limit: &'a str) -> Vec<&'a str> {
    let mut all = vec![URL];
    all.extend_from_slice(names);
    all.push(limit);
    all
}

/// A Python consumer of one event: the interop `script` bound to `exchange`
/// with `binding`, once it is ready.
pub async fn consumer(python: &str, script: &str, exchange: &str, binding: &str) -> Script {
    let limit = WAIT.as_secs().to_string();
    Script::ready(
        python,
        script,
        &arguments(&[exchange, binding], &limit),
        WAIT,
    )
    .await
}

/// The first dead letter of `queue` as pika reads it, left in the queue.
pub async fn peek_dead_letter(python: &str, queue: &str) -> serde_json::Value {
    let limit = WAIT.as_secs().to_string();
    let args = arguments(&[queue], &limit);
    Script::start(python, "amqp_peek_dead_letter.py", &args, WAIT)
        .json()
        .await
}
