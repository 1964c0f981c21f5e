//! A Python service (nats-py) reads an event published by flow-events.
//!
//! The interpreter comes from `FLOW_EVENTS_PYTHON` (a virtualenv with
//! `nats-py`): `python3 -m venv .venv && .venv/bin/pip install nats-py`.
//! Without it the test is skipped, unless `CI=true`, where it fails.

mod common;

use std::process::Stdio;

use common::{Fixture, URL, WAIT};
use flow_events_core::Event;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn python() -> Option<String> {
    match std::env::var("FLOW_EVENTS_PYTHON") {
        Ok(p) if !p.trim().is_empty() => Some(p),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "FLOW_EVENTS_PYTHON is not set and CI=true: point it at a python with nats-py \
                     (python3 -m venv .venv && .venv/bin/pip install nats-py)"
                );
            }
            eprintln!(
                "skipping the Python interop test: set FLOW_EVENTS_PYTHON to a python with \
                 nats-py (python3 -m venv .venv && .venv/bin/pip install nats-py)"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_consumer_reads_a_published_event() {
    require_server!("python_consumer_reads_a_published_event");
    let Some(python) = python() else { return };
    let fx = Fixture::new("interop");
    // The first session makes the stream the Python consumer reads.
    let session = fx.session().await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/consume_one.py");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(URL)
        .arg(&fx.stream)
        .arg(format!("{}.invoice.*", fx.prefix))
        .arg(WAIT.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the consumer is ready in time")
        .expect("read")
        .expect("a line");
    assert_eq!(ready, "READY");

    let sent = Event::try_new(
        "invoice.paid",
        serde_json::json!({"invoice": 7, "total": "12.50", "lines": [1, 2]}),
    )
    .expect("event")
    .with_header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("acked by the stream");

    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the consumer answers in time")
        .expect("read")
        .expect("a line");
    let got: serde_json::Value = serde_json::from_str(&line).expect("JSON from Python");
    println!("python read: {got}");
    assert_eq!(got["id"], sent.id().to_string());
    assert_eq!(got["type"], "invoice.paid");
    assert_eq!(got["data"], sent.data());
    assert_eq!(got["subject"], format!("{}.invoice.paid", fx.prefix));
    let unix = got["timestamp_unix"]
        .as_f64()
        .expect("Python parsed the timestamp");
    assert!((unix - sent.timestamp().timestamp_micros() as f64 / 1e6).abs() < 1e-3);
    let headers = &got["headers"];
    assert_eq!(headers["Nats-Msg-Id"], sent.id().to_string());
    assert_eq!(headers["Flow-Event-Type"], "invoice.paid");
    assert_eq!(headers["Content-Type"], "application/json");
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    let time = headers["Flow-Event-Time"].as_str().expect("time header");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339"),
        sent.timestamp()
    );
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the consumer exits")
        .expect("status");
    assert!(status.success(), "{status}");
    session.close().await;
}
