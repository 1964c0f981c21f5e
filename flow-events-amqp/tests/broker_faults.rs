//! Faults of the whole broker while events flow through `Resilient`: every
//! connection closed by the broker, the broker stopped and started again, and
//! a message over the broker's own size limit.
//!
//! These disturb every client of the broker, other tests included, so they
//! live in a binary of their own (cargo runs test binaries one at a time) and
//! run one after another in a single test, under a lock file shared with the
//! other broker-disturbing binaries (`alarm.rs`) of any checkout on this
//! machine. The broker is put back (running, watermark, message size limit)
//! even when a scenario fails.

mod common;

use std::time::{Duration, Instant};

use common::CleanupSubscription;
use common::broker::{self, Restore, ctl, ctl_available};
use common::traffic::{
    LONG, Published, a_later_event_arrives, connected, consumer, fast, publish_paced, ready,
    short_heartbeat, start,
};
use common::{Fixture, WAIT, unique, until, until_state, url_through};
use flow_events_core::{
    ConnectionMonitor, Event, EventSink, PublishErrorKind, PublishOutcome, Resilient,
};
use flow_events_testkit::received::{Received, numbered};

/// Events of the scenarios under traffic.
const N: u64 = 5_000;
/// Publishing tasks, each publishing one event per `PACE`: about 1 600
/// events a second, for about three seconds.
const TASKS: u64 = 32;
const PACE: Duration = Duration::from_millis(20);

/// Runs a blocking `rabbitmqctl` off the runtime's worker threads.
async fn ctl_async(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl(&args)
    })
    .await
    .expect("rabbitmqctl task")
}

/// Starts the broker when dropped: a scenario that stops it must not leave
/// it stopped for the cleanup that follows, even when it fails.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        broker::start_broker();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_faults_lose_nothing() {
    require_broker!("broker_faults_lose_nothing");
    if !ctl_available("broker_faults_lose_nothing") {
        return;
    }
    let _restore = Restore::new();
    let captured = common::logs::capture();
    connections_closed_by_the_broker().await;
    broker_restart().await;
    over_the_brokers_message_size_limit().await;
    // No stale ack closed a channel (406 PRECONDITION_FAILED) in the traffic
    // scenarios; the size-limit scenario is checked on its own.
    let errors: Vec<String> = captured
        .channel_errors()
        .into_iter()
        .filter(|line| !line.contains("message size"))
        .collect();
    assert!(errors.is_empty(), "channel errors: {errors:#?}");
}

/// Publisher and consumer, both straight to the broker, on a fixture of their own.
struct Flow {
    fx: Fixture,
    name: String,
    received: Received,
    consumer: Resilient,
    subscribed: flow_events_core::SubscriptionHandle,
    publisher: Resilient,
}

impl Flow {
    async fn new(test: &str) -> Self {
        let mut fx = Fixture::with(test, fast, short_heartbeat);
        let name = unique(test);
        fx.cleanup.subscription(&name);
        let received = Received::new();
        let (consumer, subscribed) =
            consumer(fx.backend.clone(), &fx.config, &name, &received).await;
        let publisher = start(fx.backend.clone(), &fx.config).await;
        until_state("publisher connected", &publisher, WAIT, connected).await;
        Self {
            fx,
            name,
            received,
            consumer,
            subscribed,
            publisher,
        }
    }

    /// Publishes the N events in the background, as [`publish_paced`] does,
    /// and waits until a fifth of them are confirmed.
    async fn publishing(&self) -> tokio::task::JoinHandle<Published> {
        let publisher = self.publisher.clone();
        let publishing =
            tokio::spawn(async move { publish_paced(&publisher, N, TASKS, PACE).await });
        until("a fifth confirmed", LONG, || {
            self.publisher.status().confirmed >= N / 5
        })
        .await;
        publishing
    }

