//! A broker down, then back: what a publisher buffers meanwhile, how it
//! recovers, and what must hold after a fault.

use std::time::{Duration, Instant};

use flow_events_core::{ConnectionMonitor, EventSink, HealthStatus, PublishOutcome, Resilient};

use super::{CONNECT, LONG, Published, connected};
use crate::received::{Received, numbered};
use crate::wait::{until, until_state};

/// Publishes the events `0..n` of [`numbered`] to `publisher`, whose broker
/// is unreachable: each must be buffered. Then waits for a connection
/// attempt to have failed and checks what the publisher shows: `n` events
/// pending, not connected, a connection error, health degraded. Returns how
/// long the publishes took.
pub async fn buffered_while_down(publisher: &Resilient, n: u64) -> Duration {
    let started = Instant::now();
    for seq in 0..n {
        let outcome = publisher.publish(numbered(seq)).await;
        assert!(
            matches!(outcome, Ok(PublishOutcome::Buffered { .. })),
            "{seq}: {outcome:?}"
        );
    }
    let took = started.elapsed();
    // The first connection attempt runs beside the publishes: wait for it to
    // have failed before reading its error.
    until("a refused connection attempt", CONNECT, || {
        publisher.status().last_error.is_some()
    })
    .await;
    let status = publisher.status();
    assert_eq!(
        status.pending_events,
        usize::try_from(n).unwrap_or(usize::MAX)
    );
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connection error")),
        "{:?}",
        status.last_error
    );
    assert_eq!(publisher.health("test").status, HealthStatus::Degraded);
    took
}

/// How long a publisher took to recover, from the moment its broker was
/// brought back (see [`recovered`]).
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// Until it was connected again.
    pub connected: Duration,
    /// Until its buffer was drained (every event confirmed).
    pub drained: Duration,
    /// Until every event had been delivered.
    pub delivered: Duration,
}

/// Brings the broker back with `bring_back` (a proxy's `up`, say), then
/// waits until `publisher` is connected (within `reconnect`), its buffer is
/// drained and `received` has `n` distinct events (each within [`LONG`]);
/// returns how long each took from the moment it was brought back.
pub async fn recovered(
    publisher: &Resilient,
    received: &Received,
    n: usize,
    reconnect: Duration,
    bring_back: impl FnOnce(),
) -> Recovery {
    let back = Instant::now();
    bring_back();
    until_state("publisher reconnected", publisher, reconnect, connected).await;
    let connected = back.elapsed();
    until("buffer drained", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    let drained = back.elapsed();
    received.wait_distinct(n, LONG).await;
    Recovery {
        connected,
        drained,
        delivered: back.elapsed(),
    }
}

/// Checks that `received` got the events `0..n` of [`numbered`] in publish
/// order, and that `publisher` had each confirmed, dropped none and is
/// healthy again.
pub fn assert_delivered_in_order(publisher: &Resilient, received: &Received, n: u64) {
    assert_eq!(
        received.first_order(),
        (0..n).collect::<Vec<_>>(),
        "events arrive in publish order"
    );
    let status = publisher.status();
    assert_eq!(status.confirmed, n);
    assert_eq!(status.dropped_events, 0);
    assert_eq!(publisher.health("test").status, HealthStatus::Healthy);
}

/// Checks, once its buffer has drained, a publisher whose connections were
/// cut while it published the `n` events of `published`: each accepted and
/// confirmed, none dropped, and the connection lost at least once.
pub fn assert_nothing_lost_to_cuts(publisher: &Resilient, published: &Published, n: u64) {
    let status = publisher.status();
    assert_eq!(published.confirmed + published.buffered, n);
    assert!(status.reconnects >= 1, "the publisher lost its connection");
    assert_eq!(status.dropped_events, 0);
    assert_eq!(status.confirmed, n);
}

/// Publishes the event `seq` of [`numbered`] and waits (within [`LONG`])
/// until `received` has it: consuming goes on after a fault.
pub async fn a_later_event_arrives(publisher: &Resilient, received: &Received, seq: u64) {
    let last = numbered(seq);
    let last_id = last.id();
    publisher
        .publish(last)
        .await
        .unwrap_or_else(|e| panic!("publishing event {seq}: {e}"));
    until("a later event arrives", LONG, || {
        received.contains(&last_id)
    })
    .await;
}
