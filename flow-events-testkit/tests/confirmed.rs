//! `Resilient::publish_confirmed`: a broker confirm or the event handed back,
//! never the buffer. Memory backend with faults injected, tokio's paused clock.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flow_events_core::{
    Config, ConnectionMonitor, Decision, Event, PublishErrorKind, Resilient, SubscriptionHandle,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::deliveries::{Deliveries, forward};
use flow_events_testkit::faulty::Faulty;
use flow_events_testkit::steps::subscription;

mod common;

use common::{LONG, connected_with, eventually};

fn event(n: usize) -> Event {
    common::event("order.created", n)
}

/// A subscription on `r` to every event of the tests.
async fn numbers_received(r: &Resilient) -> (SubscriptionHandle, Deliveries) {
    forward(r, subscription("confirmed", "order.*"), Decision::Ack).await
}

/// The payload numbers of the next `n` deliveries, in order.
async fn receive(rx: &mut Deliveries, n: usize) -> Vec<u64> {
    let events = rx.events(n, LONG).await;
    let number = |e: &Event| e.data()["n"].as_u64().unwrap_or(u64::MAX);
    events.iter().map(number).collect()
}

fn kinds(results: &[Result<(), flow_events_core::PublishError>]) -> Vec<Option<PublishErrorKind>> {
    results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.kind().clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn confirmed_when_connected_and_delivered_in_order() {
    let broker = MemoryBroker::new();
    let (r, _faults) = connected_with(&broker, Config::default()).await;
    let (_sub, mut rx) = numbers_received(&r).await;
    r.publish_confirmed(event(0)).await.unwrap();
    let results = r
        .publish_confirmed_batch((1..50).map(event).collect())
        .await;
    assert!(results.iter().all(Result::is_ok), "{:?}", kinds(&results));
    assert_eq!(receive(&mut rx, 50).await, (0..50).collect::<Vec<u64>>());
    let status = r.status();
    assert_eq!(status.confirmed, 50);
    assert_eq!(status.pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn not_connected_hands_the_event_back_and_buffers_nothing() {
    let broker = MemoryBroker::new();
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let r = Resilient::builder(backend).start().await.unwrap();
    let sent = event(7);
    let err = r.publish_confirmed(sent.clone()).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::NotConnected);
    assert_eq!(err.into_event(), sent);
    assert_eq!(r.status().pending_events, 0);
    assert_eq!(r.status().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_blocking_broker_is_not_connected() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected_with(&broker, Config::default()).await;
    faults.set_blocked(true);
    eventually("blocked", || r.status().blocked).await;
    let err = r.publish_confirmed(event(1)).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::NotConnected);
    assert_eq!(r.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn nack_and_refusal_name_their_kind_and_do_not_stop_the_rest() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected_with(&broker, Config::default()).await;
    let (_sub, mut rx) = numbers_received(&r).await;
    faults.nack_next_publishes(1);
    let results = r.publish_confirmed_batch((0..3).map(event).collect()).await;
    assert_eq!(
        kinds(&results),
        [Some(PublishErrorKind::Nacked), None, None]
    );
    faults.refuse_next_publishes(1);
    let results = r.publish_confirmed_batch((3..6).map(event).collect()).await;
    assert_eq!(
        kinds(&results),
        [Some(PublishErrorKind::Refused), None, None]
    );
    // The nacked event reached the memory broker (the nack is injected after
    // it); the refused one did not.
    assert_eq!(receive(&mut rx, 5).await, [0, 1, 2, 4, 5]);
    assert_eq!(r.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_send_stops_the_batch_so_nothing_overtakes() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected_with(&broker, Config::default()).await;
    faults.fail_next_publishes(1);
    let sent: Vec<Event> = (0..4).map(event).collect();
    let results = r.publish_confirmed_batch(sent.clone()).await;
    assert_eq!(
        kinds(&results),
        vec![Some(PublishErrorKind::NotConnected); 4]
    );
    let back: Vec<Event> = results
        .into_iter()
        .map(|r| r.unwrap_err().into_event())
        .collect();
    assert_eq!(back, sent);
    assert_eq!(broker.published_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_confirm_that_never_comes_is_a_timeout() {
    let broker = MemoryBroker::new();
    let config = Config::builder()
        .with_publish_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (r, faults) = connected_with(&broker, config).await;
    faults.delay_confirms(Duration::from_secs(60));
    let started = tokio::time::Instant::now();
    let err = r.publish_confirmed(event(1)).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(r.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_lost_before_the_confirm_hands_the_event_back() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected_with(&broker, Config::default()).await;
    faults.delay_confirms(Duration::from_secs(5));
    let publishing = tokio::spawn({
        let r = r.clone();
        async move { r.publish_confirmed(event(1)).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    faults.drop_connection();
    let err = publishing.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::NotConnected);
    assert_eq!(r.status().pending_events, 0);
}

#[tokio::test(start_paused = true)]
async fn shutting_down_refuses() {
    let broker = MemoryBroker::new();
    let (r, _faults) = connected_with(&broker, Config::default()).await;
    r.shutdown(Duration::from_secs(1)).await;
    let err = r.publish_confirmed(event(1)).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::ShuttingDown);
}

#[tokio::test(start_paused = true)]
async fn too_large_is_refused_alone() {
    let broker = MemoryBroker::new();
    let config = Config::builder().with_max_event_bytes(300).build().unwrap();
    let (r, _faults) = connected_with(&broker, config).await;
    let big = Event::try_new("order.created", serde_json::json!("x".repeat(400))).unwrap();
    let results = r.publish_confirmed_batch(vec![big, event(1)]).await;
    assert!(matches!(
        kinds(&results)[..],
        [Some(PublishErrorKind::TooLarge { .. }), None]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_second_batch_sent_before_the_first_is_confirmed_follows_it() {
    let broker = MemoryBroker::new();
    let (r, faults) = connected_with(&broker, Config::default()).await;
    let (_sub, mut rx) = numbers_received(&r).await;
    faults.delay_confirms(Duration::from_millis(100));
    let first = r.send_confirmed_batch((0..10).map(event).collect()).await;
    let second = r.send_confirmed_batch((10..20).map(event).collect()).await;
    assert_eq!((first.len(), second.len()), (10, 10));
    let (first, second) = tokio::join!(first.confirmed(), second.confirmed());
    assert!(first.iter().chain(&second).all(Result::is_ok));
    assert_eq!(receive(&mut rx, 20).await, (0..20).collect::<Vec<u64>>());
    assert_eq!(r.status().confirmed, 20);
}
