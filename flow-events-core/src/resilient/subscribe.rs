//! Subscriptions: one task per subscription consumes it on every session the
//! supervisor makes, until it is closed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::error::{BackendError, SubscribeError};
use crate::source::{EventSource, Handler, SubscriptionHandle};
use crate::subscription::Subscription;

use super::backoff;
use super::consumer::{Attempts, DedupWindow, Ended, Observed, consume};
use super::service::Resilient;
use super::shared::Shared;

/// A delivery stream shorter than this counts as a failure: subscribing again
/// waits for a growing backoff.
const SHORT_LIVED: Duration = Duration::from_secs(1);

#[async_trait]
impl EventSource for Resilient {
    async fn subscribe(
        &self,
        subscription: Subscription,
        handler: Arc<dyn Handler>,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        if self
            .shared
            .closing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(SubscribeError::ShuttingDown);
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let name = subscription.name().to_owned();
        let connected = self.shared.current_tx.borrow().session.is_some();
        let shared = self.shared.clone();
        let handle =
            SubscriptionHandle::spawn_with(name, self.shared.cancel.child_token(), |stop| {
                consumer_task(
                    shared,
                    subscription,
                    handler,
                    stop.token().clone(),
                    ready_tx,
                )
            });
        if connected {
            // Connected now: return once the backend has set the subscription up,
            // so an event published after this call reaches it.
            match timeout(self.shared.config.publish_timeout(), ready_rx).await {
                Ok(Ok(Err(e))) if !e.is_retryable() => {
                    handle.close().await;
                    return Err(SubscribeError::Backend(e));
                }
                _ => {}
            }
        }
        Ok(handle)
    }
}

/// Consumes a subscription on every session the supervisor makes, until cancelled.
async fn consumer_task(
    shared: Arc<Shared>,
    subscription: Subscription,
    handler: Arc<dyn Handler>,
    cancel: CancellationToken,
    ready: oneshot::Sender<Result<(), BackendError>>,
) {
    let name = subscription.name().to_owned();
    let mut current = shared.current_tx.subscribe();
    let mut ready = Some(ready);
    let mut used_generation = 0;
    let dedup = Arc::new(Mutex::new(DedupWindow::new(subscription.dedup_window())));
    let attempts = Arc::new(Mutex::new(Attempts::default()));
    let observed = Observed::new(subscription.name(), shared.backend.clone());
    let base = shared.config.retry_delay().min(SHORT_LIVED);
    let mut failures: u32 = 0;
    loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            c = current.wait_for(|c| c.session.is_some() && c.generation > used_generation) => match c {
                Ok(c) => c.clone(),
                Err(_) => return,
            },
        };
        let Some(session) = next.session else {
            continue;
        };
        used_generation = next.generation;
        let subscribed = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            r = session.subscribe(&subscription) => r,
        };
        match subscribed {
            Ok(stream) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                tracing::debug!(subscription = %name, pattern = %subscription.pattern(), "consuming");
                let started = Instant::now();
                let ended = consume(
                    stream,
                    handler.clone(),
                    &subscription,
                    (&dedup, &attempts),
                    &cancel,
                    &observed,
                )
                .await;
                if ended == Ended::Cancelled {
                    return;
                }
                if started.elapsed() >= SHORT_LIVED {
                    failures = 0;
                } else {
                    failures = failures.saturating_add(1);
                }
                tracing::debug!(subscription = %name, "consumer stream ended; subscribing again");
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    subscription = %name, error = %e,
                    "could not subscribe: {e}; retrying"
                );
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(e));
                }
            }
        }
        // Subscribe again: on a new session at once, on the same one (its
        // channel or its consuming connection was lost, or subscribing
        // failed) after a backoff that grows while it keeps failing.
        let delay = match failures {
            0 => Duration::ZERO,
            n => backoff::delay(base, shared.config.max_retry_delay(), n),
        };
        let generation = used_generation;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => used_generation = generation.saturating_sub(1),
            _ = current.wait_for(|c| c.generation != generation) => {}
        }
    }
}
