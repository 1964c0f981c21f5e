//! The relay's publishing loop: take a batch, send it, finish the one
//! before; back off after a failure.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use flow_events_core::{
    ConnectionMonitor, ConnectionState, Event, PublishError, PublishErrorKind, Resilient, SentBatch,
};
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::status::{RelayState, RelayStatus};
use crate::error::{Error, Result};
use crate::tables::Tables;

pub(crate) struct Ctx {
    pub(super) pool: PgPool,
    pub(super) sink: Resilient,
    pub(super) settings: Settings,
    pub(super) status: Arc<watch::Sender<RelayStatus>>,
    pub(super) cancel: CancellationToken,
    pub(super) wake: Notify,
    pub(super) channel: String,
    pub(super) select: String,
    pub(super) delete: String,
    pub(super) retry: String,
    pub(super) dead: String,
    pub(super) measure: String,
}

impl Ctx {
    pub(crate) fn new(
        pool: PgPool,
        tables: &Tables,
        sink: Resilient,
        settings: Settings,
        status: Arc<watch::Sender<RelayStatus>>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        let outbox = tables.outbox();
        Arc::new(Self {
            pool,
            sink,
            settings,
            status,
            cancel,
            wake: Notify::new(),
            channel: tables.channel(),
            // No "id > last seen" cursor: every committed row not yet
            // deleted is a candidate, so a row whose transaction took its id
            // early and committed late is never skipped.
            select: format!(
                "SELECT id, body, attempts, \
                 extract(epoch FROM clock_timestamp() - enqueued_at)::float8 AS age \
                 FROM {outbox} WHERE dead_reason IS NULL \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            delete: format!("DELETE FROM {outbox} WHERE id = ANY($1)"),
            retry: format!(
                "UPDATE {outbox} SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)"
            ),
            dead: format!(
                "UPDATE {outbox} AS o SET dead_reason = d.reason, attempts = o.attempts + 1 \
                 FROM unnest($1::int8[], $2::text[]) AS d(id, reason) WHERE o.id = d.id"
            ),
            measure: format!(
                "SELECT count(*) FILTER (WHERE dead_reason IS NULL), \
                 count(*) FILTER (WHERE dead_reason IS NOT NULL), \
                 extract(epoch FROM clock_timestamp() - min(enqueued_at) FILTER (WHERE dead_reason IS NULL))::float8 \
                 FROM {outbox}"
            ),
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.settings.name
    }

    fn set_state(&self, state: RelayState) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }

    /// A delay before the next try after `failures` failed rounds in a row:
    /// `min * 2^(failures-1)` capped at `max`, half of it fixed and half
    /// drawn at random (so relays that failed together spread out, and no
    /// draw comes close to zero).
    pub(super) fn backoff(&self, failures: u32) -> Duration {
        let Settings {
            min_backoff,
            max_backoff,
            ..
        } = self.settings;
        let exp = min_backoff.saturating_mul(1 << failures.saturating_sub(1).min(20));
        let ceiling = exp.min(max_backoff);
        ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
    }

    /// Waits after `failures` failed rounds; false if the relay is stopped
    /// meanwhile. While the broker blocks publishers (a resource alarm: the
    /// sink stays connected), the wait ends as soon as the block lifts,
    /// checked every 50 ms, instead of at the end of a backoff that may have
    /// grown to seconds.
    async fn back_off(&self, failures: u32) -> bool {
        let delay = self.backoff(failures);
        if !self.sink.status().blocked {
            self.set_state(RelayState::BackingOff);
            return self.pause(delay).await;
        }
        self.set_state(RelayState::WaitingForBroker);
        let deadline = Instant::now() + self.settings.max_backoff;
        while self.sink.status().blocked && Instant::now() < deadline {
            if !self.pause(Duration::from_millis(50)).await {
                return false;
            }
        }
        true
    }

    /// Sleeps for `d`; false if the relay is stopped meanwhile.
    pub(super) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

/// What finishing a batch did.
#[derive(Debug, Default)]
struct Round {
    /// Rows whose publish failed and that stay for a retry.
    failed: usize,
}

/// A batch taken and sent, its confirms to come: the transaction holds the
/// rows' locks until it commits their deletion.
struct Sent {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// Row id, attempts before this one, age when taken (seconds).
    meta: Vec<(i64, i32, f64)>,
    dead: Vec<(i64, String)>,
    batch: SentBatch,
    taken_at: Instant,
    taken: usize,
}

/// The relay task. One batch may be in flight (sent, confirms awaited)
/// while the next is taken and sent behind it, so the broker is kept busy
/// while a batch's deletions commit; the next batch is sent after the one
/// before on the same session, so the order holds.
pub(crate) async fn run(ctx: Arc<Ctx>) {
    let listener = tokio::spawn(super::listen::listen(ctx.clone()));
    let measurer = tokio::spawn(super::measure::measure(ctx.clone()));
    let mut state = ctx.sink.watch_state();
    let mut failures: u32 = 0;
    let mut in_flight: Option<Sent> = None;
    tracing::info!(relay = %ctx.name(), channel = %ctx.channel, "outbox relay started");
    loop {
        if ctx.cancel.is_cancelled() {
            break;
        }
        if *state.borrow_and_update() != ConnectionState::Connected {
            if let Some(sent) = in_flight.take() {
                let _ = finish(&ctx, sent).await;
            }
            ctx.set_state(RelayState::WaitingForBroker);
            tracing::debug!(relay = %ctx.name(), "waiting for the broker");
            let connected = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => break,
                r = state.wait_for(|s| *s == ConnectionState::Connected) => r.is_ok(),
            };
            if !connected {
                tracing::warn!(relay = %ctx.name(), "the event sink is gone; the relay stops");
                break;
            }
        }
        let next = take_and_send(&ctx).await;
        let previous = match in_flight.take() {
            Some(sent) => Some(finish(&ctx, sent).await),
            None => None,
        };
        let mut error = None;
        let mut failed = false;
        match previous {
            Some(Ok(r)) => failed |= r.failed > 0,
            Some(Err(e)) => error = Some(e),
            None => {}
        }
        match next {
            Ok(Some(sent)) => in_flight = Some(sent),
            Ok(None) => {}
            Err(e) => error = Some(e),
        }
        if failed || error.is_some() {
            if let Some(sent) = in_flight.take() {
                match finish(&ctx, sent).await {
                    Ok(_) => {}
                    Err(e) => error = Some(e),
                }
            }
            failures = failures.saturating_add(1);
            if let Some(e) = &error {
                tracing::warn!(relay = %ctx.name(), error = %e, "outbox relay round failed: {e}");
                ctx.status
                    .send_modify(|s| s.last_error = Some(e.to_string()));
            }
            if !ctx.back_off(failures).await {
                break;
            }
            continue;
        }
        failures = 0;
        if in_flight.is_some() {
            // Rows were taken: more may be waiting; the next round takes
            // them and finishes this batch.
            continue;
        }
        ctx.set_state(RelayState::Idle);
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => break,
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(ctx.settings.poll_interval) => {}
        }
    }
    if let Some(sent) = in_flight.take() {
        let _ = finish(&ctx, sent).await;
    }
    ctx.cancel.cancel();
    let _ = listener.await;
    let _ = measurer.await;
    ctx.set_state(RelayState::Stopped);
    tracing::info!(relay = %ctx.name(), "outbox relay stopped");
}

/// Takes up to a batch of committed rows (locking them, skipping rows
/// another relay or the batch in flight holds) and sends their events.
/// `None` when no row is waiting.
async fn take_and_send(ctx: &Ctx) -> Result<Option<Sent>> {
    let mut tx = ctx.pool.begin().await?;
    let rows = sqlx::query(&ctx.select)
        .bind(i64::try_from(ctx.settings.batch_size).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(None);
    }
    ctx.set_state(RelayState::Publishing);
    let taken_at = Instant::now();
    let taken = rows.len();
    let mut meta: Vec<(i64, i32, f64)> = Vec::with_capacity(taken);
    let mut events: Vec<Event> = Vec::with_capacity(taken);
    let mut dead: Vec<(i64, String)> = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let body: String = row.try_get("body")?;
        let attempts: i32 = row.try_get("attempts")?;
        let age: f64 = row.try_get("age")?;
        match serde_json::from_str::<Event>(&body) {
            Ok(event) => {
                meta.push((id, attempts, age));
                events.push(event);
            }
            Err(e) => {
                tracing::error!(
                    relay = %ctx.name(), row = id, error = %e,
                    "outbox row {id} is not a readable event, marking it dead: {e}"
                );
                dead.push((id, format!("unreadable event: {e}")));
            }
        }
    }
    let batch = ctx.sink.send_confirmed_batch(events).await;
    Ok(Some(Sent {
        tx,
        meta,
        dead,
        batch,
        taken_at,
        taken,
    }))
}

