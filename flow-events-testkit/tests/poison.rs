//! Poison events over the memory backend, with faults injected and tokio's
//! paused clock: an event the broker refuses or nacks is dealt with on its
//! own, and never holds back the events behind it.

// Helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use flow_events_core::{
    ConnectionMonitor, ConnectionState, Decision, EventId, EventSink, HealthStatus, MemoryStore,
    PublishErrorKind, PublishOutcome, Resilient,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::deliveries::forward;
use flow_events_testkit::faulty::Faulty;
use flow_events_testkit::steps::subscription;
use tokio::time::Instant;

mod common;

use common::{
    LONG, config, connected, consumer, event, eventually, publish_concurrently, start,
    start_with_store, wait_state,
};

/// A refusal closes the "channel": the publishes in flight beside it are
/// interrupted and go again, the refused one is handed back, nothing
/// reconnects.
#[tokio::test(start_paused = true)]
async fn a_refused_event_is_handed_back_and_the_others_go_again_without_a_reconnect() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "orders", "order.#").await;
    let (r, faults) = connected(&broker).await;
    faults.refuse_type("admin.x");
    // 100 publishes whose confirms take a while, when the refused one goes.
    faults.delay_confirms(Duration::from_millis(100));
    let (mut ids, tasks) = publish_concurrently(&r, "order.created", 0..100);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let bad = event("admin.x", 0);
    let err = r.publish(bad.clone()).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::Refused);
    assert!(err.backend_error().unwrap().message().contains("admin.x"));
    assert_eq!(err.into_event(), bad);
    let mut interrupted = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            PublishOutcome::Confirmed => {}
            PublishOutcome::Buffered { .. } => interrupted += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        interrupted > 0,
        "the refusal interrupted the publishes beside it"
    );
    faults.delay_confirms(Duration::ZERO);
    // 200 later events flow.
    for n in 100..300 {
        let e = event("order.created", n);
        ids.push(e.id());
        r.publish(e).await.unwrap();
    }
    let got: HashSet<EventId> = rx.distinct_ids(300, LONG).await.into_iter().collect();
    assert_eq!(got, ids.iter().copied().collect());
    eventually("nothing pending", || r.status().pending_events == 0).await;
    let s = r.status();
    assert_eq!(s.reconnects, 0);
    assert_eq!(faults.connect_attempts().len(), 1);
    assert_eq!(faults.sends_of("admin.x"), 1, "never sent again");
    // Handed back: counted as failed, not as refused.
    assert_eq!((s.failed, s.refused_events), (1, 0));
    println!("{interrupted} publishes interrupted by the refusal went again");
}

/// From the buffer, a refused event cannot be handed back: it is counted as
/// refused, logged, removed from the store, shown in health; the events
/// behind it are delivered.
#[tokio::test(start_paused = true)]
async fn a_refused_buffered_event_is_counted_and_never_sent_again() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "orders", "order.#").await;
    let store = MemoryStore::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = start_with_store(backend, store.clone()).await;
    faults.refuse_type("admin.x");
    r.publish(event("admin.x", 0)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..50 {
        let e = event("order.created", n);
        ids.push(e.id());
        r.publish(e).await.unwrap();
    }
    assert_eq!(store.len(), 51);
    faults.come_up();
    assert_eq!(rx.distinct_ids(50, LONG).await, ids, "in publish order");
    eventually("nothing pending", || r.status().pending_events == 0).await;
    let s = r.status();
    assert_eq!(s.refused_events, 1);
    assert_eq!(s.dropped_events, 0);
    assert!(
        s.last_error.as_deref().unwrap().contains("admin.x"),
        "{:?}",
        s.last_error
    );
    assert_eq!(faults.sends_of("admin.x"), 1);
    assert!(store.is_empty(), "the store forgot it too");
    let health = r.health("svc");
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(
        health.issues.iter().any(|i| i.contains("1 events refused")),
        "{:?}",
        health.issues
    );
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["dependencies"]["memory"]["refused_events"], 1);
}

