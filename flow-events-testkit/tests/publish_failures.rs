//! Publishes the broker does not take, over the memory backend with faults
//! injected and tokio's paused clock: the overflow policies, nacks, refusals,
//! oversized events, a blocked broker and cancelled publishes. No test here
//! waits on the wall clock.

// Helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flow_events_core::{
    ConnectionMonitor, Event, EventSink, HealthStatus, OverflowPolicy, PublishErrorKind,
    PublishOutcome, Resilient,
};
use flow_events_memory::MemoryBroker;
use tokio::time::{Instant, timeout};

mod common;

use common::{config, connected, consumer, event, eventually, receive, start};

async fn overflow(
    policy: OverflowPolicy,
) -> (
    Resilient,
    Vec<Result<PublishOutcome, flow_events_core::PublishError>>,
    Vec<Event>,
    Vec<Event>,
) {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "overflow", "o.#").await;
    let (r, faults) = start(
        &broker,
        config()
            .with_max_pending_events(10)
            .with_overflow_policy(policy)
            .build()
            .unwrap(),
    )
    .await;
    faults.go_down();
    let mut sent = Vec::new();
    let mut results = Vec::new();
    for n in 0..15 {
        let e = event("o.e", n);
        sent.push(e.clone());
        results.push(r.publish(e).await);
    }
    faults.come_up();
    let got = receive(&mut rx, 10).await;
    eventually("buffer empty", || r.status().pending_events == 0).await;
    // Nothing more than the 10 arrives: a marker published now is next.
    let marker = event("o.marker", 99);
    r.publish(marker.clone()).await.unwrap();
    assert_eq!(receive(&mut rx, 1).await[0].id(), marker.id());
    (r, results, sent, got)
}

#[tokio::test(start_paused = true)]
async fn overflow_drop_newest() {
    let (r, results, sent, got) = overflow(OverflowPolicy::DropNewest).await;
    for (n, result) in results.iter().enumerate() {
        let outcome = result.as_ref().unwrap();
        if n < 10 {
            assert_eq!(outcome, &PublishOutcome::Buffered { pending: n + 1 });
        } else {
            assert_eq!(outcome, &PublishOutcome::Dropped { pending: 10 });
        }
    }
    let health = r.health("svc");
    assert!(
        health.issues.iter().any(|i| i.contains("5 events dropped")),
        "{:?}",
        health.issues
    );
    assert_eq!(r.status().dropped_events, 5);
    assert_eq!(got, sent[..10]);
}

#[tokio::test(start_paused = true)]
async fn overflow_drop_oldest() {
    let (r, results, sent, got) = overflow(OverflowPolicy::DropOldest).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(PublishOutcome::Buffered { .. })))
    );
    assert_eq!(r.status().dropped_events, 5);
    assert_eq!(got, sent[5..]);
}

#[tokio::test(start_paused = true)]
async fn overflow_reject_hands_events_back() {
    let (r, results, sent, got) = overflow(OverflowPolicy::Reject).await;
    assert_eq!(r.status().dropped_events, 0);
    assert_eq!(r.status().failed, 5);
    for (result, e) in results.into_iter().zip(&sent).skip(10) {
        let err = result.unwrap_err();
        assert_eq!(err.kind(), &PublishErrorKind::BufferFull { capacity: 10 });
        assert_eq!(&err.into_event(), e);
    }
    assert_eq!(got, sent[..10]);
}

#[tokio::test(start_paused = true)]
async fn nacked_and_failed_publishes_are_buffered_then_delivered() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "nacks", "n.*").await;
    let (r, faults) = connected(&broker).await;
    faults.fail_next_publishes(1);
    let a = event("n.a", 1);
    assert!(matches!(
        r.publish(a.clone()).await.unwrap(),
        PublishOutcome::Buffered { .. }
    ));
    let got = receive(&mut rx, 1).await;
    assert_eq!(got[0].id(), a.id());
    faults.nack_next_publishes(1);
    let b = event("n.b", 2);
    assert!(matches!(
        r.publish(b.clone()).await.unwrap(),
        PublishOutcome::Buffered { .. }
    ));
    // The nacked copy reached the broker; the republished one follows.
    let got = receive(&mut rx, 2).await;
    assert!(got.iter().all(|e| e.id() == b.id()));
    eventually("buffer empty", || r.status().pending_events == 0).await;
}

#[tokio::test(start_paused = true)]
async fn refused_event_is_handed_back_not_buffered() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    faults.refuse_next_publishes(1);
    let e = event("r.e", 1);
    let err = r.publish(e.clone()).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::Refused);
    assert!(err.backend_error().is_some());
    assert_eq!(err.into_event(), e);
    assert_eq!(r.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn oversized_event_is_refused_with_the_event() {
    let broker = MemoryBroker::new();
    let (r, _faults) = start(
        &broker,
        config().with_max_event_bytes(1024).build().unwrap(),
    )
    .await;
    let e = Event::try_new("big.e", serde_json::json!({"blob": "x".repeat(2000)})).unwrap();
    let err = r.publish(e.clone()).await.unwrap_err();
    assert!(matches!(
        err.kind(),
        PublishErrorKind::TooLarge { limit: 1024, .. }
    ));
    assert_eq!(err.into_event(), e);
    assert_eq!(r.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn blocked_broker_buffers_without_hanging_then_drains() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "blocked", "b.*").await;
    let (r, faults) = connected(&broker).await;
    faults.set_blocked(true);
    eventually("blocked", || r.status().blocked).await;
    let before = Instant::now();
    for n in 0..10 {
        assert!(matches!(
            r.publish(event("b.e", n)).await.unwrap(),
            PublishOutcome::Buffered { .. }
        ));
    }
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert_eq!(r.health("svc").status, HealthStatus::Degraded);
    faults.set_blocked(false);
    assert_eq!(receive(&mut rx, 10).await.len(), 10);
    eventually("drained", || r.status().pending_events == 0).await;
}

#[tokio::test(start_paused = true)]
async fn cancelled_publish_keeps_the_event() {
    let broker = MemoryBroker::new();
    let (_c, _h, mut rx) = consumer(&broker, "cancel", "c.*").await;
    let (r, faults) = connected(&broker).await;
    faults.delay_confirms(Duration::from_secs(5));
    let e = event("c.e", 1);
    // The caller gives up before the confirm (and before the confirm wait).
    assert!(
        timeout(Duration::from_millis(100), r.publish(e.clone()))
            .await
            .is_err()
    );
    faults.delay_confirms(Duration::ZERO);
    // At least once: the event arrives (the copy sent, and the one kept).
    assert_eq!(receive(&mut rx, 1).await[0].id(), e.id());
    eventually("buffer empty", || r.status().pending_events == 0).await;
}
