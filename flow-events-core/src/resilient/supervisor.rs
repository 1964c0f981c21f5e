//! The supervisor task: owns the connection, backs off, runs the drain.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use crate::backend::Session;
use crate::error::BackendError;
use crate::monitor::ConnectionState;

use super::backoff;
use super::drain::drain;
use super::shared::Shared;

/// A session shorter than this counts as a failed connection attempt: a
/// broker that accepts connections and then drops them at once gets the same
/// backoff as one that refuses them. Short, so that a node that dies under a
/// session that worked is left at once (a cluster's failover).
const SHORT_LIVED: Duration = Duration::from_secs(1);

/// Runs until the shared cancellation token fires.
pub(crate) async fn run(shared: Arc<Shared>) {
    let broker = shared.broker();
    let mut failures: u32 = 0;
    let mut ever_connected = false;
    loop {
        {
            let mut inner = shared.lock();
            shared.expire(&mut inner);
            shared.set_state(&mut inner, ConnectionState::Connecting);
        }
        let attempt = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            r = shared.backend.connect() => r,
        };
        let (error, short) = match attempt {
            Ok(session) => {
                on_connected(&shared, &session, ever_connected);
                ever_connected = true;
                let opened = Instant::now();
                let lost = drain(&shared, &session).await;
                on_lost(&shared, lost.as_ref());
                let Some(reason) = lost else {
                    session.close().await;
                    break;
                };
                let lasted = opened.elapsed();
                if lasted >= SHORT_LIVED {
                    failures = 0;
                    continue;
                }
                // Lost soon after it opened: whatever the cause, it counts
                // as a failed attempt, so that no cause can make a tight
                // reconnect loop.
                let error = BackendError::new(
                    reason.kind(),
                    format!("{reason} (the connection lasted {lasted:?})"),
                );
                (error, true)
            }
            Err(error) => (error, false),
        };
        failures = failures.saturating_add(1);
        let max = shared.config.max_retries();
        let kind = error.kind();
        let error_text = error.to_string();
        let now_failed = {
            let mut inner = shared.lock();
            inner.reconnect_attempts = failures;
            inner.last_error = Some(error_text.clone());
            // Kept whole for a required start that gives up (its source).
            inner.connect_error = Some(error);
            if failures >= max {
                shared.set_state(&mut inner, ConnectionState::Failed);
            }
            // Logged once, when the retries are spent; later probes log at debug.
            failures == max
        };
        let error = error_text;
        if short {
            tracing::warn!(
                attempt = failures, error = %error,
                "the connection to {broker} was lost soon after it opened; counted as failed \
                 attempt {failures}, the next one waits for the backoff"
            );
        } else if failures == 1 {
            tracing::warn!(error = %error, kind = ?kind, "failed to connect to {broker}: {error}");
            if !ever_connected && !shared.config.required() {
                tracing::info!(
                    "service will continue without {broker}; events are buffered until it is reachable"
                );
            }
        } else if now_failed {
            tracing::error!(
                attempts = failures, error = %error,
                "failed to connect to {broker} after {failures} attempts: {error}; \
                 continuing without {broker} and probing every {:?} at most",
                shared.config.max_retry_delay()
            );
        } else {
            tracing::debug!(attempt = failures, error = %error, "failed to connect to {broker}");
        }
        let delay = backoff::delay(
            shared.config.retry_delay(),
            shared.config.max_retry_delay(),
            failures,
        );
        tracing::debug!(?delay, "next connection attempt");
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    let mut inner = shared.lock();
    shared.set_session(&mut inner, None);
    shared.set_state(&mut inner, ConnectionState::Disconnected);
}

fn on_connected(shared: &Shared, session: &Arc<dyn Session>, reconnect: bool) {
    let (pending, url) = {
        let mut inner = shared.lock();
        shared.set_session(&mut inner, Some(session.clone()));
        inner.reconnect_attempts = 0;
        inner.connect_error = None;
        inner.last_connected = Some(Utc::now());
        shared.set_state(&mut inner, ConnectionState::Connected);
        (inner.buffer.len(), shared.url())
    };
    if reconnect {
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(
        url = %url, pending,
        "connected to {} at {url}", shared.broker()
    );
}

/// The session is gone (`lost`: why; `None`: shutdown). What was in flight
/// on it goes back into the buffer, in order: it is published again on the
/// next session (at-least-once).
fn on_lost(shared: &Shared, lost: Option<&BackendError>) {
    let (requeued, pending) = {
        let mut inner = shared.lock();
        shared.set_session(&mut inner, None);
        inner.blocked = false;
        shared.blocked_now.store(false, Ordering::SeqCst);
        shared.unstall_quietly(&mut inner);
        if let Some(reason) = lost {
            inner.last_error = Some(reason.to_string());
        }
        shared.set_state(&mut inner, ConnectionState::Disconnected);
        (inner.buffer.requeue_in_flight(), inner.buffer.len())
    };
    if let Some(reason) = lost {
        let broker = shared.broker();
        tracing::warn!(
            error = %reason, pending, requeued,
            "lost connection to {broker}: {reason}; buffering events until it is back"
        );
    }
}
