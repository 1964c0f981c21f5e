//! Helpers shared by the example's tests: the database they use, and the
//! clean-up of the tables a test made.
#![allow(dead_code, unreachable_pub)]

use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::{Tables, drop_tables};
use flow_events_testkit::cleanup::OnDrop;
use orders::OrderStore;
use orders::settings::ENV_DATABASE_URL;

/// The database of the tests: `DATABASE_URL`, by default the local `test`
/// database.
pub fn database_url() -> String {
    std::env::var(ENV_DATABASE_URL)
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether the database of [`database_url`] answers; see
/// [`flow_events_testkit::server::reachable`].
pub fn database_reachable(test: &str) -> bool {
    let url = database_url();
    let addr = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .replace("localhost", "127.0.0.1");
    flow_events_testkit::server::reachable("PostgreSQL", &addr, test)
}

/// Drops, when dropped (on a panic too), the example's tables and the
/// outbox tables of `tables`.
pub fn drop_tables_at_end(tables: Tables) -> OnDrop {
    OnDrop::new(async move {
        let url = database_url();
        let connecting = PgPoolOptions::new().max_connections(1).connect(&url);
        if let Ok(pool) = connecting.await {
            let _ = OrderStore::new(&tables).drop_tables(&pool).await;
            let _ = drop_tables(&pool, &tables).await;
        }
    })
}
