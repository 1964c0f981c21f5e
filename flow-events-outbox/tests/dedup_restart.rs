//! Durable de-duplication against RabbitMQ: an event handled before a restart
//! of the consumer and delivered again after it is skipped with the redb
//! store, and counted as a duplicate.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::metrics as names;
use flow_events_core::{Config, Decision, Event, EventSink, Resilient, SubscriptionHandle};
use flow_events_outbox::RedbDedupStore;
use flow_events_testkit::amqp::Cleanup;
use flow_events_testkit::deliveries::{Deliveries, forward};
use flow_events_testkit::server::reachable;
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

const BROKER: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(15);

/// The duplicates skipped counted so far for `subscription`.
fn duplicates(snapshotter: &Snapshotter, subscription: &str, total: &mut u64) -> u64 {
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let k = key.key();
        let ours = k.name() == names::DUPLICATES_SKIPPED_TOTAL
            && k.labels()
                .any(|l| l.key() == "subscription" && l.value() == subscription);
        if let (true, DebugValue::Counter(n)) = (ours, value) {
            *total += n;
        }
    }
    *total
}

/// A consumer of `name` with the store at `path`; what it handles is handed
/// over.
async fn consumer(
    exchange: &str,
    name: &str,
    path: &Path,
) -> (Resilient, SubscriptionHandle, Deliveries) {
    let amqp = AmqpConfig::builder()
        .with_url(URL)
        .with_exchange(exchange)
        .build()
        .unwrap();
    let builder = Resilient::builder(AmqpBackend::new(&Config::default(), amqp));
    let client = start_connected(builder, WAIT).await;
    let store = RedbDedupStore::open(path).unwrap();
    let sub = subscription(name, "order.*")
        .with_prefetch(1)
        .with_dedup_store(Arc::new(store));
    let (handle, deliveries) = forward(&client, sub, Decision::Ack).await;
    (client, handle, deliveries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_after_a_consumer_restart_is_skipped_and_counted() {
    if !reachable("RabbitMQ", BROKER, "the de-duplication restart test") {
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let mut counted = 0;

    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("test.dedup.{suffix}");
    let name = format!("test.dedup-restart.{suffix}");
    let mut cleanup = Cleanup::new(URL);
    cleanup
        .queue(&name)
        .queue(&format!("{name}.dead"))
        .exchange(&exchange)
        .exchange(&format!("{exchange}.dlx"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dedup.redb");

    let (first, handle, mut rx) = consumer(&exchange, &name, &path).await;
    let event = Event::try_new("order.created", serde_json::json!({"n": 1})).unwrap();
    first.publish(event.clone()).await.unwrap();
    assert_eq!(rx.next(WAIT).await.event().id(), event.id());
    // The consumer stops; its store is closed with it.
    handle.close().await;
    first.shutdown(WAIT).await;
    drop(first);

    let (second, handle, mut rx) = consumer(&exchange, &name, &path).await;
    // The same event again (a publisher's retry, say), then a marker: with a
    // prefetch of 1 the duplicate is settled before the marker is handled.
    second.publish(event.clone()).await.unwrap();
    let marker = Event::try_new("order.marker", serde_json::json!({"n": 2})).unwrap();
    second.publish(marker.clone()).await.unwrap();
    let next = rx.next(WAIT).await;
    assert_eq!(
        next.event().id(),
        marker.id(),
        "the duplicate was handed to the handler after the restart"
    );
    let skipped = duplicates(&snapshotter, &name, &mut counted);
    println!("duplicates skipped after the restart: {skipped}");
    assert_eq!(skipped, 1, "the duplicate is counted");
    handle.close().await;
    second.shutdown(WAIT).await;
}
