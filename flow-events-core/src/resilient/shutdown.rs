//! Shutdown: stops taking events, lets what is pending and what is in flight
//! finish within a grace period, and hands back the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::Event;

use super::service::Resilient;

/// What [`Resilient::shutdown`] left undelivered.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events still pending when the grace period ended, in publish order:
    /// queued, waiting to be retried, or sent without the broker's answer.
    /// They were not delivered as far as anything can tell. With a durable
    /// store they are still in it and go out first on the next start;
    /// without one, persist or log them.
    pub remaining: Vec<Event>,
    /// Direct publishes still awaiting the broker's confirm when the grace
    /// period ended (at most the confirm wait's worth). Their callers are
    /// answered `Confirmed` if the confirm comes, and get their event back
    /// with `ShuttingDown` if it does not: none of them is lost.
    pub unanswered: usize,
}

impl Resilient {
    /// Stops taking events (`publish` answers `ShuttingDown` and hands the
    /// event back), waits at most `grace` for the buffer to drain and for the
    /// direct publishes in flight to be answered, stops the supervisor and
    /// the consumers, and hands back what is left.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &*self.shared;
        shared.closing.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            let idle = shared.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            let direct = shared.direct_in_flight.load(Ordering::SeqCst);
            if direct == 0 && shared.lock().buffer.is_idle() {
                break;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.stop_supervisor().await;
        let (remaining, unanswered) = {
            let mut inner = shared.lock();
            // From now on nothing is buffered: a direct publish that ends
            // without a confirm hands its event back.
            inner.closed = true;
            let remaining: Vec<Event> = inner
                .buffer
                .drain_all()
                .into_iter()
                .map(|p| Arc::unwrap_or_clone(p.event))
                .collect();
            (remaining, shared.direct_in_flight.load(Ordering::SeqCst))
        };
        if unanswered > 0 {
            tracing::warn!(
                unanswered,
                "{unanswered} publishes still await the broker's confirm; their callers get the \
                 event back unless it comes"
            );
        }
        if remaining.is_empty() {
            tracing::info!("shut down with no pending events");
        } else if let Some(store) = &shared.store {
            tracing::warn!(
                remaining = remaining.len(), store = %store.describe(),
                "shut down with {} pending events not delivered; they stay in the store for the next start",
                remaining.len()
            );
        } else {
            tracing::warn!(
                remaining = remaining.len(),
                "shut down with {} pending events not delivered",
                remaining.len()
            );
        }
        for event in remaining.iter().take(LISTED) {
            tracing::debug!(id = %event.id(), event_type = %event.event_type(), "not delivered");
        }
        ShutdownReport {
            remaining,
            unanswered,
        }
    }
}

/// Undelivered events named one by one in the debug log at shutdown.
const LISTED: usize = 100;
