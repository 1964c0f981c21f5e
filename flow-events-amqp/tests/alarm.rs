//! The broker's resource alarm (`rabbitmqctl set_vm_memory_high_watermark 0`),
//! seen through `Session::blocked()` and through `Resilient`.
//!
//! Raising the alarm blocks every publisher of the broker for a moment, so
//! this lives in a binary of its own (cargo runs test binaries one at a
//! time), each test holds the lock shared with the other broker-disturbing
//! binaries, and the watermark is put back even when a test fails.

mod common;

use std::time::{Duration, Instant};

use common::broker::{Restore, ctl, ctl_available};
use common::received::{Received, numbered};
use common::traffic::{LONG, connected, consumer, fast, short_heartbeat, start};
use common::{Fixture, WAIT, unique, until, until_state};
use flow_events_core::{
    BackendErrorKind, ConnectionMonitor, Event, EventSink, HealthStatus, PublishOutcome,
};

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
    session
        .send(&event)
        .await
        .expect("send")
        .await
        .expect("confirm");
    session.close().await;
    drop(restore);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_alarm_buffers_without_hanging_then_drains() {
    require_broker!("memory_alarm_buffers_without_hanging_then_drains");
    if !ctl_available("memory_alarm_buffers_without_hanging_then_drains") {
        return;
    }
    const DURING: u64 = 100;
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

    ctl(&["set_vm_memory_high_watermark", "0"]);
    // The broker blocks the connection when it next publishes; that publish
    // waits for its confirm, which comes once the alarm clears.
    let alarmed = Instant::now();
    let first = tokio::spawn({
        let publisher = publisher.clone();
        async move {
            let started = Instant::now();
            let outcome = publisher.publish(numbered(1)).await;
            (outcome, started.elapsed())
        }
    });
    let noticed = until("blocked", WAIT, || publisher.status().blocked).await;
    let mut longest = Duration::ZERO;
    for seq in 2..2 + DURING {
        let one = Instant::now();
        let outcome = publisher.publish(numbered(seq)).await.expect("accepted");
        let took = one.elapsed();
        assert!(
            matches!(outcome, PublishOutcome::Buffered { .. }),
            "{outcome:?}"
        );
        assert!(took < Duration::from_millis(100), "event {seq}: {took:?}");
        longest = longest.max(took);
    }
    let status = publisher.status();
    assert!(status.connected && status.blocked);
    assert!(status.pending_events >= DURING as usize);
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
    until("buffer drained", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    received.wait_distinct((2 + DURING) as usize, LONG).await;
    let (outcome, first_took) = first.await.expect("first publish");
    let outcome = outcome.expect("the first publish is accepted");
    println!(
        "memory alarm: blocked noticed {noticed:?} after the alarm, {DURING} publishes while \
         blocked took at most {longest:?} each; the publish that met the alarm answered \
         {outcome:?} after {first_took:?} (the alarm lasted {:?}); drained and delivered {:?} \
         after it cleared, {} duplicates",
        cleared - alarmed,
        cleared.elapsed(),
        received.duplicates()
    );
    assert_eq!(publisher.health("test").status, HealthStatus::Healthy);
    subscribed.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
    drop(restore);
}
