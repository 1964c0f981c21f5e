//! The decorator over a `RedbStore`: what a bound drops leaves the file too,
//! and a restart publishes only what was kept.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{consume, publish_buffered, shutdown_drained, start_with_outbox, stored_ids};
use flow_events_core::{Config, Event, EventId, OverflowPolicy};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::faulty::Faulty;

fn config(max: usize) -> Config {
    Config::builder()
        .with_retry_delay(Duration::from_millis(50))
        .with_max_retry_delay(Duration::from_millis(200))
        .with_max_pending_events(max)
        .with_overflow_policy(OverflowPolicy::DropOldest)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_dropped_by_a_bound_leave_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let broker = MemoryBroker::new();
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let first = start_with_outbox(down, config(3), &path).await;
    let mut ids: Vec<EventId> = Vec::new();
    for n in 0..5 {
        let e = Event::try_new("bound.test", serde_json::json!({ "n": n })).unwrap();
        ids.push(publish_buffered(&first, e).await);
    }
    first.shutdown(Duration::ZERO).await;
    drop(first);

    // The two oldest were dropped for room, in memory and in the file.
    assert_eq!(stored_ids(&path), ids[2..]);

    let (_c, _h, mut rx) = consume(&broker, "bound", "bound.#").await;
    let second = start_with_outbox(broker.backend(), config(3), &path).await;
    assert_eq!(rx.ids(3, Duration::from_secs(30)).await, ids[2..]);
    shutdown_drained(&second).await;
}
