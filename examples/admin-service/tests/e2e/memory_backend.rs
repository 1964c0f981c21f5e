//! The embedded in-memory broker: publishing, metrics, a clean SIGTERM.
#![cfg(feature = "memory")]

use serde_json::Value;

use crate::common::{Service, metric_value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_confirms_and_counts() {
    let service = Service::start(&[]).await;
    service.wait_log("embedded in-memory broker").await;
    let health = service
        .wait_health("connected", |h| h["status"] == "healthy")
        .await;
    assert_eq!(health["service"], "Admin Service");
    assert_eq!(health["dependencies"]["memory"]["connected"], true);
    assert_eq!(health["issues"], serde_json::json!([]));

    let r = service
        .post_json(r#"{"type": "order.created", "data": {"order_id": 42}}"#)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let body = r.json();
    assert_eq!(body["outcome"], "confirmed");
    assert!(
        body["id"].as_str().is_some_and(|id| id.len() == 36),
        "{body}"
    );

    let metrics = service.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        metrics.headers
    );
    assert!(
        metrics
            .body
            .contains("# TYPE flow_events_published_total counter\n")
    );
    for (name, value) in [
        ("flow_events_published_total", 1.0),
        ("flow_events_confirmed_total", 1.0),
        (
            "flow_events_publish_duration_seconds_count{outcome=\"confirmed\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(&metrics.body, name), Some(value), "{name}");
    }
    assert_eq!(service.get("/health/ready").await.status, 200);
    assert_eq!(service.metric("flow_events_pending_events").await, 0.0);
    // The description of the API is served too.
    let doc = service.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(
        doc.json()["paths"]["/events"]["post"].is_object(),
        "{}",
        doc.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_with_nothing_left() {
    let mut service = Service::start(&[("LOG_FORMAT", "json")]).await;
    let r = service.post_json(r#"{"type": "order.created"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    service.stop().await;
    let logs = service.logs();
    // JSON logs: every line is an object.
    for line in logs.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(logs.contains("received SIGTERM"), "{logs}");
    assert!(logs.contains("0 events left undelivered"), "{logs}");
}
