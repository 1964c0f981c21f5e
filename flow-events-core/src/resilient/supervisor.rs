//! The supervisor task: owns the connection, backs off, drains the buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::time::{Instant, timeout};

use crate::backend::Session;
use crate::error::BackendError;
use crate::monitor::ConnectionState;

use super::backoff;
use super::buffer::Pending;
use super::shared::{Current, Shared};

/// The broker's name in log lines, as the backend gives it.
pub(crate) fn broker_name(shared: &Shared) -> &'static str {
    shared.info.display_name
}

/// Runs until the shared cancellation token fires.
pub(crate) async fn run(shared: Arc<Shared>) {
    let broker = broker_name(&shared);
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
        match attempt {
            Ok(session) => {
                failures = 0;
                on_connected(&shared, &session, ever_connected);
                ever_connected = true;
                let lost = connected(&shared, &session).await;
                {
                    let mut inner = shared.lock();
                    inner.session = None;
                    inner.blocked = false;
                    if let Some(reason) = &lost {
                        inner.last_error = Some(reason.to_string());
                    }
                    shared.set_state(&mut inner, ConnectionState::Disconnected);
                }
                shared.current_tx.send_modify(|c| c.session = None);
                match lost {
                    Some(reason) => {
                        let pending = shared.lock().buffer.len();
                        tracing::warn!(
                            error = %reason, pending,
                            "lost connection to {broker}: {reason}; buffering events until it is back"
                        );
                    }
                    None => {
                        session.close().await;
                        break;
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let max = shared.config.max_retries();
                let now_failed = {
                    let mut inner = shared.lock();
                    inner.reconnect_attempts = failures;
                    inner.last_error = Some(error.to_string());
                    if failures >= max {
                        shared.set_state(&mut inner, ConnectionState::Failed);
                    }
                    // Logged once, when the retries are spent; later probes log at debug.
                    failures == max
                };
                if failures == 1 {
                    tracing::warn!(error = %error, kind = ?error.kind(), "failed to connect to {broker}: {error}");
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
        }
    }
    let mut inner = shared.lock();
    inner.session = None;
    shared.set_state(&mut inner, ConnectionState::Disconnected);
}

fn on_connected(shared: &Shared, session: &Arc<dyn Session>, reconnect: bool) {
    let (pending, url) = {
        let mut inner = shared.lock();
        inner.session = Some(session.clone());
        inner.reconnect_attempts = 0;
        inner.last_connected = Some(Utc::now());
        shared.set_state(&mut inner, ConnectionState::Connected);
        (inner.buffer.len(), shared.url(&inner))
    };
    if reconnect {
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    shared.current_tx.send_modify(|c: &mut Current| {
        c.generation += 1;
        c.session = Some(session.clone());
    });
    tracing::info!(
        url = %url, pending,
        "connected to {} at {url}", broker_name(shared)
    );
}

/// While connected: drains the buffer in order with a window of confirms in
/// flight, follows the broker's blocked flag, and returns the reason when the
/// session is lost (`None` on shutdown). Everything in flight when it returns
/// goes back into the buffer, in order.
async fn connected(shared: &Shared, session: &Arc<dyn Session>) -> Option<BackendError> {
    let window = shared.config.max_in_flight();
    let publish_timeout = shared.config.publish_timeout();
    let pause_after_failure = shared.config.retry_delay().min(Duration::from_secs(1));
    let mut closed = std::pin::pin!(session.closed());
    let mut blocked_rx = session.blocked();
    let mut blocked_live = true;
    set_blocked(shared, *blocked_rx.borrow_and_update());

    let mut in_flight: VecDeque<Pending> = VecDeque::new();
    let mut confirms = FuturesOrdered::new();
    let mut paused_until: Option<Instant> = None;
    let mut draining_logged = false;

    let lost = loop {
        // Fill the window from the buffer, oldest first.
        while in_flight.len() < window && paused_until.is_none() && !shared.lock().blocked {
            let taken = {
                let mut inner = shared.lock();
                shared.expire(&mut inner);
                inner.buffer.take()
            };
            let Some(pending) = taken else {
                break;
            };
            if !draining_logged {
                draining_logged = true;
                tracing::info!(
                    pending = shared.lock().buffer.len(),
                    "draining pending events"
                );
            }
            let sent = timeout(publish_timeout, session.send(&pending.event)).await;
            shared.lock().buffer.sent();
            match sent {
                Ok(Ok(confirmation)) => {
                    confirms.push_back(timeout(publish_timeout, confirmation));
                    in_flight.push_back(pending);
                }
                Ok(Err(e)) if e.refuses_event() => drop_refused(shared, pending, &e),
                Ok(Err(e)) => {
                    put_back(shared, pending, &e);
                    paused_until = Some(Instant::now() + pause_after_failure);
                }
                Err(_) => {
                    let e = BackendError::timeout("publish", publish_timeout);
                    put_back(shared, pending, &e);
                    paused_until = Some(Instant::now() + pause_after_failure);
                }
            }
        }
        if in_flight.is_empty() && draining_logged && shared.lock().buffer.is_idle() {
            draining_logged = false;
            tracing::info!("drain finished, no pending events");
        }

        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break None,
            reason = &mut closed => break Some(reason),
            Some(result) = confirms.next(), if !confirms.is_empty() => {
                let Some(pending) = in_flight.pop_front() else { continue };
                match result {
                    Ok(Ok(())) => {
                        shared.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                        shared.forget(pending.seq);
                        let idle = {
                            let mut inner = shared.lock();
                            inner.buffer.settle(pending.size);
                            inner.buffer.is_idle()
                        };
                        if idle {
                            shared.idle.notify_waiters();
                        }
                    }
                    Ok(Err(e)) if e.refuses_event() => drop_refused(shared, pending, &e),
                    Ok(Err(e)) => {
                        put_back(shared, pending, &e);
                        paused_until = Some(Instant::now() + pause_after_failure);
                    }
                    Err(_) => {
                        let e = BackendError::timeout("publisher confirm", publish_timeout);
                        put_back(shared, pending, &e);
                        paused_until = Some(Instant::now() + pause_after_failure);
                    }
                }
            }
            changed = blocked_rx.changed(), if blocked_live => match changed {
                Ok(()) => {
                    let blocked = *blocked_rx.borrow_and_update();
                    set_blocked(shared, blocked);
                }
                Err(_) => blocked_live = false,
            },
            _ = sleep_until_opt(paused_until), if paused_until.is_some() => paused_until = None,
            _ = shared.wake_drain.notified(), if in_flight.len() < window => {}
        }
    };
    // Whatever is still in flight goes back, in order: it is republished on the
    // next connection (at-least-once).
    if !in_flight.is_empty() {
        let mut inner = shared.lock();
        for pending in in_flight.drain(..) {
            inner.buffer.put_back(pending);
        }
    }
    lost
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

fn set_blocked(shared: &Shared, blocked: bool) {
    let changed = {
        let mut inner = shared.lock();
        std::mem::replace(&mut inner.blocked, blocked) != blocked
    };
    if changed {
        if blocked {
            tracing::warn!(
                "{} is blocking publishers (resource alarm); events are buffered",
                broker_name(shared)
            );
        } else {
            tracing::info!("{} unblocked publishers", broker_name(shared));
            shared.wake_drain.notify_one();
        }
    }
}

fn put_back(shared: &Shared, pending: Pending, error: &BackendError) {
    tracing::debug!(id = %pending.event.id(), error = %error, "publish from the buffer failed; kept for a retry");
    let mut inner = shared.lock();
    inner.last_error = Some(error.to_string());
    inner.buffer.put_back(pending);
}

/// A buffered event the broker refuses for good cannot be handed back (its
/// caller has gone): its loss is logged and counted as dropped.
fn drop_refused(shared: &Shared, pending: Pending, error: &BackendError) {
    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
    tracing::error!(
        id = %pending.event.id(), event_type = %pending.event.event_type(), error = %error,
        "broker refused buffered event {}, dropping it: {error}", pending.event.event_type()
    );
    shared.forget(pending.seq);
    let idle = {
        let mut inner = shared.lock();
        inner.last_error = Some(error.to_string());
        inner.buffer.settle(pending.size);
        inner.buffer.is_idle()
    };
    if idle {
        shared.idle.notify_waiters();
    }
}