    /// Waits until the N events and `extra` more are confirmed and
    /// delivered; checks that every delivery was settled; stops both sides.
    async fn finish(self, test: &str, published: Published, extra: u64, disturbed: Duration) {
        until("buffer drained", LONG, || {
            self.publisher.status().pending_events == 0
        })
        .await;
        let all = N + extra;
        self.received.wait_distinct(all as usize, LONG).await;
        let (p, c) = (self.publisher.status(), self.consumer.status());
        println!(
            "{test}: {N} events {published}; disturbed for {disturbed:?}; publisher \
             reconnects {}, consumer reconnects {}, {} deliveries, {} duplicates",
            p.reconnects,
            c.reconnects,
            self.received.deliveries(),
            self.received.duplicates()
        );
        assert_eq!(published.confirmed + published.buffered, N);
        assert_eq!(p.confirmed, all);
        assert_eq!(p.dropped_events, 0);
        assert!(p.reconnects >= 1, "the publisher reconnected");
        assert!(c.reconnects >= 1, "the consumer reconnected");
        // The consumer goes on after the fault.
        a_later_event_arrives(&self.publisher, &self.received, N).await;
        self.subscribed.close().await;
        self.consumer.shutdown(WAIT).await;
        assert_eq!(ready(&self.name).await, 0, "messages left unsettled");
        assert!(self.publisher.shutdown(WAIT).await.remaining.is_empty());
        drop(self.fx);
    }
}

/// `rabbitmqctl close_all_connections` while publishing and consuming.
async fn connections_closed_by_the_broker() {
    let flow = Flow::new("closeall").await;
    let publishing = flow.publishing().await;
    let closing = tokio::spawn(ctl_async(&[
        "close_all_connections",
        "flow-events fault test",
    ]));
    until_state("the close noticed", &flow.publisher, LONG, |s| {
        !connected(s)
    })
    .await;
    let lost = Instant::now();
    until("both reconnected", LONG, || {
        flow.publisher.status().reconnects >= 1 && flow.consumer.status().reconnects >= 1
    })
    .await;
    let back = lost.elapsed();
    closing.await.expect("rabbitmqctl");
    let published = publishing.await.expect("publishing");
    flow.finish("close_all_connections", published, 0, back)
        .await;
}

/// `rabbitmqctl stop_app`, then `start_app`, while publishing and consuming;
/// EXTRA more events are published while the broker is stopped.
async fn broker_restart() {
    const EXTRA: u64 = 50;
    let flow = Flow::new("restart").await;
    let _start = StartOnDrop;
    let publishing = flow.publishing().await;
    let stopped = Instant::now();
    ctl_async(&["stop_app"]).await;
    until_state("the stop noticed", &flow.publisher, WAIT, |s| !connected(s)).await;
    // While the broker is away, a publish is buffered at once.
    let mut longest = Duration::ZERO;
    for seq in N + 1..=N + EXTRA {
        let one = Instant::now();
        let outcome = flow
            .publisher
            .publish(numbered(seq))
            .await
            .expect("accepted");
        assert!(
            matches!(outcome, PublishOutcome::Buffered { .. }),
            "{outcome:?}"
        );
        longest = longest.max(one.elapsed());
    }
    assert!(longest < Duration::from_millis(100), "{longest:?}");
    let start_app = Instant::now();
    ctl_async(&["start_app"]).await;
    let started = Instant::now();
    let down = started - stopped;
    until_state("publisher reconnected", &flow.publisher, LONG, connected).await;
    until_state("consumer reconnected", &flow.consumer, LONG, connected).await;
    let reconnected = started.elapsed();
    ctl_async(&["await_startup"]).await;
    println!(
        "broker restart: stop_app to start_app done {down:?} (start_app took {:?}), {EXTRA} \
         publishes while stopped took at most {longest:?} each, both reconnected within {:?} \
         of start_app returning",
        started - start_app,
        reconnected
    );
    let published = publishing.await.expect("publishing");
    flow.finish("broker restart", published, EXTRA, down).await;
}

