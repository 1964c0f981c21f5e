//! The metrics the decorator and its consumers report, read back from a
//! recording backend (metrics-util's debugging recorder) across a scripted
//! outage, on the memory backend with tokio's paused clock.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::metrics as names;
use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, Decision, Delivery, Event, EventSink, EventSource,
    PublishOutcome, Resilient, Subscription, TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::{Instant, timeout};

const LONG: Duration = Duration::from_secs(3600);

type Key = (String, Vec<(String, String)>);

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// What the recorder got. Its snapshots give what changed since the last
/// one, so counters and histogram counts are added up here; a gauge is its
/// value at the last reading.
#[derive(Debug)]
struct Recorded {
    snapshotter: Snapshotter,
    counters: HashMap<Key, u64>,
    observations: HashMap<Key, usize>,
    gauges: HashMap<Key, f64>,
}

impl Recorded {
    fn new(snapshotter: Snapshotter) -> Self {
        Self {
            snapshotter,
            counters: HashMap::new(),
            observations: HashMap::new(),
            gauges: HashMap::new(),
        }
    }

    /// Takes what was recorded since the last reading.
    fn read(&mut self) -> &Self {
        self.gauges.clear();
        for (composite, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let k = composite.key();
            let labels: Vec<(&str, &str)> = k.labels().map(|l| (l.key(), l.value())).collect();
            let k = key(k.name(), &labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(k).or_default() += n,
                DebugValue::Histogram(v) => *self.observations.entry(k).or_default() += v.len(),
                DebugValue::Gauge(v) => {
                    self.gauges.insert(k, v.into_inner());
                }
            }
        }
        self
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        *self
            .counters
            .get(&key(name, labels))
            .unwrap_or_else(|| panic!("no counter {name}{labels:?}"))
    }

    fn gauge(&self, name: &str) -> f64 {
        *self
            .gauges
            .get(&key(name, &[]))
            .unwrap_or_else(|| panic!("no gauge {name} set since the last reading"))
    }

    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.observations
            .get(&key(name, labels))
            .copied()
            .unwrap_or(0)
    }
}

/// Waits (in virtual time) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_state(r: &Resilient, what: &str, f: impl Fn(ConnectionState) -> bool) {
    timeout(LONG, r.watch_state().wait_for(|s| f(*s)))
        .await
        .unwrap_or_else(|_| panic!("never {what}"))
        .unwrap();
}

fn numbered(n: usize) -> Event {
    Event::try_new("order.created", serde_json::json!({ "n": n })).unwrap()
}

