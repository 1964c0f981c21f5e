//! Durable de-duplication against RabbitMQ: an event handled before a restart
//! of the consumer and delivered again after it is skipped with the redb
//! store, and counted as a duplicate.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::metrics as names;
use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, Decision, Delivery, Event, EventSink, EventSource,
    Resilient, Subscription, SubscriptionHandle, TopicPattern, handler_fn,
};
use flow_events_outbox::RedbDedupStore;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::mpsc;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(15);

fn broker_available() -> bool {
    let addr: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("RabbitMQ is not reachable ({e}) and CI=true")
        }
        Err(e) => {
            eprintln!("skipping the de-duplication restart test: RabbitMQ is not reachable ({e})");
            false
        }
    }
}

/// Deletes what the test declared when dropped, on a panic too.
struct Cleanup(Vec<String>, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (queues, exchange) = (self.0.clone(), self.1.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(conn) = Connection::connect(URL, ConnectionProperties::default()).await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for q in queues {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for x in [exchange.clone(), format!("{exchange}.dlx")] {
                        let _ = ch
                            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = done.join();
    }
}

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

/// A consumer of `name` with the store at `path`, sending what it handles to `tx`.
async fn consumer(
    exchange: &str,
    name: &str,
    path: &Path,
    tx: mpsc::UnboundedSender<Delivery>,
) -> (Resilient, SubscriptionHandle) {
    let amqp = AmqpConfig::new().with_url(URL).with_exchange(exchange);
    let client = Resilient::builder(AmqpBackend::new(&Config::default(), amqp))
        .start()
        .await
        .unwrap();
    let mut state = client.watch_state();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ConnectionState::Connected))
        .await
        .unwrap()
        .unwrap();
    let store = RedbDedupStore::open(path).unwrap();
    let sub = Subscription::new(name, TopicPattern::new("order.*").unwrap())
        .unwrap()
        .with_prefetch(1)
        .with_dedup_store(Arc::new(store));
    let handler = handler_fn(move |d: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(d);
            Decision::Ack
        }
    });
    let handle = client.subscribe(sub, handler).await.unwrap();
    (client, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_after_a_consumer_restart_is_skipped_and_counted() {
    if !broker_available() {
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let mut counted = 0;

    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("test.dedup.{suffix}");
    let name = format!("test.dedup-restart.{suffix}");
    let _cleanup = Cleanup(vec![name.clone(), format!("{name}.dead")], exchange.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dedup.redb");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (first, handle) = consumer(&exchange, &name, &path, tx.clone()).await;
    let event = Event::try_new("order.created", serde_json::json!({"n": 1})).unwrap();
    first.publish(event.clone()).await.unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.event().id(), event.id());
    // The consumer stops; its store is closed with it.
    handle.close().await;
    first.shutdown(WAIT).await;
    drop(first);

    let (second, handle) = consumer(&exchange, &name, &path, tx).await;
    // The same event again (a publisher's retry, say), then a marker: with a
    // prefetch of 1 the duplicate is settled before the marker is handled.
    second.publish(event.clone()).await.unwrap();
    let marker = Event::try_new("order.marker", serde_json::json!({"n": 2})).unwrap();
    second.publish(marker.clone()).await.unwrap();
    let next = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
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