/// Awaits a sent batch's confirms, deletes the confirmed rows, marks the
/// refused ones dead, counts the failed ones for a retry, and commits.
async fn finish(ctx: &Ctx, sent: Sent) -> Result<Round> {
    let Sent {
        mut tx,
        meta,
        mut dead,
        batch,
        taken_at,
        taken,
    } = sent;
    let results = batch.confirmed().await;

    let mut confirmed: Vec<i64> = Vec::with_capacity(taken);
    let mut retry: Vec<i64> = Vec::new();
    let mut retried = 0u64;
    let mut lag = None;
    let mut last_error = None;
    for ((id, attempts, age), result) in meta.into_iter().zip(results) {
        match result {
            Ok(()) => {
                confirmed.push(id);
                if attempts > 0 {
                    retried += 1;
                }
                lag = Some(Duration::from_secs_f64(age.max(0.0)) + taken_at.elapsed());
            }
            Err(e) => match dead_reason(&e, attempts, ctx.settings.max_nacks) {
                Some(reason) => {
                    tracing::error!(
                        relay = %ctx.name(), row = id, id = %e.event().id(),
                        event_type = %e.event().event_type(),
                        "outbox event {} ({}) given up, the row stays marked dead: {reason}",
                        e.event().id(), e.event().event_type()
                    );
                    dead.push((id, reason));
                }
                None => {
                    tracing::debug!(relay = %ctx.name(), row = id, error = %e, "publish failed, the row stays for a retry");
                    last_error = Some(describe(&e));
                    retry.push(id);
                }
            },
        }
    }

    let recorded = async {
        if !confirmed.is_empty() {
            sqlx::query(&ctx.delete)
                .bind(&confirmed)
                .execute(&mut *tx)
                .await?;
        }
        if !retry.is_empty() {
            sqlx::query(&ctx.retry)
                .bind(&retry)
                .bind(last_error.as_deref())
                .execute(&mut *tx)
                .await?;
        }
        if !dead.is_empty() {
            let (ids, reasons): (Vec<i64>, Vec<String>) = dead.iter().cloned().unzip();
            sqlx::query(&ctx.dead)
                .bind(ids)
                .bind(reasons)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
    .await;
    if let Err(e) = recorded {
        // The confirmed events stay in the table and go out again.
        let n = confirmed.len() as u64;
        ctx.status.send_modify(|s| s.unrecorded += n);
        tracing::warn!(
            relay = %ctx.name(), confirmed = n, error = %e,
            "{n} confirmed outbox rows could not be deleted; they will be published again"
        );
        return Err(Error::Database(e));
    }

    ctx.status.send_modify(|s| {
        s.published += confirmed.len() as u64;
        s.retried += retried;
        s.failed_publishes += retry.len() as u64;
        s.marked_dead += dead.len() as u64;
        s.batches += 1;
        if lag.is_some() {
            s.last_publish_lag = lag;
            s.last_published_at = Some(Utc::now());
        }
        s.last_error = last_error.clone();
    });
    Ok(Round {
        failed: retry.len(),
    })
}

/// Why a failed row is given up, or `None` to retry it.
fn dead_reason(e: &PublishError, attempts: i32, max_nacks: i32) -> Option<String> {
    match e.kind() {
        PublishErrorKind::Refused | PublishErrorKind::TooLarge { .. } => Some(describe(e)),
        PublishErrorKind::Nacked if attempts.saturating_add(1) >= max_nacks => Some(format!(
            "nacked by the broker {} times",
            attempts.saturating_add(1)
        )),
        _ => None,
    }
}

/// The error and its backend cause, without the payload.
fn describe(e: &PublishError) -> String {
    match e.backend_error() {
        Some(cause) => format!("{}: {cause}", e.kind()),
        None => e.kind().to_string(),
    }
}
