//! Helpers shared by the outbox tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use flow_events_core::{
    Backend, Config, Decision, Event, EventId, EventSink, PendingStore, PublishOutcome, Recovered,
    Resilient, SubscriptionHandle,
};
use flow_events_memory::MemoryBroker;
use flow_events_outbox::RedbStore;
use flow_events_testkit::deliveries::{Deliveries, forward};
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;

/// Longest wait for a decorator to connect.
pub const WAIT: Duration = Duration::from_secs(30);

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

/// Runs `body` on a runtime of its own when this test binary was started as
/// the child `role` (see [`child`]); in the parent's own run it does nothing.
pub fn as_child(role: &str, body: impl Future<Output = ()>) {
    if std::env::var(CHILD).as_deref() != Ok(role) {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

/// Starts the decorator over `backend` with the outbox file at `path`.
pub async fn start_with_outbox(backend: impl Backend, config: Config, path: &Path) -> Resilient {
    Resilient::builder(backend)
        .with_config(config)
        .with_store(RedbStore::open(path).unwrap())
        .start()
        .await
        .unwrap()
}

/// Publishes `event` on `r`, whose broker is down: it must be buffered.
/// Gives its id.
pub async fn publish_buffered(r: &Resilient, event: Event) -> EventId {
    let id = event.id();
    let outcome = r.publish(event).await.unwrap();
    assert!(
        matches!(outcome, PublishOutcome::Buffered { .. }),
        "{outcome:?}"
    );
    id
}

/// Shuts `r` down, which must deliver every event it holds first.
pub async fn shutdown_drained(r: &Resilient) {
    let report = r.shutdown(Duration::from_secs(30)).await;
    assert!(
        report.remaining.is_empty(),
        "{} events left",
        report.remaining.len()
    );
}

/// The ids of the events in the outbox file at `path`, in the order stored.
pub fn stored_ids(path: &Path) -> Vec<EventId> {
    flow_events_outbox::read(path)
        .unwrap()
        .events
        .iter()
        .map(|s| s.event.id())
        .collect()
}

/// A consumer of `pattern` on `broker`, through its own decorator.
pub async fn consume(
    broker: &MemoryBroker,
    name: &str,
    pattern: &str,
) -> (Resilient, SubscriptionHandle, Deliveries) {
    let r = start_connected(Resilient::builder(broker.backend()), WAIT).await;
    let (h, rx) = forward(&r, subscription(name, pattern), Decision::Ack).await;
    (r, h, rx)
}
