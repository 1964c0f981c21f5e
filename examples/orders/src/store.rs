//! The order tables and the transaction that writes an order and its event.

use flow_events_core::{Event, EventId};
use flow_events_postgres::sqlx::{self, PgPool};
use flow_events_postgres::{Outbox, Tables};

/// The example's own tables beside the outbox and inbox: orders, and the
/// order count of each customer.
#[derive(Debug, Clone)]
pub struct OrderStore {
    /// The orders table, quoted.
    pub orders: String,
    /// The per-customer counts table, quoted.
    pub counts: String,
    /// The outbox.
    pub outbox: Outbox,
}

impl OrderStore {
    /// The tables of `tables`' prefix.
    pub fn new(tables: &Tables) -> Self {
        Self {
            orders: format!("\"{}_orders\"", tables.prefix()),
            counts: format!("\"{}_customer_counts\"", tables.prefix()),
            outbox: Outbox::new(tables),
        }
    }

    /// Creates the example's tables if missing (the outbox and inbox come
    /// from `flow_events_postgres::migrate`).
    pub async fn create_tables(&self, pool: &PgPool) -> sqlx::Result<()> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (\
                 id uuid PRIMARY KEY, customer text NOT NULL, amount_cents bigint NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT now()); \
             CREATE TABLE IF NOT EXISTS {} (customer text PRIMARY KEY, orders bigint NOT NULL)",
            self.orders, self.counts
        );
        let mut conn = pool.acquire().await?;
        sqlx::Executor::execute(&mut *conn, sql.as_str()).await?;
        Ok(())
    }

    /// Drops the example's tables.
    pub async fn drop_tables(&self, pool: &PgPool) -> sqlx::Result<()> {
        let sql = format!("DROP TABLE IF EXISTS {}, {}", self.orders, self.counts);
        let mut conn = pool.acquire().await?;
        sqlx::Executor::execute(&mut *conn, sql.as_str()).await?;
        Ok(())
    }
}

/// The `order.created` event of an order.
fn order_created(order_id: &str, customer: &str, amount_cents: i64) -> anyhow::Result<Event> {
    Ok(Event::try_new(
        "order.created",
        serde_json::json!({
            "order_id": order_id, "customer": customer, "amount_cents": amount_cents,
        }),
    )?)
}

/// Writes the order and its `order.created` event in one transaction.
/// Returns the order id and the event id once committed.
pub async fn create_order(
    pool: &PgPool,
    store: &OrderStore,
    customer: &str,
    amount_cents: i64,
) -> anyhow::Result<(String, EventId)> {
    let written = write_order(pool, store, customer, amount_cents).await?;
    written.tx.commit().await?;
    Ok((written.order_id, written.event_id))
}

/// Writes an order and its event, then rolls the transaction back (as a
/// failed validation after the writes would): neither ever exists. Returns
/// the order id that was rolled back.
pub async fn rolled_back_order(
    pool: &PgPool,
    store: &OrderStore,
    customer: &str,
    amount_cents: i64,
) -> anyhow::Result<String> {
    let written = write_order(pool, store, customer, amount_cents).await?;
    written.tx.rollback().await?;
    Ok(written.order_id)
}

/// An order and its event written in a transaction not yet ended.
struct Written {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    order_id: String,
    event_id: EventId,
}

/// Writes a new order and its `order.created` event in a new transaction,
/// which the caller commits or rolls back.
async fn write_order(
    pool: &PgPool,
    store: &OrderStore,
    customer: &str,
    amount_cents: i64,
) -> anyhow::Result<Written> {
    let order_id = uuid::Uuid::now_v7().to_string();
    let event = order_created(&order_id, customer, amount_cents)?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO {} (id, customer, amount_cents) VALUES ($1::uuid, $2, $3)",
        store.orders
    ))
    .bind(&order_id)
    .bind(customer)
    .bind(amount_cents)
    .execute(&mut *tx)
    .await?;
    store.outbox.enqueue(&mut tx, &event).await?;
    Ok(Written {
        tx,
        order_id,
        event_id: event.id(),
    })
}
