//! The relay in hostile cases, over the memory backend with faults against
//! the local PostgreSQL: broker down, blocking or lost before the confirms;
//! refused, unreadable and nacked rows; the database or the listener's
//! connection going away.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use flow_events_core::{ConnectionMonitor, ConnectionState, Event};
use flow_events_postgres::sqlx;
use flow_events_postgres::{Outbox, Relay, RelayState};

use common::sink::{Sink, commit_events, event, relay, until_status};
use common::{TestTables, WAIT, outbox_rows, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_waits_for_the_broker_and_reports_what_waits() {
    require_database!("the_relay_waits_for_the_broker_and_reports_what_waits");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "waits").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    sink.faults.go_down();
    sink.faults.drop_connection();
    tokio::time::timeout(
        WAIT,
        sink.sink
            .watch_state()
            .wait_for(|s| *s != ConnectionState::Connected),
    )
    .await
    .unwrap()
    .unwrap();
    let relay = relay(&pool, &tables, &sink.sink).start();
    let events: Vec<Event> = (0..10).map(event).collect();
    commit_events(&pool, &outbox, &events).await;
    until_status(&relay, "waiting with 10 rows", |s| {
        s.state == RelayState::WaitingForBroker
            && s.rows_waiting == Some(10)
            && s.oldest_waiting_age.is_some()
    })
    .await;
    assert_eq!(relay.status().batches, 0);
    assert_eq!(
        relay.status().failed_publishes,
        0,
        "no publish tried while down"
    );
    assert_eq!(sink.sink.status().pending_events, 0, "nothing buffered");
    assert_eq!(outbox_rows(&pool, &tables).await, 10);

    sink.faults.come_up();
    sink.until_received(&events.iter().map(Event::id).collect::<Vec<_>>())
        .await;
    until_status(&relay, "nothing waiting", |s| s.rows_waiting == Some(0)).await;
    assert_eq!(sink.ids(), events.iter().map(Event::id).collect::<Vec<_>>());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unreadable_rows_are_kept_dead_and_the_rest_flows() {
    require_database!("refused_and_unreadable_rows_are_kept_dead_and_the_rest_flows");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "dead").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    // A row nobody can read as an event.
    sqlx::query(&format!(
        "INSERT INTO {} (event_id, event_type, body) VALUES (gen_random_uuid(), 'x', 'not json')",
        tables.outbox()
    ))
    .execute(&pool)
    .await
    .unwrap();
    sink.faults.refuse_next_publishes(1);
    let events: Vec<Event> = (0..3).map(event).collect();
    commit_events(&pool, &outbox, &events).await;
    let relay = relay(&pool, &tables, &sink.sink).start();

    sink.until_received(&[events[1].id(), events[2].id()]).await;
    until_status(&relay, "two dead rows", |s| {
        s.dead_rows == Some(2) && s.marked_dead == 2 && s.rows_waiting == Some(0)
    })
    .await;
    let reasons: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT event_type, dead_reason FROM {} ORDER BY id",
        tables.outbox()
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(reasons.len(), 2);
    assert!(reasons[0].1.starts_with("unreadable event"), "{reasons:?}");
    assert_eq!(reasons[1].0, "order.created");
    assert!(reasons[1].1.contains("refused"), "{reasons:?}");
    assert!(!sink.ids().contains(&events[0].id()));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_rows_are_retried_then_given_up_after_the_limit() {
    require_database!("nacked_rows_are_retried_then_given_up_after_the_limit");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "nack").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink).with_max_nacks(3).start();

    // Nacked twice, then confirmed: published, counted as retried.
    sink.faults.nack_next_publishes(2);
    let first = event(1);
    commit_events(&pool, &outbox, std::slice::from_ref(&first)).await;
    until_status(&relay, "published after two nacks", |s| s.published == 1).await;
    let status = relay.status();
    assert_eq!(status.failed_publishes, 2);
    assert_eq!(status.retried, 1);

    // Nacked three times: given up, kept dead.
    sink.faults.nack_next_publishes(3);
    let second = event(2);
    commit_events(&pool, &outbox, std::slice::from_ref(&second)).await;
    until_status(&relay, "given up after three nacks", |s| s.marked_dead == 1).await;
    let (attempts, reason): (i32, String) = sqlx::query_as(&format!(
        "SELECT attempts, dead_reason FROM {}",
        tables.outbox()
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 3);
    assert!(reason.contains("nacked by the broker 3 times"), "{reason}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listener_connection_is_made_again() {
    require_database!("a_lost_listener_connection_is_made_again");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "listener").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink)
        .with_poll_interval(Duration::from_secs(3600))
        .start();
    until_status(&relay, "listening", |s| s.listening).await;
    let killed: Vec<(bool,)> =
        sqlx::query_as("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = $1")
            .bind(format!("LISTEN \"{}\"", tables.channel()))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(killed.len(), 1, "the listener's backend");
    // Listening again after the loss; a notification then wakes the relay.
    until_status(&relay, "listening again", |s| s.listening).await;
    let mut rx = relay.watch_status();
    tokio::time::timeout(WAIT, async {
        loop {
            commit_events(&pool, &outbox, &[event(1)]).await;
            if tokio::time::timeout(
                Duration::from_millis(500),
                rx.wait_for(|s| s.published >= 1),
            )
            .await
            .is_ok()
            {
                return;
            }
        }
    })
    .await
    .expect("a notification after the listener's loss wakes the relay");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_stops_nothing_for_good() {
    require_database!("the_database_going_away_stops_nothing_for_good");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "dbdown").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    // The relay reaches the database through a proxy that can be cut.
    let proxy = flow_events_testkit::proxy::TcpProxy::start("127.0.0.1:5432")
        .await
        .unwrap();
    let via_proxy = common::database_url().replace("127.0.0.1:5432", &proxy.addr().to_string());
    let relay_pool = flow_events_postgres::sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect(&via_proxy)
        .await
        .unwrap();
    let relay = relay(&relay_pool, &tables, &sink.sink).start();
    until_status(&relay, "listening and idle", |s| {
        s.listening && s.state == RelayState::Idle
    })
    .await;

    proxy.handle().down();
    proxy.handle().cut();
    let events: Vec<Event> = (0..5).map(event).collect();
    commit_events(&pool, &outbox, &events).await;
    until_status(&relay, "the loss noticed", |s| {
        !s.listening && s.state == RelayState::BackingOff && s.last_error.is_some()
    })
    .await;
    println!(
        "while the database is away: {:?}",
        relay.status().last_error
    );
    assert!(sink.ids().is_empty());
    assert_eq!(sink.sink.status().pending_events, 0);

    proxy.handle().up();
    sink.until_received(&events.iter().map(Event::id).collect::<Vec<_>>())
        .await;
    until_status(&relay, "recovered", |s| {
        s.listening && s.last_error.is_none() && s.rows_waiting == Some(0)
    })
    .await;
    assert_eq!(sink.ids().len(), 5, "each once");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_lost_before_the_confirms_republishes_and_counts_it() {
    require_database!("a_broker_lost_before_the_confirms_republishes_and_counts_it");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "lostconfirm").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = relay(&pool, &tables, &sink.sink).start();
    sink.faults.delay_confirms(Duration::from_secs(3600));
    let events: Vec<Event> = (0..10).map(event).collect();
    commit_events(&pool, &outbox, &events).await;
    // Sent, the confirms never come: the connection drops under them.
    sink.until_received(&events.iter().map(Event::id).collect::<Vec<_>>())
        .await;
    sink.faults.delay_confirms(Duration::ZERO);
    sink.faults.drop_connection();
    until_status(&relay, "published after the reconnection", |s| {
        s.published == 10 && s.rows_waiting == Some(0)
    })
    .await;
    let status = relay.status();
    let received = sink.ids().len();
    println!(
        "lost before the confirms: {received} deliveries of 10 events, relay counts {} possible duplicates",
        status.possible_duplicates()
    );
    assert_eq!(received, 20, "each event twice on the wire");
    assert_eq!(status.retried, 10, "every republished row counted");
    assert_eq!(status.failed_publishes, 10);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_broker_holds_the_rows_until_it_unblocks() {
    require_database!("a_blocking_broker_holds_the_rows_until_it_unblocks");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "blocked").await;
    let outbox = Outbox::new(&tables);
    let sink = Sink::start().await;
    let relay = Relay::builder(pool.clone(), &tables, sink.sink.clone())
        .with_status_interval(Duration::from_millis(50))
        // A long backoff: only the end of the block can end the wait early.
        .with_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .start();
    sink.faults.set_blocked(true);
    until("the sink sees the block", WAIT, || async {
        sink.sink.status().blocked
    })
    .await;
    let events: Vec<Event> = (0..3).map(event).collect();
    commit_events(&pool, &outbox, &events).await;
    until_status(&relay, "waiting on the blocked broker", |s| {
        s.state == RelayState::WaitingForBroker && s.failed_publishes > 0
    })
    .await;
    assert_eq!(outbox_rows(&pool, &tables).await, 3);
    assert_eq!(sink.sink.status().pending_events, 0);
    sink.faults.set_blocked(false);
    sink.until_received(&events.iter().map(Event::id).collect::<Vec<_>>())
        .await;
    relay.shutdown().await;
}
