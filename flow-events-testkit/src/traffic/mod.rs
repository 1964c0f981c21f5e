//! Steady publishing and consuming through [`Resilient`], for the fault
//! tests of every backend, which disturb the broker while events flow: a
//! publisher and a consumer started ([`start`], [`consumer`]); events
//! published at a pace, from many tasks or from one until stopped
//! ([`publish_paced`], [`publish_until`]); a broker down then back
//! ([`buffered_while_down`], [`recovered`]); the proxy's connections cut at
//! an interval ([`Cutter`], [`through_cuts`], and its two tests from
//! [`cut_tests!`](crate::cut_tests)), or partitioned ([`partitioned`]).

mod cuts;
mod publish;
mod recovery;
#[cfg(test)]
mod tests;

use std::time::Duration;

use flow_events_core::{
    Backend, Config, ConfigBuilder, ConnectionState, EventSource, Resilient, Subscription,
    SubscriptionHandle,
};

use crate::received::Received;
use crate::wait::until_connected;

pub use cuts::{
    CUT_EVENTS, CUT_EVERY, CUT_PACE, CUT_TASKS, Cuts, Cutter, partitioned, through_cuts,
};
pub use publish::{Calls, Published, publish_each_confirmed, publish_paced, publish_until};
pub use recovery::{
    Recovery, a_later_event_arrives, assert_delivered_in_order, assert_nothing_lost_to_cuts,
    buffered_while_down, recovered,
};

/// Longest wait for a drain or a whole delivery.
pub const LONG: Duration = Duration::from_secs(120);

/// Longest wait for a started publisher or consumer to connect.
pub const CONNECT: Duration = Duration::from_secs(10);

/// How long a shutdown of [`shut_down`] may take to send what is pending.
pub const GRACE: Duration = Duration::from_secs(10);

/// Quick reconnects (100 ms, at most 1 s apart), a buffer of 50 000 events,
/// large enough for every fault test, and a publish timeout of 10 s.
pub fn fast(c: ConfigBuilder) -> ConfigBuilder {
    c.with_retry_delay(Duration::from_millis(100))
        .with_max_retry_delay(Duration::from_secs(1))
        .with_max_pending_events(50_000)
        .with_publish_timeout(Duration::from_secs(10))
}

/// Whether `s` is [`ConnectionState::Connected`].
pub fn connected(s: ConnectionState) -> bool {
    s == ConnectionState::Connected
}

/// [`Resilient`] over `backend` with `config`, started (not waiting for a
/// connection); panics when the start fails.
pub async fn start(backend: impl Backend, config: &Config) -> Resilient {
    Resilient::builder(backend)
        .with_config(config.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the decorator: {e}"))
}

/// A consumer on `backend`, connected within [`CONNECT`] and subscribed to
/// `subscription` with `received`'s handler.
pub async fn consumer(
    backend: impl Backend,
    config: &Config,
    subscription: Subscription,
    received: &Received,
) -> (Resilient, SubscriptionHandle) {
    let consumer = start(backend, config).await;
    until_connected(&consumer, CONNECT).await;
    let handle = consumer
        .subscribe(subscription, received.handler())
        .await
        .unwrap_or_else(|e| panic!("subscribing: {e}"));
    (consumer, handle)
}

/// Starts a publisher over `backend` with `config` and waits (within
/// [`CONNECT`]) until it is connected.
pub async fn connected_publisher(backend: impl Backend, config: &Config) -> Resilient {
    let publisher = start(backend, config).await;
    until_connected(&publisher, CONNECT).await;
    publisher
}

/// Closes `subscribed` and shuts its consumer down, then shuts `publisher`
/// down, each within [`GRACE`]: the publisher must have nothing left
/// pending.
pub async fn shut_down(
    consumer: &Resilient,
    subscribed: SubscriptionHandle,
    publisher: &Resilient,
) {
    subscribed.close().await;
    consumer.shutdown(GRACE).await;
    let report = publisher.shutdown(GRACE).await;
    assert!(
        report.remaining.is_empty(),
        "{} events left pending",
        report.remaining.len()
    );
}