/// Down, 100 buffered, up, drained; the consumer retries one event once,
/// dead-letters another, and skips a duplicate.
#[tokio::test(start_paused = true)]
async fn a_scripted_outage_gives_the_expected_counters() {
    // A recorder of this thread only: the runtime runs every task of the test
    // on it, and no other test of the binary sees these metrics.
    let recorder = DebuggingRecorder::new();
    let mut recorded = Recorded::new(recorder.snapshotter());
    let _local = metrics::set_default_local_recorder(&recorder);

    let broker = MemoryBroker::new();
    let events = Resilient::builder(broker.backend())
        .with_config(
            Config::builder()
                .with_retry_delay(Duration::from_secs(1))
                .with_max_retry_delay(Duration::from_secs(4))
                .with_max_pending_bytes(Some(1 << 20))
                .build()
                .unwrap(),
        )
        .start()
        .await
        .unwrap();
    wait_state(&events, "connected", |s| s == ConnectionState::Connected).await;

    // n = 7 fails its first attempt, n = 13 is rejected; the rest are acked.
    let handled: Arc<Mutex<Vec<(usize, u32)>>> = Arc::default();
    let _subscription = events
        .subscribe(
            Subscription::new("billing", TopicPattern::new("order.*").unwrap())
                .unwrap()
                .with_dedup_window(1000),
            handler_fn({
                let handled = handled.clone();
                move |d: Delivery| {
                    let handled = handled.clone();
                    async move {
                        let n = d.event().data()["n"].as_u64().unwrap() as usize;
                        handled.lock().unwrap().push((n, d.attempt()));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        match (n, d.attempt()) {
                            (7, 1) => Decision::Retry,
                            (13, _) => Decision::reject("thirteen"),
                            _ => Decision::Ack,
                        }
                    }
                }
            }),
        )
        .await
        .unwrap();

    broker.take_down();
    wait_state(&events, "disconnected", |s| s != ConnectionState::Connected).await;
    let mut sent = Vec::new();
    for n in 0..100 {
        let event = numbered(n);
        sent.push(event.clone());
        let outcome = events.publish(event).await.unwrap();
        assert!(
            matches!(outcome, PublishOutcome::Buffered { .. }),
            "{n}: {outcome:?}"
        );
    }
    events.record_metrics();
    let down = recorded.read();
    assert_eq!(down.gauge(names::CONNECTED), 0.0);
    assert_eq!(down.gauge(names::PENDING_EVENTS), 100.0);
    assert!(down.gauge(names::PENDING_BYTES) > 100.0 * 40.0);
    assert_eq!(down.counter(names::BUFFERED_TOTAL, &[]), 100);
    assert_eq!(down.counter(names::DRAINED_TOTAL, &[]), 0);

    tokio::time::sleep(Duration::from_secs(30)).await;
    events.record_metrics();
    let old = recorded.read();
    assert!(old.gauge(names::OLDEST_PENDING_AGE) >= 30.0);
    assert!(old.gauge(names::RECONNECT_ATTEMPTS) >= 1.0);

    broker.bring_up();
    eventually("the buffer drained", || events.status().pending_events == 0).await;
    // Every event handled, n = 7 twice.
    eventually("101 handler calls", || handled.lock().unwrap().len() == 101).await;
    // The same event again: skipped by the de-duplication window.
    events.publish(sent[0].clone()).await.unwrap();
    let sub = [("subscription", "billing")];
    eventually("the duplicate skipped", || {
        recorded
            .read()
            .counter(names::DUPLICATES_SKIPPED_TOTAL, &sub)
            == 1
    })
    .await;
    assert_eq!(broker.dead_letters("billing").len(), 1);

    // The gauges follow within a second, without a scrape.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let up = recorded.read();
    let mut lines: Vec<String> = up
        .counters
        .iter()
        .map(|((name, labels), n)| format!("{name}{labels:?} {n}"))
        .collect();
    lines.sort();
    println!("{}", lines.join("\n"));
    assert_eq!(up.gauge(names::CONNECTED), 1.0);
    assert_eq!(up.gauge(names::CONNECTION_STATE), 2.0);
    assert_eq!(up.gauge(names::PENDING_EVENTS), 0.0);
    assert_eq!(up.gauge(names::PENDING_BYTES), 0.0);
    assert_eq!(up.gauge(names::OLDEST_PENDING_AGE), 0.0);
    assert_eq!(up.gauge(names::RECONNECT_ATTEMPTS), 0.0);

    for (name, expected) in [
        (names::PUBLISHED_TOTAL, 101),
        (names::BUFFERED_TOTAL, 100),
        (names::CONFIRMED_TOTAL, 101),
        (names::DRAINED_TOTAL, 100),
        (names::DROPPED_TOTAL, 0),
        (names::REFUSED_TOTAL, 0),
        (names::FAILED_TOTAL, 0),
        (names::EXPIRED_TOTAL, 0),
        (names::RECONNECTS_TOTAL, 1),
    ] {
        assert_eq!(up.counter(name, &[]), expected, "{name}");
    }
    let outcome = |o: &'static str| [("outcome", o)];
    assert_eq!(
        up.observations(names::PUBLISH_DURATION, &outcome("buffered")),
        100
    );
    assert_eq!(
        up.observations(names::PUBLISH_DURATION, &outcome("confirmed")),
        1
    );

    assert_eq!(up.counter(names::DELIVERED_TOTAL, &sub), 102);
    assert_eq!(up.counter(names::DUPLICATES_SKIPPED_TOTAL, &sub), 1);
    let decided = |d: &'static str| [("subscription", "billing"), ("decision", d)];
    assert_eq!(up.counter(names::HANDLED_TOTAL, &decided("ack")), 99);
    assert_eq!(up.counter(names::HANDLED_TOTAL, &decided("retry")), 1);
    assert_eq!(up.counter(names::HANDLED_TOTAL, &decided("reject")), 1);
    assert_eq!(up.counter(names::HANDLED_TOTAL, &decided("panic")), 0);
    assert_eq!(up.counter(names::RETRIED_TOTAL, &sub), 1);
    assert_eq!(up.counter(names::DEAD_LETTERED_TOTAL, &sub), 1);
    assert_eq!(up.observations(names::HANDLER_DURATION, &sub), 101);

    // The counters agree with the status.
    let status = events.status();
    assert_eq!(status.published, 101);
    assert_eq!(status.confirmed, 101);
    assert_eq!(status.reconnects, 1);
    events.shutdown(Duration::from_secs(5)).await;
}

/// The task that sets the gauges stops with the sink: once `shutdown` has
/// returned and the handle is dropped, nothing holds the sink's state (a
/// durable store can be opened again at once, by a restart in the same
/// process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_holds_the_sink_after_shutdown() {
    for _ in 0..50 {
        let broker = MemoryBroker::new();
        let store = Arc::new(flow_events_core::MemoryStore::new());
        let events = Resilient::builder(broker.backend())
            .with_store(store.clone())
            .start()
            .await
            .unwrap();
        events.publish(numbered(1)).await.unwrap();
        events.shutdown(Duration::from_secs(5)).await;
        drop(events);
        assert_eq!(Arc::strong_count(&store), 1, "the store is still held");
    }
}
