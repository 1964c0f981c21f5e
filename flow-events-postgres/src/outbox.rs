//! `Outbox::enqueue`: an event written in the application's own transaction.

use std::sync::Arc;

use flow_events_core::Event;
use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::tables::Tables;

/// Writes events into the outbox table, in the caller's transaction.
///
/// Cheap to clone. The event is published by a [`Relay`](crate::Relay) once
/// the transaction commits, and never if it rolls back.
#[derive(Debug, Clone)]
pub struct Outbox {
    insert: Arc<str>,
    /// The insert and the notification in one statement (one round trip).
    insert_notify: Arc<str>,
    channel: Option<Arc<str>>,
}

impl Outbox {
    /// An outbox on the table of `tables`, notifying relays on commit.
    pub fn new(tables: &Tables) -> Self {
        let insert = format!(
            "INSERT INTO {} (event_id, event_type, body) VALUES ($1::uuid, $2, $3)",
            tables.outbox()
        );
        let insert_notify = format!("WITH inserted AS ({insert}) SELECT pg_notify($4, '')");
        Self {
            insert: insert.into(),
            insert_notify: insert_notify.into(),
            channel: Some(tables.channel().into()),
        }
    }

    /// Does not `NOTIFY` the relays: they find the rows at their next poll.
    /// `NOTIFY` takes a database-wide lock for a moment at commit, which can
    /// matter to a database committing many thousands of transactions a
    /// second; without it, latency is the relay's poll interval.
    pub fn without_notify(mut self) -> Self {
        self.channel = None;
        self
    }

    /// Inserts `event` into the outbox through `conn`: pass the transaction
    /// that writes the business data (`&mut tx`), so that the event exists
    /// if and only if that transaction commits. With notifications on (the
    /// default) it also notifies the relays, which PostgreSQL delivers at
    /// commit. On a connection outside a transaction the insert commits at once.
    pub async fn enqueue(&self, conn: &mut PgConnection, event: &Event) -> Result<()> {
        let body = serde_json::to_string(event).map_err(Error::Encode)?;
        let query = match &self.channel {
            Some(_) => sqlx::query(&self.insert_notify),
            None => sqlx::query(&self.insert),
        };
        let query = query
            .bind(event.id().to_string())
            .bind(event.event_type().as_str())
            .bind(body);
        let query = match &self.channel {
            Some(channel) => query.bind(&**channel),
            None => query,
        };
        query.execute(&mut *conn).await?;
        Ok(())
    }
}
