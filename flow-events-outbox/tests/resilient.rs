//! The decorator over a `RedbStore`: what a bound drops leaves the file too,
//! and a restart publishes only what was kept.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{consume, receive};
use flow_events_core::{
    Config, Event, EventId, EventSink, OverflowPolicy, PublishOutcome, Resilient,
};
use flow_events_memory::MemoryBroker;
use flow_events_outbox::RedbStore;
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
    let first = Resilient::builder(down)
        .with_config(config(3))
        .with_store(RedbStore::open(&path).unwrap())
        .start()
        .await
        .unwrap();
    let mut ids: Vec<EventId> = Vec::new();
    for n in 0..5 {
        let e = Event::try_new("bound.test", serde_json::json!({ "n": n })).unwrap();
        ids.push(e.id());
        assert!(matches!(
            first.publish(e).await.unwrap(),
            PublishOutcome::Buffered { .. }
        ));
    }
    first.shutdown(Duration::ZERO).await;
    drop(first);

    // The two oldest were dropped for room, in memory and in the file.
    let kept: Vec<EventId> = flow_events_outbox::read(&path)
        .unwrap()
        .events
        .iter()
        .map(|s| s.event.id())
        .collect();
    assert_eq!(kept, ids[2..]);

    let (_c, _h, mut rx) = consume(&broker, "bound", "bound.#").await;
    let second = Resilient::builder(broker.backend())
        .with_config(config(3))
        .with_store(RedbStore::open(&path).unwrap())
        .start()
        .await
        .unwrap();
    let got: Vec<EventId> = receive(&mut rx, 3, Duration::from_secs(30))
        .await
        .iter()
        .map(Event::id)
        .collect();
    assert_eq!(got, ids[2..]);
    assert!(
        second
            .shutdown(Duration::from_secs(30))
            .await
            .remaining
            .is_empty()
    );
}