/// A nacked event is sent again after a backoff of its own, at most
/// `max_publish_attempts` times, then given up as refused; meanwhile later
/// events go straight to the broker.
#[tokio::test(start_paused = true)]
async fn a_nacked_event_is_retried_a_bounded_number_of_times_without_holding_back_the_rest() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "nacks", "n.#").await;
    let (r, faults) = start(
        &broker,
        config().with_max_publish_attempts(4).build().unwrap(),
    )
    .await;
    wait_state(&r, ConnectionState::Connected).await;
    faults.nack_type("n.full", u32::MAX);
    faults.nack_type("n.flaky", 2);
    let outcome = r.publish(event("n.full", 0)).await.unwrap();
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    let outcome = r.publish(event("n.flaky", 0)).await.unwrap();
    assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
    // Later events are not held back: straight to the broker.
    for n in 0..20 {
        assert_eq!(
            r.publish(event("n.good", n)).await.unwrap(),
            PublishOutcome::Confirmed
        );
    }
    assert_eq!(faults.sends_of("n.full"), 1);
    let started = Instant::now();
    eventually("both settled", || r.status().pending_events == 0).await;
    let took = started.elapsed();
    let s = r.status();
    assert_eq!(
        faults.sends_of("n.full"),
        4,
        "at most max_publish_attempts sends"
    );
    assert_eq!(
        faults.sends_of("n.flaky"),
        3,
        "delivered at the third attempt"
    );
    assert_eq!(s.refused_events, 1);
    assert_eq!(s.reconnects, 0);
    // Backoff from min(retry delay, 1 s) = 1 s: three retries within
    // 1 + 2 + 4 s, and not all at once.
    assert!(took <= Duration::from_secs(7), "{took:?}");
    // Every copy reached the queue (as every other queue bound to the key
    // gets one on a real broker): 4 + 3 + 20.
    let mut copies = 0;
    while rx.next_within(Duration::from_secs(1)).await.is_some() {
        copies += 1;
    }
    assert_eq!(copies, 27);
    println!("nacked event given up after 4 sends in {took:?}");
}

/// In the drain too: a nacked event is parked and the events behind it
/// are sent and confirmed before it goes again.
#[tokio::test(start_paused = true)]
async fn a_nacked_buffered_event_does_not_hold_back_the_drain() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "drainnack", "d.#").await;
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = Resilient::builder(backend)
        .with_config(
            config()
                .with_retry_delay(Duration::from_secs(5))
                .with_max_retry_delay(Duration::from_secs(10))
                .build()
                .unwrap(),
        )
        .start()
        .await
        .unwrap();
    faults.nack_type("d.bad", 1);
    let bad = event("d.bad", 0);
    r.publish(bad.clone()).await.unwrap();
    let mut good = Vec::new();
    for n in 0..100 {
        let e = event("d.good", n);
        good.push(e.id());
        r.publish(e).await.unwrap();
    }
    faults.come_up();
    // The nacked copy first, then the 100 behind it, then the retry.
    let order = rx.distinct_ids(101, LONG).await;
    assert_eq!(order[0], bad.id());
    assert_eq!(order[1..], good[..]);
    let again = rx.next(LONG).await;
    assert_eq!(again.event().id(), bad.id(), "sent again after its backoff");
    eventually("nothing pending", || r.status().pending_events == 0).await;
    assert_eq!(r.status().refused_events, 0);
}

/// A session that dies as soon as it opens, whatever the cause, counts as a
/// failed attempt: reconnecting backs off instead of looping.
#[tokio::test(start_paused = true)]
async fn sessions_that_die_at_once_back_off() {
    let broker = MemoryBroker::new();
    let (r, faults) = start(
        &broker,
        config()
            .with_retry_delay(Duration::from_millis(100))
            .with_max_retry_delay(Duration::from_secs(4))
            .build()
            .unwrap(),
    )
    .await;
    let killer = tokio::spawn({
        let r = r.clone();
        let faults = faults.clone();
        async move {
            let mut state = r.watch_state();
            loop {
                if *state.borrow_and_update() == ConnectionState::Connected {
                    faults.drop_connection();
                }
                if state.changed().await.is_err() {
                    return;
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    let attempts = faults.connect_attempts().len();
    let s = r.status();
    println!(
        "sessions dropped at once: {attempts} connections in 60 s, state {}",
        s.state
    );
    // Backoff from 100 ms doubling to 4 s, full jitter: about 2 s a try
    // once capped; a tight loop would make thousands.
    assert!((10..=60).contains(&attempts), "{attempts} attempts");
    assert!(s.last_error.unwrap().contains("lasted"));
    killer.abort();
}

/// A `Retry` the backend cannot carry out still counts its attempt, so the
/// event reaches its last attempt and the dead letters.
#[tokio::test(start_paused = true)]
async fn a_retry_that_cannot_be_carried_out_still_counts_its_attempt() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    faults.fail_retries(true);
    let sub = subscription("stuck", "s.*").with_max_attempts(3);
    let (_sub, mut rx) = forward(&r, sub, Decision::Retry).await;
    let e = event("s.e", 1);
    r.publish(e.clone()).await.unwrap();
    for attempt in 1..=3 {
        assert_eq!(rx.next(LONG).await.attempt(), attempt);
    }
    eventually("dead-lettered", || broker.dead_letters("stuck").len() == 1).await;
    assert_eq!(broker.dead_letters("stuck")[0].id(), e.id());
}
