//! The fault suite: `Resilient` over `AmqpBackend` against the real broker,
//! with faults injected by the testkit's TCP proxy. The proxy faults only the
//! connections that go through it, so these tests run next to the others.
//!
//! Each test has its own exchange and queues, deleted at the end even when
//! it fails. Figures (duplicates, time to notice) are printed; run with
//! `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use common::CleanupSubscription;
use common::traffic::{
    HEARTBEAT, LONG, assert_delivered_in_order, buffered_while_down, connected,
    connected_publisher, consumer, fast, partitioned, ready, recovered, short_heartbeat, shut_down,
    start, through_cuts,
};
use common::{Fixture, WAIT, unique, until_state, url_through};
use flow_events_core::{ConnectionMonitor, HealthStatus};
use flow_events_testkit::received::Received;

#[tokio::test(flavor = "multi_thread")]
async fn buffered_while_down_then_delivered_in_order() {
    require_broker!("buffered_while_down_then_delivered_in_order");
    const N: u64 = 1_000;
    let proxy = common::proxy().await;
    proxy.down();
    let mut fx = Fixture::with("downup", fast, short_heartbeat);
    let name = unique("downup");
    fx.cleanup.subscription(&name);
    let received = Received::new();
    let (consumer, subscribed) = consumer(fx.backend.clone(), &fx.config, &name, &received).await;

    let publisher = start(fx.backend_to(&url_through(&proxy)), &fx.config).await;
    let buffering = buffered_while_down(&publisher, N).await;

    let after = recovered(&publisher, &received, N as usize, WAIT, || proxy.up()).await;
    println!(
        "down/up: {N} events buffered in {buffering:?}; after up: connected in {:?}, \
         all confirmed in {:?}, all delivered in {:?}, {} duplicates",
        after.connected,
        after.drained,
        after.delivered,
        received.duplicates()
    );
    assert_delivered_in_order(&publisher, &received, N);
    // A duplicate needs a lost connection (another test may restart the
    // shared broker); with none, there is none.
    let losses = publisher.status().reconnects + consumer.status().reconnects;
    if losses == 0 {
        assert_eq!(received.duplicates(), 0);
    }

    shut_down(&consumer, subscribed, &publisher).await;
}

/// The cut scenario ([`through_cuts`]); the consumer goes through the proxy
/// too when `consumer_through_proxy`. Its two tests come from `cut_tests!`.
async fn cuts_lose_nothing(test: &str, consumer_through_proxy: bool) {
    require_broker!(&format!("the cut test {test}"));
    let captured = common::logs::capture();
    let proxy = common::proxy().await;
    let url = url_through(&proxy);
    let mut fx = Fixture::with(test, fast, short_heartbeat);
    let name = unique(test);
    fx.cleanup.subscription(&name);
    let received = Received::new();
    let consumer_backend = if consumer_through_proxy {
        fx.backend_to(&url)
    } else {
        fx.backend.clone()
    };
    let (consumer, subscribed) = consumer(consumer_backend, &fx.config, &name, &received).await;
    let publisher = connected_publisher(fx.backend_to(&url), &fx.config).await;

    let run = through_cuts(proxy.handle(), &publisher, &received).await;
    let (p, c) = (publisher.status(), consumer.status());
    println!(
        "{test}: {run}; publisher reconnects {}, consumer reconnects {}, {} deliveries, \
         {} duplicates",
        p.reconnects,
        c.reconnects,
        received.deliveries(),
        received.duplicates()
    );
    if consumer_through_proxy {
        assert!(c.reconnects >= 1, "the consumer lost its connection");
    }
    // Every delivery was settled: once the consumer is gone, nothing is left
    // in the queue (an unacked message would be back in it).
    subscribed.close().await;
    consumer.shutdown(WAIT).await;
    assert_eq!(ready(&name).await, 0, "messages left in {name}");
    // No stale ack closed a channel (406 PRECONDITION_FAILED).
    let errors = captured.channel_errors();
    assert!(errors.is_empty(), "channel errors: {errors:#?}");
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
}

flow_events_testkit::cut_tests!(cuts_lose_nothing);

#[tokio::test(flavor = "multi_thread")]
async fn blackhole_is_noticed_by_heartbeats_and_drains_after() {
    require_broker!("blackhole_is_noticed_by_heartbeats_and_drains_after");
    const BEFORE: u64 = 10;
    const DURING: u64 = 200;
    let proxy = common::proxy().await;
    let mut fx = Fixture::with("blackhole", fast, short_heartbeat);
    let name = unique("blackhole");
    fx.cleanup.subscription(&name);
    let received = Received::new();
    let (consumer, subscribed) = consumer(fx.backend.clone(), &fx.config, &name, &received).await;
    let publisher = connected_publisher(fx.backend_to(&url_through(&proxy)), &fx.config).await;
    // Publishing goes on during the partition, one event every 20 ms.
    let publishing = partitioned(&publisher, &proxy, BEFORE, DURING).await;
    let cut_off = Instant::now();
    let noticed = until_state(
        "the partition noticed",
        &publisher,
        HEARTBEAT * 3 + Duration::from_secs(5),
        |s| !connected(s),
    )
    .await;
    let why = publisher.status().last_error;
    assert!(
        why.as_deref().is_some_and(|e| e.contains("heartbeat")),
        "{why:?}"
    );
    let longest = publishing.await.expect("publishing").slowest;
    // Reconnecting fails meanwhile: the proxy takes the TCP connection and
    // never answers, so each attempt ends at the connect timeout.
    let status = publisher.status();
    assert!(status.pending_events > 0);
    assert_eq!(publisher.health("test").status, HealthStatus::Degraded);

    let all = (BEFORE + DURING) as usize;
    let after = recovered(&publisher, &received, all, LONG, || proxy.restore()).await;
    println!(
        "blackhole: noticed after {noticed:?} (heartbeat {HEARTBEAT:?}), longest publish during \
         it {longest:?}, {} pending when restored, all delivered {:?} after restore, \
         {} duplicates",
        status.pending_events,
        after.delivered,
        received.duplicates()
    );
    assert!(
        noticed <= HEARTBEAT * 3,
        "noticed after {noticed:?}, more than three heartbeats"
    );
    assert!(cut_off.elapsed() > noticed);
    shut_down(&consumer, subscribed, &publisher).await;
}