/// A 2 MiB event when the broker takes at most 1 MiB (and flow-events 4 MiB):
/// the broker closes the channel; the event comes back refused, never stays
/// in the buffer, and the others go through.
async fn over_the_brokers_message_size_limit() {
    const LIMIT: u64 = 1024 * 1024;
    let original = broker::max_message_size();
    // The broker reads the limit when a channel opens: set it first.
    broker::set_max_message_size(LIMIT);
    let mut fx = Fixture::with(
        "maxsize",
        |c| fast(c).with_max_event_bytes(4 * 1024 * 1024),
        short_heartbeat,
    );
    let name = unique("maxsize");
    fx.cleanup.subscription(&name);
    let received = Received::new();
    let (consumer, subscribed) = consumer(fx.backend.clone(), &fx.config, &name, &received).await;
    let publisher = start(fx.backend.clone(), &fx.config).await;
    until_state("publisher connected", &publisher, WAIT, connected).await;
    let big = |seq: u64| {
        Event::try_new(
            "fault.big",
            serde_json::json!({ "seq": seq, "blob": "x".repeat(2 * 1024 * 1024) }),
        )
        .expect("event")
    };

    assert_eq!(
        publisher.publish(numbered(0)).await.expect("publish"),
        PublishOutcome::Confirmed
    );
    // Published directly: refused, handed back.
    let event = big(1);
    let started = Instant::now();
    let err = publisher.publish(event.clone()).await.expect_err("refused");
    let refused_in = started.elapsed();
    assert_eq!(err.kind(), &PublishErrorKind::Refused, "{err}");
    let why = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(why.contains("max_message_size"), "{why}");
    assert_eq!(err.into_event(), event);
    // The refusal cost the session its channel, not its connection: the
    // next event goes on a new channel (from the buffer if it came while the
    // channel was being replaced).
    let outcome = publisher.publish(numbered(2)).await.expect("publish");
    assert!(
        matches!(
            outcome,
            PublishOutcome::Confirmed | PublishOutcome::Buffered { .. }
        ),
        "{outcome:?}"
    );
    until("event 2 confirmed", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    assert_eq!(publisher.status().reconnects, 0);
    // Known now: the next one is refused before it costs a channel.
    let started = Instant::now();
    let err = publisher.publish(big(3)).await.expect_err("refused");
    let known_in = started.elapsed();
    tokio::task::yield_now().await;
    assert_eq!(publisher.status().state.as_str(), "connected");
    assert_eq!(err.kind(), &PublishErrorKind::Refused, "{err}");

    // From the buffer: a new backend (nothing learned) behind a proxy that is
    // down buffers one; once up, the broker refuses it and it is given up,
    // logged and counted as refused, not retried for ever.
    let proxy = common::proxy().await;
    proxy.down();
    let buffering = start(fx.backend_to(&url_through(&proxy)), &fx.config).await;
    for event in [big(4), numbered(5)] {
        let outcome = buffering.publish(event).await.expect("buffered");
        assert!(
            matches!(outcome, PublishOutcome::Buffered { .. }),
            "{outcome:?}"
        );
    }
    proxy.up();
    until("buffer drained", LONG, || {
        buffering.status().pending_events == 0
    })
    .await;
    let status = buffering.status();
    assert_eq!(status.refused_events, 1);
    assert_eq!(status.dropped_events, 0);
    assert_eq!(status.confirmed, 1);
    assert_eq!(status.reconnects, 0);

    // Everything small arrives; nothing big does.
    until("the small events arrive", LONG, || received.distinct() >= 3).await;
    let mut seqs = received.first_order();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![0, 2, 5]);
    assert_eq!(publisher.status().reconnects, 0);
    println!(
        "broker max_message_size {LIMIT}: a 2 MiB event refused in {refused_in:?} (the channel \
         closed, a new one opened, no reconnect), then refused before sending in {known_in:?}; \
         from the buffer: counted as refused, buffer drained"
    );
    subscribed.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
    assert!(buffering.shutdown(WAIT).await.remaining.is_empty());
    broker::set_max_message_size(original);
}
