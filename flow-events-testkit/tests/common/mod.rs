//! Helpers of the decorator's tests over the memory backend (paused clock).

// The helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::ops::Range;
use std::time::Duration;

use flow_events_core::{
    Backend, Config, ConnectionState, Decision, Event, EventId, EventSink, PendingStore,
    PublishError, PublishOutcome, Resilient, SubscriptionHandle,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::deliveries::{Deliveries, forward};
use flow_events_testkit::faulty::{FaultHandle, Faulty};
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::{start_connected, until, until_state};
use tokio::task::JoinHandle;

pub const LONG: Duration = Duration::from_secs(3600);

pub fn config() -> flow_events_core::ConfigBuilder {
    Config::builder()
        .with_retry_delay(Duration::from_secs(1))
        .with_max_retry_delay(Duration::from_secs(8))
        .with_max_retries(3)
}

pub fn event(t: &str, n: usize) -> Event {
    Event::try_new(t, serde_json::json!({ "n": n })).unwrap()
}

pub async fn start(broker: &MemoryBroker, config: Config) -> (Resilient, FaultHandle) {
    let (backend, faults) = Faulty::wrap(broker.backend());
    let r = Resilient::builder(backend)
        .with_config(config)
        .start()
        .await
        .unwrap();
    (r, faults)
}

/// Starts the decorator over `backend` with the tests' [`config`] and `store`.
pub async fn start_with_store(backend: impl Backend, store: impl PendingStore) -> Resilient {
    Resilient::builder(backend)
        .with_config(config().build().unwrap())
        .with_store(store)
        .start()
        .await
        .unwrap()
}

/// Started over `broker` with `config`, and connected.
pub async fn connected_with(broker: &MemoryBroker, config: Config) -> (Resilient, FaultHandle) {
    let (r, faults) = start(broker, config).await;
    wait_state(&r, ConnectionState::Connected).await;
    (r, faults)
}

/// Started over `broker` with the tests' [`config`], and connected.
pub async fn connected(broker: &MemoryBroker) -> (Resilient, FaultHandle) {
    connected_with(broker, config().build().unwrap()).await
}

/// A publish running in a task of its own.
pub type Publishing = JoinHandle<Result<PublishOutcome, PublishError>>;

/// Publishes on `r` the events `event_type` numbered `numbers`, each in a
/// task of its own, as concurrent callers would; gives their ids and the
/// tasks.
pub fn publish_concurrently(
    r: &Resilient,
    event_type: &str,
    numbers: Range<usize>,
) -> (Vec<EventId>, Vec<Publishing>) {
    let events: Vec<Event> = numbers.map(|n| event(event_type, n)).collect();
    let ids = events.iter().map(Event::id).collect();
    let tasks = events
        .into_iter()
        .map(|e| {
            let r = r.clone();
            tokio::spawn(async move { r.publish(e).await })
        })
        .collect();
    (ids, tasks)
}

/// Waits (in virtual time) until `r` is in `state`.
pub async fn wait_state(r: &Resilient, state: ConnectionState) {
    until_state(&format!("state {state}"), r, LONG, |s| s == state).await;
}

/// Waits (in virtual time) until `f` holds.
pub async fn eventually(what: &str, f: impl FnMut() -> bool) {
    until(what, LONG, f).await;
}

/// A consumer on its own always-up connection; its deliveries are handed
/// over.
pub async fn consumer(
    broker: &MemoryBroker,
    name: &str,
    pattern: &str,
) -> (Resilient, SubscriptionHandle, Deliveries) {
    let builder = Resilient::builder(broker.backend()).with_config(config().build().unwrap());
    let r = start_connected(builder, LONG).await;
    let (handle, rx) = forward(&r, subscription(name, pattern), Decision::Ack).await;
    (r, handle, rx)
}

/// The events of the next `n` deliveries.
pub async fn receive(rx: &mut Deliveries, n: usize) -> Vec<Event> {
    rx.events(n, LONG).await
}
