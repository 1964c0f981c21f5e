//! The broker's resource alarm (`rabbitmqctl set_vm_memory_high_watermark 0`),
//! seen through `Session::blocked()` and through `Resilient`.
//!
//! Raising the alarm blocks every publisher of the broker for a moment, so
//! this lives in a binary of its own (cargo runs test binaries one at a
//! time), each test holds the lock shared with the other broker-disturbing
//! binaries, and the watermark is put back even when a test fails.

mod common;

use std::time::{Duration, Instant};

use common::CleanupSubscription;
use common::broker::{Restore, ctl, ctl_available};
use common::traffic::{
    Calls, LONG, connected, consumer, fast, publish_until, short_heartbeat, start, subscription,
};
use common::{Fixture, WAIT, unique, until, until_state};
use flow_events_core::{
    BackendErrorKind, ConnectionMonitor, Decision, Delivery, Event, EventSink, EventSource,
    HealthStatus, PublishOutcome, handler_fn,
};
use flow_events_testkit::received::{Received, numbered};
use flow_events_testkit::steps::publish_confirmed;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn memory_alarm_flips_the_blocked_watch() {
    require_broker!("memory_alarm_flips_the_blocked_watch");
    if !ctl_available("memory_alarm_flips_the_blocked_watch") {
        return;
    }
    let restore = Restore::new();
    let fx = Fixture::new("alarm");
    let session = fx.session().await;
    let mut blocked = session.blocked();
    assert!(!*blocked.borrow_and_update());

    ctl(&["set_vm_memory_high_watermark", "0"]);
    // The broker blocks a connection (and says so) when it next publishes.
    let event = Event::try_new("order.created", serde_json::json!({})).expect("event");
    let first = session
        .send(&event)
        .await
        .expect("handed over before the block");
    tokio::time::timeout(WAIT, blocked.wait_for(|b| *b))
        .await
        .expect("blocked in time")
        .expect("watch open");
    // While blocked, a send fails at once rather than waiting on the alarm.
    let err = match session.send(&event).await {
        Ok(_) => panic!("sent while blocked"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), BackendErrorKind::Other, "{err}");
    assert!(err.message().contains("blocking publishers"), "{err}");

    ctl(&["set_vm_memory_high_watermark", "0.4"]);
    tokio::time::timeout(WAIT, blocked.wait_for(|b| !*b))
        .await
        .expect("unblocked in time")
        .expect("watch open");
    first
        .await
        .expect("the first event is confirmed once unblocked");
    publish_confirmed(&*session, &event).await;
    session.close().await;
    drop(restore);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_alarm_never_holds_a_publish_past_the_confirm_wait() {
    require_broker!("memory_alarm_never_holds_a_publish_past_the_confirm_wait");
    if !ctl_available("memory_alarm_never_holds_a_publish_past_the_confirm_wait") {
        return;
    }
    let restore = Restore::new();
    let mut fx = Fixture::with("alarmres", fast, short_heartbeat);
    let name = unique("alarmres");
    fx.cleanup.subscription(&name);
    let received = Received::new();
    let (consumer, subscribed) = consumer(fx.backend.clone(), &fx.config, &name, &received).await;
    let publisher = start(fx.backend.clone(), &fx.config).await;
    until_state("publisher connected", &publisher, WAIT, connected).await;
    assert_eq!(
        publisher.publish(numbered(0)).await.expect("publish"),
        PublishOutcome::Confirmed
    );
    let wait = publisher.config().confirm_wait();
    // Publishing goes on, one event every 10 ms, before, during and after
    // the alarm.
    let stop = CancellationToken::new();
    let publishing = publish_until(
        publisher.clone(),
        1..,
        Duration::from_millis(10),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    ctl(&["set_vm_memory_high_watermark", "0"]);
    let alarmed = Instant::now();
    // The broker blocks the connection when it next publishes.
    let noticed = until("blocked", WAIT, || publisher.status().blocked).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = publisher.status();
    assert!(status.connected && status.blocked);
    assert!(status.pending_events > 0);
    let health = publisher.health("test");
    assert_eq!(health.status, HealthStatus::Degraded);
    assert!(
        health
            .issues
            .iter()
            .any(|i| i.contains("blocking publishers")),
        "{:?}",
        health.issues
    );
    // The consumer keeps its connection: an alarm blocks publishers only.
    assert!(consumer.status().connected);

    ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let cleared = Instant::now();
    until("unblocked", WAIT, || !publisher.status().blocked).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let Calls { ids, slowest, .. } = publishing.await.expect("publishing");
    until("buffer drained", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    received.wait_distinct(ids.len() + 1, LONG).await;
    println!(
        "memory alarm: blocked noticed {noticed:?} after the alarm; {} publishes before, during \
         and after it, the slowest answered in {slowest:?} (confirm wait {wait:?}); the alarm \
         lasted {:?}; drained and delivered {:?} after it cleared, {} duplicates",
        ids.len(),
        cleared - alarmed,
        cleared.elapsed(),
        received.duplicates()
    );
    assert!(
        slowest <= wait + Duration::from_millis(50),
        "a publish took {slowest:?}"
    );
    for id in &ids {
        assert!(received.contains(id), "event {id} lost");
    }
    assert_eq!(publisher.health("test").status, HealthStatus::Healthy);
    subscribed.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
    drop(restore);
}

/// Under a memory alarm a classic queue's retry copy cannot be published: the
/// delivery is held a while before it goes back (no redelivery at full
/// speed), and each attempt still counts, so the event reaches the dead
/// letters after `max_attempts`.
#[tokio::test(flavor = "multi_thread")]
async fn memory_alarm_slows_retries_down_and_still_counts_them() {
    require_broker!("memory_alarm_slows_retries_down_and_still_counts_them");
    if !ctl_available("memory_alarm_slows_retries_down_and_still_counts_them") {
        return;
    }
    const MAX_ATTEMPTS: u32 = 4;
    let restore = Restore::new();
    let mut fx = Fixture::with(
        "alarmretry",
        |c| fast(c).with_publish_timeout(Duration::from_secs(2)),
        short_heartbeat,
    );
    let name = unique("alarmretry");
    fx.cleanup.subscription(&name);
    let consumer = start(fx.backend.clone(), &fx.config).await;
    until_state("consumer connected", &consumer, WAIT, connected).await;
    let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
    // The first call holds its answer until the alarm is on.
    let (gate, gated) = tokio::sync::watch::channel(false);
    let subscribed = consumer
        .subscribe(
            subscription(&name).with_max_attempts(MAX_ATTEMPTS),
            handler_fn(move |d: Delivery| {
                let _ = tx.send((d.attempt(), Instant::now()));
                let mut gated = gated.clone();
                async move {
                    let _ = gated.wait_for(|open| *open).await;
                    Decision::Retry
                }
            }),
        )
        .await
        .expect("subscribe");
    let publisher = start(fx.backend.clone(), &fx.config).await;
    until_state("publisher connected", &publisher, WAIT, connected).await;
    assert_eq!(
        publisher.publish(numbered(0)).await.expect("publish"),
        PublishOutcome::Confirmed
    );
    let mut attempts = vec![
        tokio::time::timeout(WAIT, calls.recv())
            .await
            .expect("delivered")
            .expect("handler"),
    ];
    ctl(&["set_vm_memory_high_watermark", "0"]);
    let started = Instant::now();
    gate.send_replace(true);
    while (attempts.len() as u32) < MAX_ATTEMPTS {
        match tokio::time::timeout(LONG, calls.recv()).await {
            Ok(Some(call)) => attempts.push(call),
            _ => break,
        }
    }
    // More calls than attempts would be a redelivery past the last one.
    let extra = tokio::time::timeout(Duration::from_secs(1), calls.recv())
        .await
        .ok()
        .flatten();
    let took = started.elapsed();
    ctl(&["set_vm_memory_high_watermark", "0.4"]);
    let (conn, channel) = common::raw().await;
    let dead = until_dead(&channel, &format!("{name}.dead")).await;
    let _ = conn.close(200, "done".into()).await;
    let numbers: Vec<u32> = attempts.iter().map(|(n, _)| *n).collect();
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].1 - w[0].1).collect();
    println!(
        "retries under a memory alarm: handler called {} times in {took:?}, attempts \
         {numbers:?}, gaps {gaps:?}; dead-lettered: {dead}",
        attempts.len()
    );
    assert_eq!(numbers, (1..=MAX_ATTEMPTS).collect::<Vec<_>>());
    assert!(extra.is_none(), "called again: {extra:?}");
    assert!(dead, "the event reached the dead letters");
    subscribed.close().await;
    consumer.shutdown(WAIT).await;
    publisher.shutdown(WAIT).await;
    drop(restore);
}

/// Whether a message reaches `queue` within `LONG`.
async fn until_dead(channel: &lapin::Channel, queue: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < LONG {
        let got = channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get");
        if got.is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
