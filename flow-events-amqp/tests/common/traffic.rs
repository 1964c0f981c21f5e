//! Steady publishing and consuming through `Resilient`, for the tests that
//! disturb the broker while events flow: the testkit's `traffic`, with the
//! AMQP settings of these tests.

use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfigBuilder};
use flow_events_core::{Config, Resilient, Subscription, SubscriptionHandle};
use flow_events_testkit::received::Received;
use flow_events_testkit::steps;

// Not every test binary uses each of these.
#[allow(unused_imports)]
pub use flow_events_testkit::traffic::{
    CUT_EVENTS, Calls, Cuts, Cutter, LONG, Published, a_later_event_arrives,
    assert_delivered_in_order, assert_nothing_lost_to_cuts, buffered_while_down, connected,
    connected_publisher, fast, partitioned, publish_each_confirmed, publish_paced, publish_until,
    recovered, shut_down, start, through_cuts,
};

/// The heartbeat of the fault tests: a dead peer is noticed within seconds.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// A short heartbeat and short connect and operation timeouts.
pub fn short_heartbeat(o: AmqpConfigBuilder) -> AmqpConfigBuilder {
    o.with_heartbeat(HEARTBEAT)
        .with_connect_timeout(Duration::from_secs(3))
        .with_operation_timeout(Duration::from_secs(5))
}

/// The subscription `name` to every `fault.*` event, 100 deliveries ahead.
pub fn subscription(name: &str) -> Subscription {
    steps::subscription(name, "fault.#").with_prefetch(100)
}

/// A consumer of `name` on `backend`, connected and subscribed.
pub async fn consumer(
    backend: AmqpBackend,
    config: &Config,
    name: &str,
    received: &Received,
) -> (Resilient, SubscriptionHandle) {
    flow_events_testkit::traffic::consumer(backend, config, subscription(name), received).await
}

/// Messages ready in `queue`, read on a connection of its own.
pub async fn ready(queue: &str) -> u32 {
    let (conn, channel) = super::raw().await;
    let count = super::ready(&channel, queue).await;
    let _ = conn.close(200, "done".into()).await;
    count
}
