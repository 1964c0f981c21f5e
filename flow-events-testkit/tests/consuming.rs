//! The decorator's consumers over the memory backend, with faults injected and
//! tokio's paused clock: re-subscribing across disconnects, redelivery,
//! de-duplication and the attempt limit. No test here waits on the wall clock.

// Helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used)]

use flow_events_core::{
    ConnectionMonitor, ConnectionState, Decision, Delivery, EventSink, EventSource, Resilient,
    handler_fn,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::deliveries::forward;
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod common;

use common::{LONG, connected, event, eventually, receive, wait_state};

#[tokio::test(start_paused = true)]
async fn consumer_keeps_receiving_across_two_disconnects() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    let (_sub, mut rx) = forward(&r, subscription("survivor", "s.*"), Decision::Ack).await;
    let publisher = Resilient::builder(broker.backend()).start().await.unwrap();
    wait_state(&publisher, ConnectionState::Connected).await;
    for round in 0..3 {
        let e = event("s.tick", round);
        publisher.publish(e.clone()).await.unwrap();
        assert_eq!(receive(&mut rx, 1).await[0].id(), e.id(), "round {round}");
        if round < 2 {
            faults.drop_connection();
            eventually("reconnected", || {
                r.status().reconnects == round as u64 + 1 && r.state() == ConnectionState::Connected
            })
            .await;
        }
    }
    assert_eq!(r.status().reconnects, 2);
}

#[tokio::test(start_paused = true)]
async fn unsettled_delivery_of_a_lost_connection_is_redelivered_not_acked() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected(&broker).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let _sub = r
        .subscribe(
            subscription("slow", "slow.#"),
            handler_fn(move |d: Delivery| {
                let tx = tx.clone();
                let mut release = release_rx.clone();
                async move {
                    let _ = tx.send(d);
                    let _ = release.wait_for(|r| *r).await;
                    Decision::Ack
                }
            }),
        )
        .await
        .unwrap();
    let e = event("slow.job", 1);
    r.publish(e.clone()).await.unwrap();
    let first = timeout(LONG, rx.recv()).await.unwrap().unwrap();
    assert!(!first.redelivered());
    // The connection drops while the handler works; its ack then fails (never
    // reaching the new connection) and the broker delivers the event again.
    faults.drop_connection();
    eventually("reconnected", || r.status().reconnects == 1).await;
    release_tx.send_replace(true);
    let again = timeout(LONG, rx.recv()).await.unwrap().unwrap();
    assert_eq!(again.event().id(), e.id());
    assert!(again.redelivered());
    assert_eq!(again.attempt(), 2);
}

#[tokio::test(start_paused = true)]
async fn dedup_window_hides_redeliveries_from_the_handler() {
    let broker = MemoryBroker::new();
    let c = start_connected(Resilient::builder(broker.backend()), LONG).await;
    let sub = subscription("dedup", "d.*").with_dedup_window(100);
    let (_sub, mut rx) = forward(&c, sub, Decision::Ack).await;
    let e = event("d.e", 1);
    // The same event published three times (as at-least-once republishing does).
    for _ in 0..3 {
        c.publish(e.clone()).await.unwrap();
    }
    let marker = event("d.marker", 2);
    c.publish(marker.clone()).await.unwrap();
    assert_eq!(rx.next(LONG).await.event().id(), e.id());
    assert_eq!(rx.next(LONG).await.event().id(), marker.id());
}

#[tokio::test(start_paused = true)]
async fn retry_becomes_reject_after_max_attempts() {
    let broker = MemoryBroker::new();
    let c = start_connected(Resilient::builder(broker.backend()), LONG).await;
    let sub = subscription("flaky", "f.*").with_max_attempts(3);
    let (_sub, mut rx) = forward(&c, sub, Decision::Retry).await;
    let e = event("f.e", 1);
    c.publish(e.clone()).await.unwrap();
    for attempt in 1..=3 {
        assert_eq!(rx.next(LONG).await.attempt(), attempt);
    }
    eventually("dead-lettered", || broker.dead_letters("flaky").len() == 1).await;
    assert_eq!(broker.dead_letters("flaky")[0].id(), e.id());
}
