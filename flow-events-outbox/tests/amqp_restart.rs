//! Against RabbitMQ: 5 000 events buffered while the broker is unreachable
//! (an AMQP URL to a closed port), the service stopped, then started again
//! with the broker up: all 5 000 arrive, in order, at a consumer on an
//! exchange and queue of this test's own, deleted at the end.
//!
//! Needs RabbitMQ at 127.0.0.1:5672 (guest/guest): without it the test fails
//! under `CI=true` and is skipped with a printed reason otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::Duration;

use common::{WAIT, publish_buffered, shutdown_drained, start_with_outbox, stored_ids};
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Config, ConnectionMonitor, Decision, Event, EventId, Resilient};
use flow_events_testkit::amqp::Cleanup;
use flow_events_testkit::deliveries::forward;
use flow_events_testkit::server::reachable;
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;

const BROKER: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const EVENTS: usize = 5_000;
const PUBLISHERS: usize = 8;

/// An AMQP URL on a port nothing listens on.
fn closed_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

fn config() -> Config {
    Config::builder()
        .with_retry_delay(Duration::from_millis(100))
        .with_max_retry_delay(Duration::from_millis(500))
        .with_publish_timeout(Duration::from_secs(10))
        .with_max_pending_events(EVENTS)
        .build()
        .unwrap()
}

fn backend(config: &Config, url: &str, exchange: &str) -> AmqpBackend {
    AmqpBackend::new(
        config,
        AmqpConfig::builder()
            .with_url(url)
            .with_exchange(exchange)
            .with_app_id("flow-events-outbox-test")
            .with_connect_timeout(Duration::from_secs(2))
            .build()
            .expect("AMQP config"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_buffered_while_rabbitmq_is_unreachable_arrive_in_order() {
    let test = "five_thousand_events_buffered_while_rabbitmq_is_unreachable_arrive_in_order";
    if !reachable("RabbitMQ", BROKER, test) {
        return;
    }
    let suffix = format!("{:016x}", fastrand::u64(..));
    let exchange = format!("test.outbox.{suffix}");
    let queue = format!("test.outbox.restart.{suffix}");
    // Deleted when the test ends, on a panic too.
    let mut cleanup = Cleanup::new(URL);
    cleanup
        .queue(&queue)
        .queue(&format!("{queue}.dead"))
        .exchange(&exchange)
        .exchange(&format!("{exchange}.dlx"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");

    // First run: the broker cannot be reached; every publish is stored.
    let down = config();
    let first = start_with_outbox(backend(&down, &closed_url(), &exchange), down, &path).await;
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let first = first.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (p..EVENTS).step_by(PUBLISHERS) {
                let e = Event::try_new("outbox.restart", serde_json::json!({ "n": n })).unwrap();
                ids.push(publish_buffered(&first, e).await);
            }
            ids
        }));
    }
    let mut by_publisher = Vec::new();
    for t in tasks {
        by_publisher.push(t.await.unwrap());
    }
    assert_eq!(first.status().pending_events, EVENTS);
    assert_eq!(first.shutdown(Duration::ZERO).await.remaining.len(), EVENTS);
    drop(first);
    // The order they were accepted in, as the outbox keeps it.
    let stored = stored_ids(&path);
    assert_eq!(stored.len(), EVENTS);

    // A consumer on the test's own queue, through the real broker.
    let up = config();
    let consumer = start_connected(
        Resilient::builder(backend(&up, URL, &exchange)).with_config(up.clone()),
        WAIT,
    )
    .await;
    let (_sub, mut rx) = forward(&consumer, subscription(&queue, "outbox.#"), Decision::Ack).await;

    // Second run: the broker is up; the stored events go out first, in order.
    let second = start_with_outbox(backend(&up, URL, &exchange), up, &path).await;
    let got = rx.ids(EVENTS, Duration::from_secs(60)).await;
    assert_eq!(got, stored, "delivered in the order stored");
    // And each publisher's events in the order it published them.
    let position: HashMap<EventId, usize> =
        got.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for ids in &by_publisher {
        let at: Vec<usize> = ids.iter().map(|id| position[id]).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]));
    }
    shutdown_drained(&second).await;
    drop(second);
    consumer.shutdown(Duration::from_secs(5)).await;

    // Confirmed: nothing is left for a third run.
    assert!(flow_events_outbox::read(&path).unwrap().events.is_empty());
}
