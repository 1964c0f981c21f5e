//! Helpers shared by the outbox tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use flow_events_core::{Event, PendingStore, Recovered};
use flow_events_outbox::RedbStore;

/// The environment variable that turns a test binary into a child process.
pub const CHILD: &str = "FLOW_EVENTS_OUTBOX_TEST_CHILD";

pub fn event(n: usize) -> Event {
    Event::try_new(
        "outbox.test",
        serde_json::json!({ "n": n, "pad": "x".repeat(64) }),
    )
    .unwrap()
}

/// Appends `n` events under sequence numbers 1..=n, concurrently.
pub async fn fill(store: &std::sync::Arc<RedbStore>, n: usize) -> Vec<Event> {
    let events: Vec<Event> = (1..=n).map(event).collect();
    let mut tasks = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let store = store.clone();
        let e = e.clone();
        tasks.push(tokio::spawn(
            async move { store.append(i as u64 + 1, &e).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    events
}

pub async fn recover(store: &RedbStore) -> Recovered {
    store.recover().await.unwrap()
}

/// The test binary itself, re-run as a child on one test with `role` set.
pub fn child(test: &str, role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, role);
    cmd
}

/// Waits until `f` holds, checking every millisecond, for at most `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::park_timeout(Duration::from_millis(1));
    }
    f()
}

use flow_events_core::{
    ConnectionMonitor, ConnectionState, Decision, Delivery, EventSource, Resilient, Subscription,
    SubscriptionHandle, TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;
use tokio::sync::mpsc;

/// A consumer of `pattern` on `broker`, through its own decorator.
pub async fn consume(
    broker: &MemoryBroker,
    name: &str,
    pattern: &str,
) -> (
    Resilient,
    SubscriptionHandle,
    mpsc::UnboundedReceiver<Event>,
) {
    let r = Resilient::builder(broker.backend()).start().await.unwrap();
    r.watch_state()
        .wait_for(|s| *s == ConnectionState::Connected)
        .await
        .unwrap();
    let (h, rx) = forward(&r, name, pattern).await;
    (r, h, rx)
}

/// Subscribes `consumer` as `name` to `pattern`; each event arrives on the
/// channel, acknowledged.
pub async fn forward(
    consumer: &Resilient,
    name: &str,
    pattern: &str,
) -> (SubscriptionHandle, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = consumer
        .subscribe(
            Subscription::new(name, TopicPattern::new(pattern).unwrap()).unwrap(),
            handler_fn(move |d: Delivery| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(d.into_event());
                    Decision::Ack
                }
            }),
        )
        .await
        .unwrap();
    (h, rx)
}

/// Receives `n` events, each within `limit`.
pub async fn receive(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    n: usize,
    limit: Duration,
) -> Vec<Event> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(limit, rx.recv()).await {
            Ok(Some(e)) => got.push(e),
            _ => panic!("received {} of {n} events", got.len()),
        }
    }
    got
}
