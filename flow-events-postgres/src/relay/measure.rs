//! The relay's measurer task: the table's figures in the status.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::Row;

use super::worker::Ctx;

/// Measures the rows waiting, the dead rows and the oldest age every status
/// interval.
pub(crate) async fn measure(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(ctx.settings.status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let measured = sqlx::query(&ctx.measure).fetch_one(&ctx.pool).await;
        let figures = measured.and_then(|row| {
            Ok((
                row.try_get::<i64, _>(0)?,
                row.try_get::<i64, _>(1)?,
                row.try_get::<Option<f64>, _>(2)?,
            ))
        });
        match figures {
            Ok((waiting, dead, oldest)) => ctx.status.send_modify(|s| {
                s.rows_waiting = Some(u64::try_from(waiting).unwrap_or(0));
                s.dead_rows = Some(u64::try_from(dead).unwrap_or(0));
                s.oldest_waiting_age = oldest.map(|secs| Duration::from_secs_f64(secs.max(0.0)));
                s.measured_at = Some(Utc::now());
            }),
            Err(e) => {
                tracing::debug!(relay = %ctx.name(), error = %e, "cannot measure the outbox");
                ctx.status.send_modify(|s| s.rows_waiting = None);
            }
        }
    }
}
