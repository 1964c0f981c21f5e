//! A Python service (nats-py) reads an event published by flow-events.
//!
//! The interpreter comes from `FLOW_EVENTS_PYTHON` (a virtualenv with
//! `nats-py`): `python3 -m venv .venv && .venv/bin/pip install nats-py`.
//! Without it the test is skipped, unless `CI=true`, where it fails.

mod common;

use common::{Fixture, URL, WAIT};
use flow_events_core::Event;
use flow_events_testkit::python::{Script, interpreter};
use flow_events_testkit::steps::publish_confirmed;

#[tokio::test(flavor = "multi_thread")]
async fn python_consumer_reads_a_published_event() {
    require_server!("python_consumer_reads_a_published_event");
    let Some(python) = interpreter("nats-py") else {
        return;
    };
    let fx = Fixture::new("interop");
    // The first session makes the stream the Python consumer reads.
    let session = fx.session().await;

    let subject = format!("{}.invoice.*", fx.prefix);
    let limit = WAIT.as_secs().to_string();
    let args = [URL, fx.stream.as_str(), subject.as_str(), limit.as_str()];
    let consumer = Script::ready(&python, "nats_consume_one.py", &args, WAIT).await;

    let sent = Event::try_new(
        "invoice.paid",
        serde_json::json!({"invoice": 7, "total": "12.50", "lines": [1, 2]}),
    )
    .expect("event")
    .with_header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    publish_confirmed(&*session, &sent).await;

    let got = consumer.json().await;
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
    session.close().await;
}
