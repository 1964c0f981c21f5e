//! The schema, shipped with the crate and applied on request.

use sqlx::{Executor, PgConnection, PgPool, Row};

use crate::error::Result;
use crate::tables::Tables;

/// The migrations, in order: version, name, SQL with `{outbox}`-style placeholders.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "outbox", include_str!("../migrations/0001_outbox.sql")),
    (2, "inbox", include_str!("../migrations/0002_inbox.sql")),
];

/// Key of the advisory lock that serialises migrations across processes.
const LOCK_KEY: &str = "flow-events-postgres migrations";

/// Creates or upgrades the outbox and inbox tables of `tables` (and their
/// schema). Idempotent and safe to call from several processes at once: an
/// advisory lock serialises them, and each migration is recorded in
/// `<prefix>_migrations` and applied once, all in one transaction. Returns
/// the versions applied by this call.
pub async fn migrate(pool: &PgPool, tables: &Tables) -> Result<Vec<i32>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    if let Some(schema) = tables.schema() {
        run(
            &mut tx,
            &format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""),
        )
        .await?;
    }
    let migrations = tables.migrations();
    run(
        &mut tx,
        &format!(
            "CREATE TABLE IF NOT EXISTS {migrations} (\
             version integer PRIMARY KEY, name text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now())"
        ),
    )
    .await?;
    let applied: Vec<i32> = sqlx::query(&format!("SELECT version FROM {migrations}"))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get::<i32, _>(0))
        .collect::<Result<_, _>>()?;
    let mut done = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if applied.contains(&version) {
            continue;
        }
        run(&mut tx, &tables.render(sql)).await?;
        sqlx::query(&format!(
            "INSERT INTO {migrations} (version, name) VALUES ($1, $2)"
        ))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        done.push(version);
    }
    tx.commit().await?;
    if !done.is_empty() {
        tracing::info!(outbox = %tables.outbox(), versions = ?done, "applied outbox and inbox migrations");
    }
    Ok(done)
}

/// Runs `sql` (one or more statements, no parameters) on `conn`.
async fn run(conn: &mut PgConnection, sql: &str) -> Result<()> {
    conn.execute(sql).await?;
    Ok(())
}

/// Drops the tables of `tables` (outbox, inbox, migrations); the schema
/// stays. For tests and for taking the feature out.
pub async fn drop_tables(pool: &PgPool, tables: &Tables) -> Result<()> {
    let sql = format!(
        "DROP TABLE IF EXISTS {}, {}, {}",
        tables.outbox(),
        tables.inbox(),
        tables.migrations()
    );
    let mut conn = pool.acquire().await?;
    run(&mut conn, &sql).await
}
