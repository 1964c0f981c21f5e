//! Against RabbitMQ: 5 000 events buffered while the broker is unreachable
//! (an AMQP URL to a closed port), the service stopped, then started again
//! with the broker up: all 5 000 arrive, in order, at a consumer on an
//! exchange and queue of this test's own, deleted at the end.
//!
//! Needs RabbitMQ at 127.0.0.1:5672 (guest/guest): without it the test fails
//! under `CI=true` and is skipped with a printed reason otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{forward, receive};
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, Event, EventId, EventSink, PublishOutcome,
    Resilient,
};
use flow_events_outbox::RedbStore;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

const BROKER: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const EVENTS: usize = 5_000;
const PUBLISHERS: usize = 8;

fn broker_available() -> bool {
    let addr: SocketAddr = BROKER.parse().unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("RabbitMQ is not reachable at {BROKER} ({e}) and CI=true");
            }
            eprintln!(
                "skipping the RabbitMQ restart test: RabbitMQ is not reachable at {BROKER} ({e})"
            );
            false
        }
    }
}

/// An AMQP URL on a port nothing listens on.
fn closed_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

fn config() -> Config {
    Config::builder()
        .with_retry_delay(Duration::from_millis(100))
        .with_max_retry_delay(Duration::from_millis(500))
        .with_publish_timeout(Duration::from_secs(10))
        .with_max_pending_events(EVENTS)
        .build()
        .unwrap()
}

fn backend(config: &Config, url: &str, exchange: &str) -> AmqpBackend {
    AmqpBackend::new(
        config,
        AmqpConfig::new()
            .with_url(url)
            .with_exchange(exchange)
            .with_app_id("flow-events-outbox-test")
            .with_connect_timeout(Duration::from_secs(2)),
    )
}

/// Deletes the test's queues and exchanges when dropped, on a panic too.
struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        // Its own runtime on its own thread: this may run inside the test's.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(Ok(conn)) = tokio::time::timeout(
                    Duration::from_secs(10),
                    Connection::connect(URL, ConnectionProperties::default()),
                )
                .await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    for q in &queues {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                    for x in &exchanges {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_events_buffered_while_rabbitmq_is_unreachable_arrive_in_order() {
    if !broker_available() {
        return;
    }
    let suffix = format!("{:016x}", fastrand::u64(..));
    let exchange = format!("test.outbox.{suffix}");
    let queue = format!("test.outbox.restart.{suffix}");
    let _cleanup = Cleanup {
        queues: vec![queue.clone(), format!("{queue}.dead")],
        exchanges: vec![exchange.clone(), format!("{exchange}.dlx")],
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");

    // First run: the broker cannot be reached; every publish is stored.
    let down = config();
    let first = Resilient::builder(backend(&down, &closed_url(), &exchange))
        .with_config(down)
        .with_store(RedbStore::open(&path).unwrap())
        .start()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let first = first.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in (p..EVENTS).step_by(PUBLISHERS) {
                let e = Event::try_new("outbox.restart", serde_json::json!({ "n": n })).unwrap();
                ids.push(e.id());
                let outcome = first.publish(e).await.unwrap();
                assert!(
                    matches!(outcome, PublishOutcome::Buffered { .. }),
                    "{outcome:?}"
                );
            }
            ids
        }));
    }
    let mut by_publisher = Vec::new();
    for t in tasks {
        by_publisher.push(t.await.unwrap());
    }
    assert_eq!(first.status().pending_events, EVENTS);
    assert_eq!(first.shutdown(Duration::ZERO).await.remaining.len(), EVENTS);
    drop(first);
    // The order they were accepted in, as the outbox keeps it.
    let stored: Vec<EventId> = flow_events_outbox::read(&path)
        .unwrap()
        .events
        .iter()
        .map(|s| s.event.id())
        .collect();
    assert_eq!(stored.len(), EVENTS);

    // A consumer on the test's own queue, through the real broker.
    let up = config();
    let consumer = Resilient::builder(backend(&up, URL, &exchange))
        .with_config(up.clone())
        .start()
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        consumer
            .watch_state()
            .wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .unwrap()
    .unwrap();
    let (_sub, mut rx) = forward(&consumer, &queue, "outbox.#").await;

    // Second run: the broker is up; the stored events go out first, in order.
    let second = Resilient::builder(backend(&up, URL, &exchange))
        .with_config(up)
        .with_store(RedbStore::open(&path).unwrap())
        .start()
        .await
        .unwrap();
    let got: Vec<EventId> = receive(&mut rx, EVENTS, Duration::from_secs(60))
        .await
        .iter()
        .map(Event::id)
        .collect();
    assert_eq!(got, stored, "delivered in the order stored");
    // And each publisher's events in the order it published them.
    let position: HashMap<EventId, usize> =
        got.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for ids in &by_publisher {
        let at: Vec<usize> = ids.iter().map(|id| position[id]).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]));
    }
    assert!(
        second
            .shutdown(Duration::from_secs(30))
            .await
            .remaining
            .is_empty()
    );
    drop(second);
    consumer.shutdown(Duration::from_secs(5)).await;

    // Confirmed: nothing is left for a third run.
    assert!(flow_events_outbox::read(&path).unwrap().events.is_empty());
}
