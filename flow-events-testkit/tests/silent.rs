//! A broker that goes quiet, over the memory backend with faults injected and
//! tokio's paused clock: no caller waits longer than the confirm wait, the
//! events it hands over are never lost, and shutdown accounts for every one.

// Helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use flow_events_core::{
    ConnectionMonitor, ConnectionState, EventId, EventSink, HealthStatus, MemoryStore,
    PublishErrorKind, PublishOutcome,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::faulty::Faulty;
use tokio::time::Instant;

mod common;

use common::{
    LONG, connected, consumer, event, eventually, publish_concurrently, start_with_store,
    wait_state,
};

const WAIT: Duration = Duration::from_millis(500);

#[tokio::test(start_paused = true)]
async fn a_silent_broker_gets_an_answer_within_the_confirm_wait_and_loses_nothing() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "quiet", "q.#").await;
    let (r, faults) = connected(&broker).await;
    assert_eq!(r.config().confirm_wait(), WAIT, "the default");
    faults.hold_confirms();
    let first = event("q.e", 0);
    let started = Instant::now();
    let outcome = r.publish(first.clone()).await.unwrap();
    assert_eq!(started.elapsed(), WAIT);
    assert_eq!(outcome, PublishOutcome::Buffered { pending: 1 });
    // No answer since it was sent: the broker is stalled, later publishes go
    // to the buffer at once.
    let s = r.status();
    assert!(s.stalled && s.connected, "{s:?}");
    assert_eq!(r.health("svc").status, HealthStatus::Degraded);
    let mut ids = vec![first.id()];
    for n in 1..50 {
        let e = event("q.e", n);
        ids.push(e.id());
        let started = Instant::now();
        let outcome = r.publish(e).await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    }
    assert_eq!(r.status().pending_events, 50);
    // The broker answers again: the late confirm clears the first event, the
    // rest drain.
    faults.release_confirms();
    eventually("nothing pending", || r.status().pending_events == 0).await;
    let s = r.status();
    assert!(!s.stalled);
    assert_eq!(s.confirmed, 50);
    assert_eq!(s.reconnects, 0);
    assert_eq!(
        faults.sends_of("q.e"),
        50,
        "the late-confirmed one was not sent again"
    );
    let seen: HashSet<EventId> = rx.distinct_ids(50, LONG).await.into_iter().collect();
    assert_eq!(seen, ids.into_iter().collect::<HashSet<EventId>>());
    assert_eq!(
        r.publish(event("q.e", 99)).await.unwrap(),
        PublishOutcome::Confirmed
    );
}

#[tokio::test(start_paused = true)]
async fn an_event_whose_confirm_is_late_is_sent_again_after_a_lost_connection() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    faults.hold_confirms();
    let e = event("l.e", 0);
    assert!(matches!(
        r.publish(e.clone()).await.unwrap(),
        PublishOutcome::Buffered { .. }
    ));
    // The connection is given up (heartbeats): the event goes again.
    faults.drop_connection();
    eventually("reconnected", || {
        r.status().reconnects == 1 && r.state() == ConnectionState::Connected
    })
    .await;
    faults.release_confirms();
    eventually("nothing pending", || r.status().pending_events == 0).await;
    assert_eq!(faults.sends_of("l.e"), 2);
    assert_eq!(r.status().confirmed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_late_event_is_stored_before_its_caller_is_answered() {
    let broker = MemoryBroker::new();
    let store = MemoryStore::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    let r = start_with_store(backend, store.clone()).await;
    wait_state(&r, ConnectionState::Connected).await;
    faults.hold_confirms();
    let outcome = r.publish(event("s.e", 0)).await.unwrap();
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    assert_eq!(store.len(), 1, "stored before Buffered was answered");
    faults.release_confirms();
    eventually("nothing pending", || r.status().pending_events == 0).await;
    assert!(store.is_empty(), "the late confirm cleared the store");
}

#[tokio::test(start_paused = true)]
async fn publishes_in_flight_when_the_broker_blocks_answer_at_once() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    faults.hold_confirms();
    let started = Instant::now();
    let (_, tasks) = publish_concurrently(&r, "b.e", 0..10);
    tokio::time::sleep(Duration::from_millis(100)).await;
    faults.set_blocked(true);
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    }
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert!(r.status().blocked);
    faults.set_blocked(false);
    faults.release_confirms();
    eventually("nothing pending", || r.status().pending_events == 0).await;
    assert_eq!(faults.sends_of("b.e"), 10);
}

