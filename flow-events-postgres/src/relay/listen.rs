//! The relay's listener task: `LISTEN` on the outbox channel, a wake-up of
//! the publishing loop on every notification.

use std::sync::Arc;

use sqlx::postgres::PgListener;

use super::worker::Ctx;
use crate::error::Result;

/// Listens on the outbox channel and wakes the loop on every notification
/// (and after every reconnection, for what was missed meanwhile).
pub(crate) async fn listen(ctx: Arc<Ctx>) {
    let mut failures: u32 = 0;
    loop {
        let connected = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            r = connect_listener(&ctx) => r,
        };
        match connected {
            Ok(mut listener) => {
                failures = 0;
                ctx.status.send_modify(|s| s.listening = true);
                ctx.wake.notify_one();
                loop {
                    let next = tokio::select! {
                        _ = ctx.cancel.cancelled() => return,
                        n = listener.try_recv() => n,
                    };
                    match next {
                        Ok(Some(_)) => ctx.wake.notify_one(),
                        Ok(None) => {
                            tracing::debug!(relay = %ctx.name(), "outbox listener lost its connection");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(relay = %ctx.name(), error = %e, "outbox listener failed: {e}; polling meanwhile");
                            break;
                        }
                    }
                }
                ctx.status.send_modify(|s| s.listening = false);
            }
            Err(e) => {
                tracing::warn!(relay = %ctx.name(), error = %e, "cannot listen for outbox notifications: {e}; polling meanwhile");
            }
        }
        failures = failures.saturating_add(1);
        if !ctx.pause(ctx.backoff(failures)).await {
            return;
        }
    }
}

async fn connect_listener(ctx: &Ctx) -> Result<PgListener> {
    let mut listener = PgListener::connect_with(&ctx.pool).await?;
    listener.listen(&ctx.channel).await?;
    Ok(listener)
}
