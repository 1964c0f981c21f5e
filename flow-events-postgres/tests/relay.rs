//! The relay over the memory backend against the local PostgreSQL: what
//! commits is published, what rolls back is not, a late commit is not
//! skipped, notifications wake it, several relays share a table.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use flow_events_core::{Event, EventId};
use flow_events_postgres::{Outbox, RelayState};

use common::sink::{Sink, commit_concurrently, commit_events, event, relay, until_status};
use common::{TestTables, WAIT, outbox_rows, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_are_published_and_rolled_back_ones_never() {
    require_database!("committed_events_are_published_and_rolled_back_ones_never");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "commit").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink).start();

    let committed: Vec<Event> = (0..20).map(event).collect();
    let rolled_back = event(99);
    let mut tx = pool.begin().await.unwrap();
    outbox.enqueue(&mut tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    commit_events(&pool, &outbox, &committed).await;

    let ids: Vec<EventId> = committed.iter().map(Event::id).collect();
    sink.until_received(&ids).await;
    until("outbox empty", WAIT, || async {
        outbox_rows(&pool, &tables).await == 0
    })
    .await;
    until_status(&relay, "idle with nothing waiting", |s| {
        s.state == RelayState::Idle && s.rows_waiting == Some(0) && s.published == 20
    })
    .await;
    // In commit order, each exactly once, and nothing of the rolled-back one.
    assert_eq!(sink.ids(), ids);
    let status = relay.status();
    assert!(status.last_publish_lag.is_some());
    assert_eq!(status.possible_duplicates(), 0);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["state"], "idle");
    assert_eq!(json["rows_waiting"], 0);
    relay.shutdown().await;
    assert_eq!(relay.status().state, RelayState::Stopped);
}

/// The classic relay bug: transaction A takes its id first, B takes a larger
/// one and commits; the relay publishes B; then A commits. A relay reading
/// "id > last published" would never see A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_commits_late_with_a_smaller_id_is_not_skipped() {
    require_database!("a_row_that_commits_late_with_a_smaller_id_is_not_skipped");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "late").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink).start();

    let early = event(1);
    let late = event(2);
    let mut slow = pool.begin().await.unwrap();
    outbox.enqueue(&mut slow, &early).await.unwrap();
    commit_events(&pool, &outbox, std::slice::from_ref(&late)).await;
    sink.until_received(&[late.id()]).await;
    until_status(&relay, "the later row published", |s| s.published == 1).await;

    slow.commit().await.unwrap();
    sink.until_received(&[early.id()]).await;
    assert_eq!(sink.ids(), [late.id(), early.id()]);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_the_relay_without_polling() {
    require_database!("a_notification_wakes_the_relay_without_polling");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "notify").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink)
        .with_poll_interval(Duration::from_secs(3600))
        .start();
    until_status(&relay, "listening and idle", |s| {
        s.listening && s.state == RelayState::Idle
    })
    .await;
    // Let the wake-up of the listener's connection pass: idle again after it.
    let batches = relay.status().batches;
    let e = event(1);
    commit_events(&pool, &outbox, std::slice::from_ref(&e)).await;
    sink.until_received(&[e.id()]).await;
    until_status(&relay, "one more batch", |s| s.batches == batches + 1).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notify_the_poll_finds_the_rows() {
    require_database!("without_notify_the_poll_finds_the_rows");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "poll").await;
    let outbox = Outbox::new(&tables).without_notify();
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink)
        .with_poll_interval(Duration::from_millis(100))
        .start();
    until_status(&relay, "listening and idle", |s| {
        s.listening && s.state == RelayState::Idle
    })
    .await;
    let events: Vec<Event> = (0..5).map(event).collect();
    commit_events(&pool, &outbox, &events).await;
    sink.until_received(&events.iter().map(Event::id).collect::<Vec<_>>())
        .await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_one_table_publish_everything() {
    require_database!("two_relays_on_one_table_publish_everything");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "tworelays").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relays = [
        relay(&pool, &tables, &sink.sink)
            .with_name("a")
            .with_batch_size(16)
            .start(),
        relay(&pool, &tables, &sink.sink)
            .with_name("b")
            .with_batch_size(16)
            .start(),
    ];
    let ids = commit_concurrently(&pool, &outbox, 4, 50).await;
    sink.until_received(&ids).await;
    until("outbox empty", WAIT, || async {
        outbox_rows(&pool, &tables).await == 0
    })
    .await;
    let mut counts: HashMap<EventId, usize> = HashMap::new();
    for id in sink.ids() {
        *counts.entry(id).or_default() += 1;
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    let published: Vec<u64> = relays.iter().map(|r| r.status().published).collect();
    println!(
        "two relays over memory: {} events, {} received, {duplicates} duplicates, published by each: {published:?}",
        ids.len(),
        sink.ids().len()
    );
    assert_eq!(counts.len(), ids.len());
    assert_eq!(published.iter().sum::<u64>(), ids.len() as u64);
    assert_eq!(
        sink.broker.published_count(),
        (ids.len() + duplicates) as u64
    );
    for r in &relays {
        r.shutdown().await;
    }
}