/// Shutdown with direct publishes awaiting their confirms and no store:
/// every event is confirmed, handed back, or listed as undelivered.
#[tokio::test(start_paused = true)]
async fn shutdown_accounts_for_every_publish_in_flight() {
    for grace in [Duration::from_millis(100), Duration::from_secs(2)] {
        let broker = MemoryBroker::new();
        let (r, faults) = connected(&broker).await;
        faults.hold_confirms();
        let (sent, tasks) = publish_concurrently(&r, "x.e", 0..20);
        let sent: HashSet<EventId> = sent.into_iter().collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let report = r.shutdown(grace).await;
        let late = event("x.late", 0);
        let err = r.publish(late.clone()).await.unwrap_err();
        assert_eq!(err.kind(), &PublishErrorKind::ShuttingDown);
        assert_eq!(err.into_event(), late);

        let mut accounted: HashSet<EventId> = report.remaining.iter().map(|e| e.id()).collect();
        let mut handed_back = 0;
        let mut confirmed = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(PublishOutcome::Confirmed) => confirmed += 1,
                // Buffered before shutdown ended: listed in the report.
                Ok(PublishOutcome::Buffered { .. }) => {}
                Ok(other) => panic!("{other:?}"),
                Err(e) => {
                    assert_eq!(e.kind(), &PublishErrorKind::ShuttingDown);
                    handed_back += 1;
                    assert!(accounted.insert(e.into_event().id()));
                }
            }
        }
        println!(
            "grace {grace:?}: {} listed as undelivered, {} unanswered at shutdown, \
             {handed_back} handed back, {confirmed} confirmed",
            report.remaining.len(),
            report.unanswered
        );
        assert_eq!(accounted, sent, "grace {grace:?}");
        if grace < WAIT {
            assert_eq!(report.unanswered, 20);
            assert_eq!(handed_back, 20);
        } else {
            assert_eq!(report.unanswered, 0);
            assert_eq!(report.remaining.len(), 20);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_publishes_in_flight_within_the_grace() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    faults.delay_confirms(Duration::from_millis(200));
    let task = tokio::spawn({
        let r = r.clone();
        async move { r.publish(event("w.e", 0)).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    let report = r.shutdown(Duration::from_secs(5)).await;
    assert!(report.remaining.is_empty());
    assert_eq!(report.unanswered, 0);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(task.await.unwrap().unwrap(), PublishOutcome::Confirmed);
}

/// While the broker answers nothing, the drain sends one event at a time to
/// probe it (after each publish timeout), never the whole window into a
/// silent connection.
#[tokio::test(start_paused = true)]
async fn a_stalled_broker_is_probed_one_event_at_a_time() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    faults.hold_confirms();
    for n in 0..20 {
        r.publish(event("p.e", n)).await.unwrap();
    }
    assert!(r.status().stalled);
    assert_eq!(faults.sends_of("p.e"), 1);
    let timeout_ = r.config().publish_timeout();
    tokio::time::sleep(timeout_ + Duration::from_millis(100)).await;
    assert_eq!(
        faults.sends_of("p.e"),
        2,
        "one probe after the first timeout"
    );
    // A send of the drain that times out pauses it a moment (1 s here).
    tokio::time::sleep(timeout_ + Duration::from_secs(1)).await;
    assert_eq!(faults.sends_of("p.e"), 3, "and one more after the next");
    assert!(r.status().stalled);
    faults.release_confirms();
    eventually("nothing pending", || r.status().pending_events == 0).await;
    assert!(!r.status().stalled);
    assert_eq!(r.status().confirmed, 20);
}
