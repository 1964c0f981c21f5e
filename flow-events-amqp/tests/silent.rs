//! A broker that goes quiet, through the testkit's TCP proxy (it faults only
//! the connections through it): no publish call waits longer than the
//! confirm wait, nothing is lost once the network heals, and shutdown
//! accounts for every publish in flight.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::CleanupSubscription;
use common::traffic::{LONG, connected, consumer, fast, publish_until, short_heartbeat, start};
use common::{Fixture, WAIT, unique, until, until_state, url_through};
use flow_events_core::{
    ConnectionMonitor, EventId, EventSink, PublishErrorKind, PublishOutcome, Resilient,
};
use flow_events_testkit::received::{Received, numbered};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_never_holds_a_publish_past_the_confirm_wait() {
    require_broker!("a_partition_never_holds_a_publish_past_the_confirm_wait");
    let proxy = common::proxy().await;
    // The default heartbeat (10 s): a partition goes unnoticed for 20 s or more.
    let mut fx = Fixture::with("partition", fast, |o| o);
    let name = unique("partition");
    fx.cleanup.subscription(&name);
    let received = Received::new();
    let (consumer, subscribed) = consumer(fx.backend.clone(), &fx.config, &name, &received).await;
    let publisher = Arc::new(start(fx.backend_to(&url_through(&proxy)), &fx.config).await);
    until_state("publisher connected", &*publisher, WAIT, connected).await;
    let wait = publisher.config().confirm_wait();
    let stop = CancellationToken::new();
    let publishing = publish_until(
        Resilient::clone(&publisher),
        0..,
        Duration::from_millis(20),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A short partition, healed before the heartbeats notice: the publishes
    // stop waiting after the confirm wait, the late confirms clear them.
    proxy.blackhole();
    let stalled = until("stalled", WAIT, || publisher.status().stalled).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    until("answering again", WAIT, || !publisher.status().stalled).await;
    let healed_reconnects = publisher.status().reconnects;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A long one: the heartbeats give the connection up; publishing goes on
    // into the buffer, and everything goes once it heals.
    let cut_off = Instant::now();
    proxy.blackhole();
    let noticed = until_state("the partition noticed", &*publisher, LONG, |s| {
        !connected(s)
    })
    .await;
    let why = publisher.status().last_error.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    until_state("reconnected", &*publisher, LONG, connected).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let calls = publishing.await.expect("publishing");
    until("nothing pending", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    received.wait_distinct(calls.ids.len(), LONG).await;
    println!(
        "partition, default heartbeat, confirm wait {wait:?}: {} publishes ({} confirmed, {} \
         buffered), the slowest answered in {:?}; stalled noticed {stalled:?} into the short \
         partition, reconnects after it {healed_reconnects}; the long one noticed after \
         {noticed:?} ({why}), {:?} in all; {} duplicates",
        calls.ids.len(),
        calls.confirmed,
        calls.buffered,
        calls.slowest,
        cut_off.elapsed(),
        received.duplicates()
    );
    // Unbounded, a publish would wait for the heartbeats (20 s or more);
    // bounded, it answers after the confirm wait. The margin is a loaded
    // machine's scheduling (a few ms on a quiet one: the figure is printed
    // above), far from what the heartbeats would take.
    assert!(
        calls.slowest <= wait + Duration::from_secs(1),
        "a publish took {:?}",
        calls.slowest
    );
    assert_eq!(
        healed_reconnects, 0,
        "the short partition cost no connection"
    );
    for id in &calls.ids {
        assert!(received.contains(id), "event {id} lost");
    }
    subscribed.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
}

/// Shutdown while publishes await confirms that will not come (no store):
/// each event is confirmed, handed back, or listed as undelivered.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_with_publishes_in_flight_accounts_for_every_event() {
    require_broker!("shutdown_with_publishes_in_flight_accounts_for_every_event");
    for grace in [Duration::from_millis(200), Duration::from_secs(2)] {
        let proxy = common::proxy().await;
        let fx = Fixture::with("shutdown", fast, short_heartbeat);
        let publisher = Arc::new(start(fx.backend_to(&url_through(&proxy)), &fx.config).await);
        until_state("publisher connected", &*publisher, WAIT, connected).await;
        proxy.blackhole();
        let mut sent = HashSet::new();
        let mut tasks = Vec::new();
        for seq in 0..100 {
            let event = numbered(seq);
            sent.insert(event.id());
            let publisher = publisher.clone();
            tasks.push(tokio::spawn(async move { publisher.publish(event).await }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = publisher.shutdown(grace).await;
        proxy.restore();
        let mut accounted: HashSet<EventId> = report.remaining.iter().map(|e| e.id()).collect();
        let listed = accounted.len();
        let (mut confirmed, mut handed_back, mut buffered) = (0, 0, 0);
        for task in tasks {
            match task.await.expect("publish task") {
                Ok(PublishOutcome::Confirmed) => confirmed += 1,
                Ok(PublishOutcome::Buffered { .. }) => buffered += 1,
                Ok(other) => panic!("{other:?}"),
                Err(e) => {
                    assert_eq!(e.kind(), &PublishErrorKind::ShuttingDown, "{e}");
                    handed_back += 1;
                    assert!(accounted.insert(e.into_event().id()));
                }
            }
        }
        println!(
            "shutdown with grace {grace:?} while 100 publishes awaited confirms: {listed} listed \
             as undelivered ({buffered} of them answered Buffered), {} unanswered when it \
             returned, {handed_back} handed back, {confirmed} confirmed",
            report.unanswered
        );
        assert_eq!(
            accounted.len() + confirmed,
            sent.len(),
            "every event confirmed, handed back or listed"
        );
        assert!(accounted.is_subset(&sent));
        let late = numbered(1000);
        let err = publisher
            .publish(late.clone())
            .await
            .expect_err("shutting down");
        assert_eq!(err.kind(), &PublishErrorKind::ShuttingDown);
        assert_eq!(err.into_event(), late);
        drop(fx);
    }
}
