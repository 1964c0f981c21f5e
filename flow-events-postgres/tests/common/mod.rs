//! Helpers shared by the integration tests: the database check, a table
//! prefix of the test's own that is dropped at the end, waiting on state.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod sink;

use std::time::Duration;

use flow_events_postgres::sqlx::PgPool;
use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::{Tables, drop_tables, migrate};
use flow_events_testkit::server::reachable;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const BROKER: &str = "127.0.0.1:5672";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Longest wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Whether PostgreSQL is reachable. Not reachable: fails under `CI=true`,
/// otherwise prints why the test is skipped.
pub fn database_available(test: &str) -> bool {
    let url = database_url();
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .replace("localhost", "127.0.0.1");
    reachable("PostgreSQL", &host_port, test)
}

/// Whether RabbitMQ is reachable (same rules).
pub fn broker_available(test: &str) -> bool {
    reachable("RabbitMQ", BROKER, test)
}

/// Returns from the test when PostgreSQL is not there (outside CI).
#[macro_export]
macro_rules! require_database {
    ($name:expr) => {
        if !common::database_available($name) {
            return;
        }
    };
}

pub async fn pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&database_url())
        .await
        .expect("connect to PostgreSQL")
}

/// A table prefix unique to this test run.
pub fn unique_prefix(test: &str) -> String {
    let short: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("t_{}_{:08x}", short.to_lowercase(), fastrand::u32(..))
}

/// The test's own tables, migrated; dropped when this is dropped (also on a panic).
pub struct TestTables {
    pub tables: Tables,
}

impl TestTables {
    pub async fn new(pool: &PgPool, test: &str) -> Self {
        let tables = Tables::new(&unique_prefix(test)).unwrap();
        migrate(pool, &tables).await.expect("migrate");
        Self { tables }
    }
}

impl std::ops::Deref for TestTables {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        &self.tables
    }
}

impl Drop for TestTables {
    fn drop(&mut self) {
        let tables = self.tables.clone();
        flow_events_testkit::cleanup::run_to_end(async move {
            let url = database_url();
            let connecting = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect(&url);
            match connecting.await {
                Ok(pool) => {
                    let _ = drop_tables(&pool, &tables).await;
                    pool.close().await;
                }
                Err(e) => eprintln!("clean-up: tables {} are left: {e}", tables.outbox()),
            }
        });
    }
}

/// Rows in the outbox (dead ones included).
pub async fn outbox_rows(pool: &PgPool, tables: &Tables) -> i64 {
    use flow_events_postgres::sqlx::Row;
    flow_events_postgres::sqlx::query(&format!("SELECT count(*) FROM {}", tables.outbox()))
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

/// Polls `check` every 10 ms until it holds; panics naming `what` after `limit`.
pub async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deletes, when dropped (also on a panic), the AMQP exchanges and queues a
/// test declared on the broker at [`AMQP_URL`].
pub fn amqp_cleanup() -> flow_events_testkit::amqp::Cleanup {
    flow_events_testkit::amqp::Cleanup::new(AMQP_URL)
}
