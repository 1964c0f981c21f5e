//! RabbitMQ configured but unreachable: the service starts, buffers, reports,
//! applies its overflow policy, and says what is left at shutdown.
#![cfg(feature = "amqp")]

use std::time::Duration;

use crate::common::{POLL, Req, Service, unreachable_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_buffers_and_reports() {
    let url = unreachable_url();
    let service = Service::spawn(&[("RABBITMQ_URL", &url)]);
    // /health answers within a second of the start, broker or not.
    let health = loop {
        if let Ok(r) = service.request(Req::get("/health")).await {
            break r;
        }
        assert!(
            service.started.elapsed() < Duration::from_secs(1),
            "no /health within 1 s\n{}",
            service.output()
        );
        tokio::time::sleep(POLL).await;
    };
    assert!(
        service.started.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        service.started.elapsed()
    );
    assert_eq!(health.status, 200, "degraded still serves: {}", health.body);
    let health = health.json();
    let rabbit = &health["dependencies"]["rabbitmq"];
    assert_eq!(health["status"], "degraded");
    assert_eq!(rabbit["connected"], false);
    assert_eq!(rabbit["pending_events"], 0);
    let shown = rabbit["url"].as_str().unwrap();
    assert!(shown.contains("guest:***@"), "{shown}");
    assert!(!shown.contains("guest:guest"), "{shown}");
    assert_eq!(health["issues"][0], "RabbitMQ connection unavailable");
    assert_eq!(service.get("/health/ready").await.status, 200);

    for n in 1..=3 {
        let r = service
            .post_json(&format!(
                r#"{{"type": "order.created", "data": {{"n": {n}}}}}"#
            ))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.json()["outcome"], "buffered");
        assert_eq!(r.json()["pending_events"], n);
    }
    let health = service.health().await;
    assert_eq!(health["dependencies"]["rabbitmq"]["pending_events"], 3);
    assert_eq!(service.metric("flow_events_pending_events").await, 3.0);
    assert_eq!(service.metric("flow_events_buffered_total").await, 3.0);
    assert_eq!(service.metric("flow_events_connected").await, 0.0);

    // The log says why, without the password.
    service.wait_log("failed to connect to RabbitMQ").await;
    service
        .wait_log("service will continue without RabbitMQ")
        .await;
    assert!(
        !service.logs().contains("guest:guest"),
        "{}",
        service.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_with_reject_policy_answers_503() {
    let url = unreachable_url();
    let service = Service::start(&[
        ("RABBITMQ_URL", &url),
        ("RABBITMQ_MAX_PENDING_EVENTS", "2"),
        ("RABBITMQ_OVERFLOW_POLICY", "reject"),
    ])
    .await;
    for _ in 0..2 {
        let r = service.post_json(r#"{"type": "order.created"}"#).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let r = service.post_json(r#"{"type": "order.created"}"#).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["code"], "buffer_full");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("pending events buffer is full (2 events)"),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(service.metric("flow_events_pending_events").await, 2.0);
    assert_eq!(service.metric("flow_events_failed_total").await, 1.0);
    assert_eq!(service.metric("flow_events_dropped_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_with_drop_policy_logs_the_drop() {
    let url = unreachable_url();
    let service =
        Service::start(&[("RABBITMQ_URL", &url), ("RABBITMQ_MAX_PENDING_EVENTS", "1")]).await;
    let r = service.post_json(r#"{"type": "order.created"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["outcome"], "buffered", "{}", r.body);
    // The buffer holds one: the second is dropped, and the client is told so.
    let r = service.post_json(r#"{"type": "order.created"}"#).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["outcome"], "dropped", "{}", r.body);
    assert_eq!(service.metric("flow_events_dropped_total").await, 1.0);
    let health = service.health().await;
    assert_eq!(health["dependencies"]["rabbitmq"]["dropped_events"], 1);
    service
        .wait_log("pending events buffer full, dropping event order.created")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_bound_of_the_buffer_refuses_what_does_not_fit() {
    let url = unreachable_url();
    let service = Service::start(&[
        ("RABBITMQ_URL", &url),
        ("FLOW_EVENTS_MAX_PENDING_BYTES", "3000"),
        ("RABBITMQ_OVERFLOW_POLICY", "reject"),
    ])
    .await;
    let body = format!(r#"{{"type": "a", "data": "{}"}}"#, "x".repeat(1000));
    for _ in 0..2 {
        let r = service.post_json(&body).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let r = service.post_json(&body).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["code"], "buffer_full", "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_without_broker_exits_with_a_clear_message() {
    let url = unreachable_url();
    let mut service = Service::spawn(&[
        ("RABBITMQ_URL", &url),
        ("RABBITMQ_REQUIRED", "true"),
        ("RABBITMQ_MAX_RETRIES", "2"),
        ("RABBITMQ_RETRY_DELAY", "0.05"),
    ]);
    let status = service.wait_exit().await;
    assert!(!status.success(), "{}", service.output());
    let stderr = service.stderr();
    // At least the 2 attempts asked for: the supervisor goes on probing while
    // start-up reads the count, so on a loaded machine a third may be in it.
    let attempts: u32 = stderr
        .split("RabbitMQ is required but unavailable after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in {stderr}"));
    assert!(attempts >= 2, "{stderr}");
    assert!(
        stderr.contains("(set RABBITMQ_REQUIRED=false to start without RabbitMQ)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("guest:guest"), "{stderr}");
}
