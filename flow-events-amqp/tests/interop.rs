//! A Python service (pika) reads an event published by flow-events.
//!
//! The interpreter comes from `FLOW_EVENTS_PYTHON` (a virtualenv with `pika`
//! and `opentelemetry-api`, as `.ci/run` makes it). Without it the test is
//! skipped, unless `CI=true`, where it fails.

mod common;

use common::Fixture;
use common::python::{consumer, python};
use flow_events_core::Event;
use flow_events_testkit::steps::publish_confirmed;

#[tokio::test(flavor = "multi_thread")]
async fn python_consumer_reads_a_published_event() {
    require_broker!("python_consumer_reads_a_published_event");
    let Some(python) = python() else { return };
    let fx = Fixture::with("interop", |c| c, |o| o.with_app_id("billing"));
    let session = fx.session().await;
    let consumer = consumer(&python, "amqp_consume_one.py", &fx.exchange, "invoice.*").await;

    let sent = Event::try_new(
        "invoice.paid",
        serde_json::json!({"invoice": 7, "total": "12.50", "lines": [1, 2]}),
    )
    .expect("event")
    .with_header("traceparent", "00-abc-01");
    publish_confirmed(&*session, &sent).await;

    let got = consumer.json().await;
    assert_eq!(got["id"], sent.id().to_string());
    assert_eq!(got["type"], "invoice.paid");
    assert_eq!(got["data"], sent.data());
    assert_eq!(got["routing_key"], "invoice.paid");
    assert_eq!(got["message_id"], sent.id().to_string());
    assert_eq!(got["amqp_type"], "invoice.paid");
    assert_eq!(got["content_type"], "application/json");
    assert_eq!(got["delivery_mode"], 2);
    assert_eq!(got["amqp_timestamp"], sent.timestamp().timestamp());
    assert_eq!(got["app_id"], "billing");
    let unix = got["timestamp_unix"]
        .as_f64()
        .expect("Python parsed the timestamp");
    assert!((unix - sent.timestamp().timestamp_micros() as f64 / 1e6).abs() < 1e-3);
    assert_eq!(got["headers"]["traceparent"], "00-abc-01");
    session.close().await;
}
