//! Bad inputs through `Resilient`: each shows as a typed error in
//! `status().last_error` while the service keeps running (publishes are
//! buffered, the supervisor keeps probing, nothing leaks), or, for an event
//! too large, as a typed refusal that hands the event back.

mod common;

use std::time::Duration;

use common::broker::rabbitmqctl;
use common::traffic::start;
use common::{URL, WAIT, fanout_exchange, unique, until};
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, Event, EventSink, HealthStatus, PublishErrorKind,
    PublishOutcome,
};
use flow_events_testkit::received::numbered;

/// Quick retries; `failed` after three.
fn config() -> Config {
    Config::builder()
        .with_retry_delay(Duration::from_millis(50))
        .with_max_retry_delay(Duration::from_millis(200))
        .with_max_retries(3)
        .build()
        .expect("config")
}

/// Connections the broker has open for `app_id`, when `rabbitmqctl` can say.
fn broker_connections(app_id: &str) -> Option<usize> {
    let list = rabbitmqctl(&["-q", "list_connections", "name"])?;
    Some(list.lines().filter(|l| l.contains(app_id)).count())
}

/// Starts `Resilient` on `url` and checks that the failure shows as a
/// configuration error naming every word of `expect`, without `secret`,
/// while the service goes on.
async fn keeps_running(test: &str, url: &str, exchange: &str, expect: &[&str], secret: &str) {
    let app_id = unique(test);
    let config = config();
    let backend = AmqpBackend::new(
        &config,
        AmqpConfig::builder()
            .with_url(url)
            .with_exchange(exchange)
            .with_app_id(&app_id)
            .with_connect_timeout(Duration::from_secs(3))
            .build()
            .expect("AMQP config"),
    );
    let events = start(backend, &config).await;
    until("the error reported", WAIT, || {
        events.status().last_error.is_some()
    })
    .await;
    until("retries spent", WAIT, || {
        events.state() == ConnectionState::Failed
    })
    .await;
    let status = events.status();
    let error = status.last_error.clone().unwrap_or_default();
    println!("{test}: last_error = {error}");
    assert!(error.starts_with("configuration error: "), "{error}");
    for word in expect {
        assert!(error.contains(word), "{word:?} not in {error}");
    }
    assert!(!error.contains(secret), "{error}");
    assert!(!status.connected);

    // The service goes on: publishes are buffered, health says degraded.
    let outcome = events.publish(numbered(1)).await.expect("accepted");
    assert!(
        matches!(outcome, PublishOutcome::Buffered { pending: 1 }),
        "{outcome:?}"
    );
    let health = events.health("test");
    assert_eq!(health.status, HealthStatus::Degraded);
    assert_eq!(
        health.issues,
        vec!["RabbitMQ connection unavailable".to_owned()]
    );
    // The supervisor keeps probing, and leaves no connection behind.
    let attempts = events.status().reconnect_attempts;
    until("probing goes on", WAIT, || {
        events.status().reconnect_attempts > attempts + 2
    })
    .await;
    if let Some(open) = broker_connections(&app_id) {
        // At most the two of an attempt under way.
        assert!(open <= 2, "{open} connections of {app_id} left open");
    }
    let report = events.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.remaining.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password() {
    require_broker!("wrong_password");
    keeps_running(
        "badpass",
        "amqp://guest:Wr0ngPassw0rd@127.0.0.1:5672/%2f",
        &unique("badpass"),
        &["ACCESS_REFUSED", "amqp://guest:***@127.0.0.1:5672"],
        "Wr0ngPassw0rd",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_vhost() {
    require_broker!("unknown_vhost");
    keeps_running(
        "badvhost",
        "amqp://guest:guest@127.0.0.1:5672/no-such-vhost",
        &unique("badvhost"),
        &["vhost", "no-such-vhost"],
        "guest:guest",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_declared_with_another_type() {
    require_broker!("exchange_declared_with_another_type");
    let (exchange, _cleanup) = fanout_exchange().await;
    keeps_running(
        "fanout",
        URL,
        &exchange,
        &["PRECONDITION_FAILED", &exchange, "other settings"],
        "guest:guest",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_url() {
    // Needs no broker: nothing is reached.
    keeps_running(
        "badurl",
        "amqp://guest:S3cretPw@127.0.0.1:notaport/%2f",
        "flow.events",
        &["invalid broker URL"],
        "S3cretPw",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_over_the_configured_limit_is_handed_back() {
    // Refused before anything is sent: needs no broker.
    let config = Config::builder()
        .with_max_event_bytes(1024)
        .build()
        .expect("config");
    let amqp = AmqpConfig::builder()
        .with_url("amqp://guest:guest@127.0.0.1:1/%2f")
        .build()
        .expect("AMQP config");
    let events = start(AmqpBackend::new(&config, amqp), &config).await;
    let event = Event::try_new("fault.big", serde_json::json!({ "blob": "x".repeat(2000) }))
        .expect("event");
    let err = events.publish(event.clone()).await.expect_err("too large");
    match err.kind() {
        PublishErrorKind::TooLarge { size, limit } => {
            assert!(*size > 2000, "{size}");
            assert_eq!(*limit, 1024);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("the limit is 1024"), "{err}");
    assert_eq!(err.into_event(), event);
    let status = events.status();
    assert_eq!(status.failed, 1);
    assert_eq!(status.pending_events, 0);
    // The service goes on.
    let outcome = events.publish(numbered(1)).await.expect("accepted");
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    events.shutdown(Duration::from_millis(100)).await;
}
