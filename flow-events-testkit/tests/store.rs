//! The decorator with a pending-events store: restarts, bounds, expiry, and
//! store failures. Paused clock; the memory store stands in for a durable one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flow_events_core::{
    Config, ConnectionMonitor, Event, EventId, EventSink, HealthStatus, MemoryStore,
    OverflowPolicy, PendingStore, PublishErrorKind, PublishOutcome, Recovered, Resilient,
    StartError, StoreError, StoreErrorKind, StoredEvent,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::faulty::{FaultHandle, Faulty};
use flow_events_testkit::{FaultyStore, StoreFaultHandle};
use tokio::time::timeout;

mod common;

use common::{consumer, event, eventually, receive};

fn config() -> flow_events_core::ConfigBuilder {
    Config::builder()
        .with_retry_delay(Duration::from_secs(1))
        .with_max_retry_delay(Duration::from_secs(4))
}

/// Started over `broker`, which cannot be reached, with a memory store that
/// fails on command.
async fn down_with_faulty_store(
    broker: &MemoryBroker,
) -> (Resilient, FaultHandle, StoreFaultHandle) {
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let (store, disk) = FaultyStore::wrap(MemoryStore::new());
    let r = Resilient::builder(down)
        .with_config(config().build().unwrap())
        .with_store(store)
        .start()
        .await
        .unwrap();
    (r, faults, disk)
}

#[tokio::test(start_paused = true)]
async fn pending_events_survive_a_restart_and_go_first_in_order() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "restart", "r.#").await;
    let store = MemoryStore::new();

    // First run: the broker is unreachable; 100 events wait in the store.
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let first = Resilient::builder(down)
        .with_config(config().build().unwrap())
        .with_store(store.clone())
        .start()
        .await
        .unwrap();
    let mut ids: Vec<EventId> = Vec::new();
    for n in 0..100 {
        let e = event("r.old", n);
        ids.push(e.id());
        assert!(matches!(
            first.publish(e).await.unwrap(),
            PublishOutcome::Buffered { .. }
        ));
    }
    assert_eq!(store.len(), 100);
    let report = first.shutdown(Duration::ZERO).await;
    assert_eq!(report.remaining.len(), 100);
    drop(first);
    assert_eq!(store.len(), 100, "shutdown leaves them in the store");

    // Second run: the broker is there; the old events go out first, in order.
    let second = Resilient::builder(broker.backend())
        .with_config(config().build().unwrap())
        .with_store(store.clone())
        .start()
        .await
        .unwrap();
    assert_eq!(second.status().pending_events, 100);
    let newer = event("r.new", 0);
    second.publish(newer.clone()).await.unwrap();
    ids.push(newer.id());
    let got: Vec<EventId> = receive(&mut rx, 101).await.iter().map(Event::id).collect();
    assert_eq!(got, ids);
    eventually("the store emptied", || store.is_empty()).await;
    assert_eq!(second.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_store_write_hands_the_event_back_and_the_service_stays_up() {
    let broker = MemoryBroker::new();
    let (r, _faults, disk) = down_with_faulty_store(&broker).await;
    disk.set_full(true);
    let e = event("w.e", 1);
    let err = r.publish(e.clone()).await.unwrap_err();
    assert!(
        *err.kind() == PublishErrorKind::StoreFailed
            && err
                .store_error()
                .is_some_and(|e| e.to_string().contains("no space left")),
        "{err}"
    );
    assert_eq!(err.into_event(), e);
    assert_eq!(r.status().pending_events, 0, "nothing half-kept");
    disk.set_full(false);
    assert!(matches!(
        r.publish(event("w.e", 2)).await.unwrap(),
        PublishOutcome::Buffered { pending: 1 }
    ));
}

/// A caller that gives up while its event is being stored leaves it buffered:
/// it is delivered, and it does not hold back the events behind it.
#[tokio::test(start_paused = true)]
async fn a_publish_cancelled_while_storing_keeps_its_event_and_the_drain_going() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "slow-disk", "s.*").await;
    let (r, faults, disk) = down_with_faulty_store(&broker).await;
    disk.delay_appends(Duration::from_secs(5));
    let first = event("s.e", 1);
    assert!(
        timeout(Duration::from_secs(1), r.publish(first.clone()))
            .await
            .is_err(),
        "the caller gives up while the store writes"
    );
    disk.delay_appends(Duration::ZERO);
    let second = event("s.e", 2);
    assert!(matches!(
        r.publish(second.clone()).await.unwrap(),
        PublishOutcome::Buffered { pending: 2 }
    ));
    faults.come_up();
    let got = receive(&mut rx, 2).await;
    assert_eq!(
        got.iter().map(Event::id).collect::<Vec<_>>(),
        [first.id(), second.id()]
    );
    eventually("nothing pending", || r.status().pending_events == 0).await;
}

