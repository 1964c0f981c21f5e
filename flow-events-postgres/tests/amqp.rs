//! The relay over RabbitMQ: two relays on one table, every event published,
//! none lost, duplicates counted and printed.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Config, EventSource, Resilient};
use flow_events_postgres::{Outbox, Relay};
use flow_events_testkit::received::Received;
use flow_events_testkit::steps;
use flow_events_testkit::wait::start_connected;

use common::sink::commit_concurrently;
use common::{AMQP_URL, TestTables, WAIT, outbox_rows, until};

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
    let mut cleanup = common::amqp_cleanup();
    cleanup
        .queue(&queue)
        .queue(&format!("{queue}.dead"))
        .exchange(&exchange)
        .exchange(&format!("{exchange}.dlx"));
    let amqp = AmqpConfig::builder()
        .with_url(AMQP_URL)
        .with_exchange(&exchange)
        .build()
        .expect("AMQP config");
    let start = || {
        let backend = AmqpBackend::new(&Config::default(), amqp.clone());
        start_connected(Resilient::builder(backend), WAIT)
    };
    let consumer = start().await;
    let received = Received::new();
    let _subscription = consumer
        .subscribe(steps::subscription(&queue, "order.*"), received.handler())
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
    let ids = commit_concurrently(&pool, &outbox, 4, 100).await;
    received
        .wait_distinct(ids.len(), Duration::from_secs(60))
        .await;
    until("outbox empty", WAIT, || async {
        outbox_rows(&pool, &tables).await == 0
    })
    .await;

    let by_relay: Vec<(String, u64, u64)> = relays
        .iter()
        .map(|r| {
            let s = r.status();
            (s.name.clone(), s.published, s.possible_duplicates())
        })
        .collect();
    println!(
        "two relays over RabbitMQ: {} events committed, {} distinct received, {} deliveries, \
         {} duplicates; (relay, published, possible duplicates): {by_relay:?}",
        ids.len(),
        received.distinct(),
        received.deliveries(),
        received.duplicates()
    );
    assert_eq!(received.distinct(), ids.len(), "none lost");
    assert!(ids.iter().all(|id| received.contains(id)));
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
