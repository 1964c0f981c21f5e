//! The relay over RabbitMQ: two relays on one table, every event published,
//! none lost, duplicates counted and printed.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConnectionMonitor, ConnectionState, Decision, Delivery, Event, EventId, EventSource,
    Resilient, Subscription, TopicPattern, handler_fn,
};
use flow_events_postgres::{Outbox, Relay};

use common::{AMQP_URL, AmqpCleanup, TestTables, WAIT, outbox_rows, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_table_over_rabbitmq_lose_nothing() {
    require_database!("two_relays_on_one_table_over_rabbitmq_lose_nothing");
    if !common::broker_available("two_relays_on_one_table_over_rabbitmq_lose_nothing") {
        return;
    }
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "amqp2").await;
    let exchange = format!("test.{}", tables.prefix());
    let queue = format!("{exchange}.consumer");
    let _cleanup = AmqpCleanup {
        queues: vec![queue.clone(), format!("{queue}.dead")],
        exchanges: vec![exchange.clone(), format!("{exchange}.dlx")],
    };
    let amqp = AmqpConfig::new()
        .with_url(AMQP_URL)
        .with_exchange(&exchange);
    let start = || async {
        let r = Resilient::builder(AmqpBackend::new(&Config::default(), amqp.clone()))
            .start()
            .await
            .unwrap();
        tokio::time::timeout(
            WAIT,
            r.watch_state()
                .wait_for(|s| *s == ConnectionState::Connected),
        )
        .await
        .unwrap()
        .unwrap();
        r
    };
    let consumer = start().await;
    let received: Arc<Mutex<HashMap<EventId, usize>>> = Arc::default();
    let seen = received.clone();
    let _subscription = consumer
        .subscribe(
            Subscription::new(&queue, TopicPattern::new("order.*").unwrap()).unwrap(),
            handler_fn(move |d: Delivery| {
                let seen = seen.clone();
                async move {
                    *seen.lock().unwrap().entry(d.event().id()).or_default() += 1;
                    Decision::Ack
                }
            }),
        )
        .await
        .unwrap();
    // Each relay with its own sink, as two replicas of a service would.
    let (sink_a, sink_b) = (start().await, start().await);
    let relays = [
        Relay::builder(pool.clone(), &tables, sink_a.clone())
            .with_name("a")
            .with_batch_size(64)
            .start(),
        Relay::builder(pool.clone(), &tables, sink_b.clone())
            .with_name("b")
            .with_batch_size(64)
            .start(),
    ];

    let outbox = Outbox::new(&tables);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let pool = pool.clone();
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for t in 0..100 {
                    let mut tx = pool.begin().await.unwrap();
                    for i in 0..5 {
                        let e = Event::try_new(
                            "order.created",
                            serde_json::json!({ "writer": w, "n": t * 5 + i }),
                        )
                        .unwrap();
                        outbox.enqueue(&mut tx, &e).await.unwrap();
                        ids.push(e.id());
                    }
                    tx.commit().await.unwrap();
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writers {
        ids.extend(w.await.unwrap());
    }
    until("every event received", Duration::from_secs(60), || async {
        let got = received.lock().unwrap();
        ids.iter().all(|id| got.contains_key(id))
    })
    .await;
    until("outbox empty", WAIT, || async {
        outbox_rows(&pool, &tables).await == 0
    })
    .await;

    let got = received.lock().unwrap().clone();
    let deliveries: usize = got.values().sum();
    let duplicates = deliveries - got.len();
    let by_relay: Vec<(String, u64, u64)> = relays
        .iter()
        .map(|r| {
            let s = r.status();
            (s.name.clone(), s.published, s.possible_duplicates())
        })
        .collect();
    println!(
        "two relays over RabbitMQ: {} events committed, {} distinct received, {deliveries} deliveries, \
         {duplicates} duplicates; (relay, published, possible duplicates): {by_relay:?}",
        ids.len(),
        got.len()
    );
    assert_eq!(got.len(), ids.len(), "none lost");
    assert!(ids.iter().all(|id| got.contains_key(id)));
    assert_eq!(
        by_relay.iter().map(|(_, n, _)| n).sum::<u64>(),
        ids.len() as u64,
        "each row deleted once"
    );
    for r in &relays {
        r.shutdown().await;
    }
    for s in [&sink_a, &sink_b, &consumer] {
        s.shutdown(Duration::from_secs(5)).await;
    }
}
