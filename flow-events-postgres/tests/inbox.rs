//! The inbox and the migrations against the local PostgreSQL.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use flow_events_core::{Delivery, Event};
use flow_events_postgres::sqlx::{self, Row};
use flow_events_postgres::{Inbox, Tables, drop_tables, migrate};

use common::{TestTables, WAIT, until};

fn delivery() -> Delivery {
    Delivery::new(
        Event::try_new("order.created", serde_json::json!({})).unwrap(),
        false,
        1,
    )
}

#[tokio::test]
async fn a_claim_holds_once_committed_and_not_after_a_rollback() {
    require_database!("a_claim_holds_once_committed_and_not_after_a_rollback");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "claim").await;
    let inbox = Inbox::new(&tables, "counts");
    let d = delivery();

    let mut tx = pool.begin().await.unwrap();
    assert!(inbox.claim(&mut tx, &d).await.unwrap());
    tx.rollback().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    assert!(
        inbox.claim(&mut tx, &d).await.unwrap(),
        "rolled back: new again"
    );
    tx.commit().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    assert!(!inbox.claim(&mut tx, &d).await.unwrap(), "handled");
    tx.commit().await.unwrap();

    // Another consumer on the same table has not handled it.
    let other = Inbox::new(&tables, "audit");
    let mut tx = pool.begin().await.unwrap();
    assert!(other.claim(&mut tx, &d).await.unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_id_let_one_through() {
    require_database!("concurrent_claims_of_one_id_let_one_through");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "race").await;
    let inbox = Inbox::new(&tables, "counts");
    let d = delivery();

    let mut first = pool.begin().await.unwrap();
    assert!(inbox.claim(&mut first, &d).await.unwrap());
    // The second claim waits on the first transaction's insert.
    let second = tokio::spawn({
        let pool = pool.clone();
        let inbox = inbox.clone();
        let id = d.event().id();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let claimed = inbox.claim_id(&mut tx, id).await.unwrap();
            tx.commit().await.unwrap();
            claimed
        }
    });
    // Wait until the second is blocked on the first's lock, then commit the first.
    until("the second claim waits on a lock", WAIT, || async {
        let waiting: i64 = sqlx::query(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'",
        )
        .bind(tables.prefix())
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        waiting == 1
    })
    .await;
    first.commit().await.unwrap();
    assert!(!second.await.unwrap(), "the id was claimed by the first");
}

#[tokio::test]
async fn purge_forgets_old_ids_and_keeps_recent_ones() {
    require_database!("purge_forgets_old_ids_and_keeps_recent_ones");
    let pool = common::pool().await;
    let tables = TestTables::new(&pool, "purge").await;
    let inbox = Inbox::new(&tables, "counts");
    let other = Inbox::new(&tables, "audit");
    let mut tx = pool.begin().await.unwrap();
    for _ in 0..30 {
        assert!(inbox.claim(&mut tx, &delivery()).await.unwrap());
    }
    assert!(other.claim(&mut tx, &delivery()).await.unwrap());
    tx.commit().await.unwrap();
    // Twenty of this consumer's ids, and the other consumer's, are two days old.
    sqlx::query(&format!(
        "UPDATE {0} SET handled_at = handled_at - interval '2 days' \
         WHERE consumer = 'audit' OR event_id IN (SELECT event_id FROM {0} WHERE consumer = 'counts' LIMIT 20)",
        tables.inbox()
    ))
    .execute(&pool)
    .await
    .unwrap();
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(inbox.purge(&pool, day).await.unwrap(), 20);
    assert_eq!(inbox.purge(&pool, day).await.unwrap(), 0);
    let left: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT consumer, count(*) FROM {} GROUP BY consumer ORDER BY consumer",
        tables.inbox()
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(left, [("audit".to_owned(), 1), ("counts".to_owned(), 10)]);

    // The clean-up task does the same on its own.
    let _cleanup = other.start_cleanup(pool.clone(), day, Duration::from_millis(20));
    until("the other consumer's old id purged", WAIT, || async {
        let n: i64 = sqlx::query(&format!(
            "SELECT count(*) FROM {} WHERE consumer = 'audit'",
            tables.inbox()
        ))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
        n == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_safe_to_run_at_once() {
    require_database!("migrations_are_idempotent_and_safe_to_run_at_once");
    let pool = common::pool().await;
    let schema = common::unique_prefix("schema");
    let tables = Tables::new("app").unwrap().with_schema(&schema).unwrap();
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            let tables = tables.clone();
            tokio::spawn(async move { migrate(&pool, &tables).await.unwrap() })
        })
        .collect();
    let mut applied = Vec::new();
    for r in runs {
        applied.push(r.await.unwrap());
    }
    applied.sort();
    assert_eq!(applied, [vec![], vec![], vec![], vec![1, 2]]);
    assert!(migrate(&pool, &tables).await.unwrap().is_empty());
    let n: i64 =
        sqlx::query("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1")
            .bind(&schema)
            .fetch_one(&pool)
            .await
            .unwrap()
            .get(0);
    assert_eq!(n, 3, "outbox, inbox and migrations in the schema");
    drop_tables(&pool, &tables).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA \"{schema}\""))
        .execute(&pool)
        .await
        .unwrap();
}
