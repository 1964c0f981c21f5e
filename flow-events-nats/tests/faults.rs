//! The fault suite: `Resilient` over `NatsBackend` against the real server,
//! with faults injected by the testkit's TCP proxy (it faults only the
//! connections that go through it, so these tests run next to the others).
//!
//! Each test has its own stream and subjects, deleted at the end even when
//! it fails. Figures (duplicates, what the duplicate window removed) are
//! printed; run with `--nocapture` to see them.

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, WAIT, until_state, url_through};
use flow_events_core::{Config, ConnectionMonitor, HealthStatus, Resilient, SubscriptionHandle};
use flow_events_nats::{NatsBackend, NatsConfigBuilder};
use flow_events_testkit::received::{Received, numbered};
use flow_events_testkit::steps;
use flow_events_testkit::traffic::{
    self, LONG, assert_delivered_in_order, buffered_while_down, connected, connected_publisher,
    fast, partitioned, recovered, shut_down, start, through_cuts,
};

/// Short pings and connect timeout, and a short `ack_wait`: what a cut
/// consumer had received unsettled comes again after it (the server cannot
/// know what reached the consumer), and with the default 30 s a consumer
/// cut every 300 ms would soon hold the consumer's `max_ack_pending`
/// (1 000) deliveries waiting for it.
fn short_pings(n: NatsConfigBuilder) -> NatsConfigBuilder {
    n.with_ping_interval(Duration::from_secs(2))
        .with_connect_timeout(Duration::from_secs(3))
        .with_ack_wait(Duration::from_secs(2))
}

/// A consumer of every `fault.*` event on `backend`, connected and subscribed.
async fn consumer(
    backend: NatsBackend,
    config: &Config,
    name: &str,
    received: &Received,
) -> (Resilient, SubscriptionHandle) {
    let subscription = steps::subscription(name, "fault.*").with_prefetch(100);
    traffic::consumer(backend, config, subscription, received).await
}

#[tokio::test(flavor = "multi_thread")]
async fn buffered_while_down_then_delivered_in_order() {
    require_server!("buffered_while_down_then_delivered_in_order");
    const N: u64 = 1_000;
    let proxy = common::proxy().await;
    proxy.down();
    let fx = Fixture::with("downup", fast, short_pings);
    let received = Received::new();
    let (consumer, subscribed) =
        consumer(fx.backend.clone(), &fx.config, "downup", &received).await;

    let publisher_backend = fx.backend_to(&url_through(&proxy));
    let publisher = start(publisher_backend.clone(), &fx.config).await;
    let buffering = buffered_while_down(&publisher, N).await;
    let health = serde_json::to_value(publisher.health("test")).expect("json");
    assert!(
        health["dependencies"]["nats"].is_object(),
        "health names the dependency nats"
    );

    let after = recovered(&publisher, &received, N as usize, WAIT, || proxy.up()).await;
    println!(
        "down/up: {N} events buffered in {buffering:?}; after up: connected in {:?}, \
         all acked in {:?}, all delivered in {:?}, {} duplicates delivered, \
         {} dropped by the duplicate window",
        after.connected,
        after.drained,
        after.delivered,
        received.duplicates(),
        publisher_backend.duplicates_dropped()
    );
    assert_delivered_in_order(&publisher, &received, N);
    assert_eq!(received.duplicates(), 0);

    shut_down(&consumer, subscribed, &publisher).await;
}

/// The cut scenario ([`through_cuts`]); the consumer goes through the proxy
/// too when `consumer_through_proxy`. Its two tests come from `cut_tests!`.
async fn cuts_lose_nothing(test: &str, consumer_through_proxy: bool) {
    require_server!(&format!("the cut test {test}"));
    let proxy = common::proxy().await;
    let url = url_through(&proxy);
    let fx = Fixture::with(test, fast, short_pings);
    let received = Received::new();
    let consumer_backend = if consumer_through_proxy {
        fx.backend_to(&url)
    } else {
        fx.backend.clone()
    };
    let (consumer, subscribed) = consumer(consumer_backend, &fx.config, test, &received).await;
    let publisher_backend = fx.backend_to(&url);
    let publisher = connected_publisher(publisher_backend.clone(), &fx.config).await;

    let run = through_cuts(proxy.handle(), &publisher, &received).await;
    let (p, c) = (publisher.status(), consumer.status());
    println!(
        "{test}: {run}; publisher reconnects {}, consumer reconnects {}; {} deliveries, \
         {} duplicates delivered, {} republished events dropped by the stream's duplicate window",
        p.reconnects,
        c.reconnects,
        received.deliveries(),
        received.duplicates(),
        publisher_backend.duplicates_dropped()
    );
    if consumer_through_proxy {
        assert!(c.reconnects >= 1, "the consumer lost its connection");
    }
    shut_down(&consumer, subscribed, &publisher).await;
}

flow_events_testkit::cut_tests!(cuts_lose_nothing);

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_connection_ends_the_session() {
    require_server!("a_cut_connection_ends_the_session");
    let proxy = common::proxy().await;
    let fx = Fixture::with("cutsession", fast, short_pings);
    let session = flow_events_core::Backend::connect(&fx.backend_to(&url_through(&proxy)))
        .await
        .expect("connect");
    let cut = Instant::now();
    proxy.cut();
    let reason = tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("closed() resolves when the connection is lost");
    println!("cut noticed after {:?}: {reason}", cut.elapsed());
    assert_eq!(
        reason.kind(),
        flow_events_core::BackendErrorKind::Connection,
        "{reason}"
    );
    let event = numbered(0);
    assert!(
        session.send(&event).await.is_err(),
        "a lost session sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blackhole_is_noticed_by_pings_and_drains_after() {
    require_server!("blackhole_is_noticed_by_pings_and_drains_after");
    const PING: Duration = Duration::from_secs(1);
    const BEFORE: u64 = 10;
    const DURING: u64 = 100;
    let proxy = common::proxy().await;
    let fx = Fixture::with("blackhole", fast, |n| {
        short_pings(n).with_ping_interval(PING)
    });
    let received = Received::new();
    let (consumer, subscribed) =
        consumer(fx.backend.clone(), &fx.config, "blackhole", &received).await;
    let publisher = connected_publisher(fx.backend_to(&url_through(&proxy)), &fx.config).await;
    let publishing = partitioned(&publisher, &proxy, BEFORE, DURING).await;
    let noticed = until_state("the partition noticed", &publisher, WAIT * 2, |s| {
        !connected(s)
    })
    .await;
    let longest = publishing.await.expect("publishing").slowest;
    assert!(publisher.status().pending_events > 0 || received.distinct() > BEFORE as usize);
    assert_eq!(publisher.health("test").status, HealthStatus::Degraded);

    let all = (BEFORE + DURING) as usize;
    let after = recovered(&publisher, &received, all, LONG, || proxy.restore()).await;
    println!(
        "blackhole: noticed after {noticed:?} (ping interval {PING:?}), longest publish during \
         it {longest:?}, all delivered {:?} after restore, {} duplicates",
        after.delivered,
        received.duplicates()
    );
    assert!(
        noticed <= PING * 5,
        "noticed after {noticed:?}, more than five ping intervals"
    );
    shut_down(&consumer, subscribed, &publisher).await;
}
