//! Shutdown with events left, and the durable outbox across a restart.
#![cfg(feature = "amqp")]

use crate::common::{Service, unreachable_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_broker_down_reports_what_is_left() {
    let url = unreachable_url();
    let mut service = Service::start(&[("RABBITMQ_URL", &url), ("SHUTDOWN_GRACE", "0.2")]).await;
    for _ in 0..2 {
        let r = service.post_json(r#"{"type": "order.created"}"#).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    service.stop().await;
    let logs = service.logs();
    assert!(logs.contains("2 events left undelivered"), "{logs}");
    assert_eq!(
        logs.matches("undelivered event order.created").count(),
        2,
        "{logs}"
    );
}

#[cfg(all(feature = "memory", feature = "outbox"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_keeps_buffered_events_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let outbox = dir.path().join("outbox.redb");
    let outbox = outbox.to_str().expect("utf-8 path");

    // First run: the broker is unreachable; three events wait in the outbox.
    let url = unreachable_url();
    let mut first = Service::start(&[
        ("RABBITMQ_URL", &url),
        ("FLOW_EVENTS_OUTBOX_PATH", outbox),
        ("SHUTDOWN_GRACE", "0.2"),
    ])
    .await;
    for n in 0..3 {
        let r = first
            .post_json(&format!(
                r#"{{"type": "order.created", "data": {{"n": {n}}}}}"#
            ))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.json()["outcome"], "buffered", "{}", r.body);
    }
    first.stop().await;
    assert!(
        first
            .logs()
            .contains("they stay in the store for the next start"),
        "{}",
        first.logs()
    );

    // Second run, on the embedded broker: the three go out first.
    let second = Service::start(&[("FLOW_EVENTS_OUTBOX_PATH", outbox)]).await;
    second
        .wait_health("the outbox drained", |h| {
            h["dependencies"]["memory"]["pending_events"] == 0
        })
        .await;
    assert_eq!(second.metric("flow_events_confirmed_total").await, 3.0);
    second.wait_log("recovered 3 pending events").await;
}