#[tokio::test(start_paused = true)]
async fn byte_bound_applies_the_overflow_policy() {
    let broker = MemoryBroker::new();
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let one = event("b.e", 1).encoded_len();
    let r = Resilient::builder(down)
        .with_config(
            config()
                .with_max_pending_bytes(Some(one * 3))
                .with_overflow_policy(OverflowPolicy::Reject)
                .build()
                .unwrap(),
        )
        .start()
        .await
        .unwrap();
    for n in 1..=3 {
        r.publish(event("b.e", n)).await.unwrap();
    }
    let err = r.publish(event("b.e", 4)).await.unwrap_err();
    assert!(matches!(err.kind(), PublishErrorKind::BufferFull { .. }));
    assert_eq!(r.status().pending_events, 3);
}

#[tokio::test(start_paused = true)]
async fn old_events_expire_counted_and_reported() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "expiry", "x.#").await;
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = Resilient::builder(down)
        .with_config(
            config()
                .with_max_pending_age(Some(Duration::from_secs(30)))
                .build()
                .unwrap(),
        )
        .start()
        .await
        .unwrap();
    for n in 0..5 {
        r.publish(event("x.old", n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(31)).await;
    let fresh = event("x.fresh", 0);
    r.publish(fresh.clone()).await.unwrap();
    let s = r.status();
    assert_eq!(s.expired_events, 5);
    assert_eq!(s.pending_events, 1);
    let health = r.health("svc");
    assert!(
        health.issues.iter().any(|i| i.contains("5 events expired")),
        "{:?}",
        health.issues
    );
    faults.come_up();
    assert_eq!(receive(&mut rx, 1).await[0].id(), fresh.id());
}

/// A store whose recovery gives `recovered` (by the name `name`) and that
/// keeps nothing after it.
struct Recovers {
    name: &'static str,
    recovered: fn() -> Result<Recovered, StoreError>,
}

#[async_trait::async_trait]
impl PendingStore for Recovers {
    async fn recover(&self) -> Result<Recovered, StoreError> {
        (self.recovered)()
    }
    async fn append(&self, _: u64, _: &Event) -> Result<(), StoreError> {
        Ok(())
    }
    fn remove(&self, _: u64) {}
    fn describe(&self) -> String {
        self.name.into()
    }
}

/// A store that reports what it could not read.
fn damaged() -> Recovers {
    let recovered = || {
        let kept = StoredEvent {
            seq: 7,
            event: event("d.kept", 1),
            stored_at: chrono::Utc::now(),
        };
        Ok(Recovered::new(vec![kept]).with_unreadable(3, "3 records failed their checksum"))
    };
    Recovers {
        name: "damaged",
        recovered,
    }
}

/// A store another process holds.
fn locked() -> Recovers {
    let recovered = || {
        Err(StoreError::new(
            StoreErrorKind::Locked,
            "outbox.redb is in use by another process",
        ))
    };
    Recovers {
        name: "locked",
        recovered,
    }
}

#[tokio::test(start_paused = true)]
async fn unreadable_records_are_reported_and_the_rest_kept() {
    let broker = MemoryBroker::new();
    let (down, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = Resilient::builder(down)
        .with_config(config().build().unwrap())
        .with_store(damaged())
        .start()
        .await
        .unwrap();
    let s = r.status();
    assert_eq!(s.unreadable_events, 3);
    assert_eq!(s.pending_events, 1);
    assert_eq!(s.store.as_deref(), Some("damaged"));
    assert_eq!(r.health("svc").status, HealthStatus::Degraded);
    // New events are numbered after the recovered ones.
    r.publish(event("d.new", 2)).await.unwrap();
    assert_eq!(r.status().pending_events, 2);
}

#[tokio::test(start_paused = true)]
async fn a_store_that_cannot_open_fails_start_up_clearly() {
    let broker = MemoryBroker::new();
    let err = Resilient::builder(broker.backend())
        .with_store(locked())
        .start()
        .await
        .unwrap_err();
    assert!(matches!(&err, StartError::Store(e) if e.kind() == StoreErrorKind::Locked));
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}
