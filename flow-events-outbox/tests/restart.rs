//! 5 000 events buffered while the broker is unreachable, the service
//! stopped, then started again with the broker up: all 5 000 arrive, in order.
//!
//! On the memory backend, so it needs no broker; `amqp_restart.rs` does the
//! same against RabbitMQ.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{consume, publish_buffered, shutdown_drained, start_with_outbox};
use flow_events_core::{Config, ConnectionMonitor, Event, EventId};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::faulty::Faulty;

const EVENTS: usize = 5_000;

fn config() -> Config {
    Config::builder()
        .with_retry_delay(Duration::from_millis(50))
        .with_max_retry_delay(Duration::from_millis(200))
        .with_max_pending_events(EVENTS)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_buffered_events_arrive_in_order_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let broker = MemoryBroker::new();

    // First run: the broker cannot be reached.
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let first = start_with_outbox(down, config(), &path).await;
    let mut ids: Vec<EventId> = Vec::with_capacity(EVENTS);
    for n in 0..EVENTS {
        let e = Event::try_new("restart.test", serde_json::json!({ "n": n })).unwrap();
        ids.push(publish_buffered(&first, e).await);
    }
    assert_eq!(first.status().pending_events, EVENTS);
    let report = first.shutdown(Duration::ZERO).await;
    assert_eq!(report.remaining.len(), EVENTS);
    drop(first);

    // Second run: the broker is up, a consumer waits.
    let (_consumer, _sub, mut rx) = consume(&broker, "restart", "restart.#").await;
    let second = start_with_outbox(broker.backend(), config(), &path).await;
    assert_eq!(rx.ids(EVENTS, Duration::from_secs(60)).await, ids);
    shutdown_drained(&second).await;
    drop(second);

    // Nothing is left for a third run.
    let third = flow_events_outbox::read(&path).unwrap();
    assert!(third.events.is_empty());
}
