//! Helpers of the decorator's tests over the memory backend (paused clock).

// The helpers unwrap like the tests do; clippy's test allowance covers only
// `#[test]` functions.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::time::Duration;

use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, Decision, Delivery, Event, EventSource, Resilient,
    Subscription, SubscriptionHandle, TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::faulty::{FaultHandle, Faulty};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

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

pub async fn wait_state(r: &Resilient, state: ConnectionState) {
    let mut rx = r.watch_state();
    timeout(LONG, rx.wait_for(|s| *s == state))
        .await
        .unwrap_or_else(|_| panic!("state never became {state}"))
        .unwrap();
}

/// Waits (in virtual time) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A consumer on its own always-up connection; deliveries arrive on the channel.
pub async fn consumer(
    broker: &MemoryBroker,
    name: &str,
    pattern: &str,
) -> (
    Resilient,
    SubscriptionHandle,
    mpsc::UnboundedReceiver<Delivery>,
) {
    let r = Resilient::builder(broker.backend())
        .with_config(config().build().unwrap())
        .start()
        .await
        .unwrap();
    wait_state(&r, ConnectionState::Connected).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = r
        .subscribe(
            Subscription::new(name, TopicPattern::new(pattern).unwrap()).unwrap(),
            handler_fn(move |d: Delivery| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(d);
                    Decision::Ack
                }
            }),
        )
        .await
        .unwrap();
    (r, handle, rx)
}

pub async fn receive(rx: &mut mpsc::UnboundedReceiver<Delivery>, n: usize) -> Vec<Event> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let d = timeout(LONG, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("received {} of {n}", got.len()))
            .unwrap();
        got.push(d.into_event());
    }
    got
}
