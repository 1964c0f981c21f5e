//! `Inbox::claim`: the ids of handled events, recorded in the handler's
//! transaction, so that a redelivered event has its effect once.

use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{Delivery, EventId};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::tables::Tables;

/// Rows deleted per statement by [`Inbox::purge`], so that a large purge
/// never holds a long transaction.
const PURGE_CHUNK: i64 = 10_000;

/// The handled ids of one consumer (a subscription, say): each consumer
/// claims each event id once.
///
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inbox {
    consumer: Arc<str>,
    insert: Arc<str>,
    purge: Arc<str>,
}

impl Inbox {
    /// The inbox of `consumer` in the table of `tables`. Consumers sharing a
    /// table keep apart: an id claimed by one is still new to another.
    pub fn new(tables: &Tables, consumer: impl Into<String>) -> Self {
        let inbox = tables.inbox();
        Self {
            consumer: consumer.into().into(),
            insert: format!(
                "INSERT INTO {inbox} (consumer, event_id) VALUES ($1, $2::uuid) ON CONFLICT DO NOTHING"
            )
            .into(),
            purge: format!(
                "DELETE FROM {inbox} WHERE ctid = ANY(ARRAY(\
                 SELECT ctid FROM {inbox} WHERE consumer = $1 \
                 AND handled_at < clock_timestamp() - make_interval(secs => $2) LIMIT $3))"
            )
            .into(),
        }
    }

    /// The consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Claims `delivery`'s event for this consumer through `conn`: `true` the
    /// first time, `false` for an id already handled. Pass the transaction
    /// that carries out the handler's writes (`&mut tx`): the claim commits
    /// with them, or rolls back with them and the event can be handled again.
    ///
    /// Two transactions claiming the same id at once: the second waits for
    /// the first, then gets `false` if it committed, `true` if it rolled back.
    pub async fn claim(&self, conn: &mut PgConnection, delivery: &Delivery) -> Result<bool> {
        self.claim_id(conn, delivery.event().id()).await
    }

    /// [`Inbox::claim`] by event id.
    pub async fn claim_id(&self, conn: &mut PgConnection, id: EventId) -> Result<bool> {
        let done = sqlx::query(&self.insert)
            .bind(&*self.consumer)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets the ids this consumer handled more than `older_than` ago, in
    /// chunks; returns how many. An event redelivered after its id was
    /// forgotten is handled again: keep ids longer than any redelivery can
    /// come (the broker's message TTL, the outbox's longest backlog).
    pub async fn purge(&self, pool: &PgPool, older_than: Duration) -> Result<u64> {
        let mut total = 0;
        loop {
            let done = sqlx::query(&self.purge)
                .bind(&*self.consumer)
                .bind(older_than.as_secs_f64())
                .bind(PURGE_CHUNK)
                .execute(pool)
                .await?;
            total += done.rows_affected();
            // Bounded: each round deletes rows, and stops at a short chunk.
            if done.rows_affected() < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Purges ids older than `keep_for` every `every`, in a task that stops
    /// when the returned handle is dropped. Failures are logged and retried
    /// at the next round.
    pub fn start_cleanup(&self, pool: PgPool, keep_for: Duration, every: Duration) -> Cleanup {
        let cancel = CancellationToken::new();
        let inbox = self.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match inbox.purge(&pool, keep_for).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::debug!(consumer = %inbox.consumer, purged = n, "purged handled event ids")
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %inbox.consumer, error = %e, "could not purge handled event ids: {e}")
                    }
                }
            }
        });
        Cleanup { cancel }
    }
}

/// Stops the inbox clean-up task when dropped.
#[derive(Debug)]
pub struct Cleanup {
    cancel: CancellationToken,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
