//! The drain: while connected, sends the buffer oldest first with a window of
//! confirms in flight, follows the broker's blocked flag, notices a broker
//! that has stopped answering, and returns when the session is lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, timeout};
use tracing::Instrument;

use crate::backend::{ConfirmWait, Session};
use crate::error::BackendError;

use super::answer::Next;
use super::shared::Shared;
use super::spans;

/// The answer to one send of the drain: the event's sequence number, the
/// send's number, and what the broker said.
type Answer = (u64, u64, Result<(), BackendError>);

/// Drains the buffer on `session` until the session is lost (its reason) or
/// shutdown (`None`). Whatever is in flight when it returns is queued again
/// by the supervisor, in order.
pub(crate) async fn drain(shared: &Shared, session: &Arc<dyn Session>) -> Option<BackendError> {
    let window = shared.config.max_in_flight();
    let publish_timeout = shared.config.publish_timeout();
    let confirm_wait = shared.config.confirm_wait();
    let pause_after_failure = shared.config.retry_delay().min(Duration::from_secs(1));
    let mut closed = std::pin::pin!(session.closed());
    let mut blocked_rx = session.blocked();
    let mut blocked_live = true;
    set_blocked(shared, *blocked_rx.borrow_and_update());

    let mut confirms: FuturesUnordered<BoxFuture<'static, Answer>> = FuturesUnordered::new();
    let mut paused_until: Option<Instant> = None;
    // After a failed send, nothing new goes until the sends in flight are
    // answered, so that the events that come back go again in order.
    let mut regroup = false;
    // The first send not yet covered by an answer of the broker: the broker
    // is silent once it has answered nothing for the confirm wait since.
    // With the broker's answers counted at that moment.
    let mut unanswered_since: Option<(Instant, u64)> = None;
    let mut draining_logged = false;

    loop {
        if confirms.is_empty() {
            regroup = false;
            unanswered_since = None;
            let mut inner = shared.lock();
            if inner.stalled && inner.buffer.in_flight() == 0 {
                // Every send awaited timed out without a word from the
                // broker: one more send probes it.
                shared.probe_after_timeouts(&mut inner);
            }
        }
        // Fill the window from the buffer, oldest first.
        while confirms.len() < window && paused_until.is_none() && !regroup {
            let taken = {
                let mut inner = shared.lock();
                if inner.blocked || (inner.stalled && !inner.probe) {
                    break;
                }
                shared.expire(&mut inner);
                inner.buffer.unpark(Instant::now());
                let taken = inner.buffer.take();
                if taken.is_some() {
                    // One probe at a time while stalled.
                    inner.probe = false;
                }
                taken
            };
            let Some((seq, send, event)) = taken else {
                break;
            };
            if !draining_logged {
                draining_logged = true;
                tracing::info!(
                    pending = shared.lock().buffer.len(),
                    "draining pending events"
                );
            }
            let span = spans::drain(&*shared.backend, &event);
            // The confirm is bounded here, by the publish timeout.
            let sending = session.send_encoded(&event, event.encode(), ConfirmWait::Caller);
            let sent = timeout(publish_timeout, sending)
                .instrument(span.clone())
                .await;
            shared.lock().buffer.sent();
            let failed = match sent {
                Ok(Ok(confirmation)) => {
                    unanswered_since.get_or_insert_with(|| (Instant::now(), shared.answers()));
                    confirms.push(Box::pin(
                        async move {
                            let result = timeout(publish_timeout, confirmation)
                                .await
                                .unwrap_or_else(|_| {
                                    Err(BackendError::timeout("publisher confirm", publish_timeout))
                                });
                            (seq, send, result)
                        }
                        .instrument(span),
                    ));
                    None
                }
                Ok(Err(e)) => Some(e),
                Err(_) => Some(BackendError::timeout("publish", publish_timeout)),
            };
            if let Some(e) = failed {
                after(
                    shared.settle(seq, send, Err(e)),
                    &mut regroup,
                    &mut paused_until,
                    pause_after_failure,
                );
            }
        }
        if confirms.is_empty() && draining_logged && shared.lock().buffer.is_idle() {
            draining_logged = false;
            tracing::info!("drain finished, no pending events");
        }
        let silent_at = unanswered_since.map(|(t, _)| t + confirm_wait);
        let next_due = shared.lock().buffer.next_due();

        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return None,
            reason = &mut closed => return Some(reason),
            Some((seq, send, result)) = confirms.next(), if !confirms.is_empty() => {
                after(shared.settle(seq, send, result), &mut regroup, &mut paused_until, pause_after_failure);
                // Whatever the answer, the broker spoke: sends still in
                // flight wait for the confirm wait from now on.
                unanswered_since =
                    (!confirms.is_empty()).then(|| (Instant::now(), shared.answers()));
            }
            changed = blocked_rx.changed(), if blocked_live => match changed {
                Ok(()) => {
                    let blocked = *blocked_rx.borrow_and_update();
                    set_blocked(shared, blocked);
                }
                Err(_) => blocked_live = false,
            },
            _ = sleep_until_opt(paused_until), if paused_until.is_some() => paused_until = None,
            _ = sleep_until_opt(silent_at), if silent_at.is_some() => {
                let mark = unanswered_since.take().map_or_else(|| shared.answers(), |(_, m)| m);
                if confirms.is_empty() {
                    // Nothing awaited any more.
                } else if shared.silent_since(mark) {
                    let mut inner = shared.lock();
                    shared.set_stalled(&mut inner, true);
                } else {
                    // The broker answered a direct publish meanwhile: wait
                    // the confirm wait again from now.
                    unanswered_since = Some((Instant::now(), shared.answers()));
                }
            }
            _ = sleep_until_opt(next_due), if next_due.is_some() => {}
            _ = shared.wake_drain.notified(), if confirms.len() < window => {}
        }
    }
}

/// Applies what an answer asks of the drain.
fn after(next: Next, regroup: &mut bool, paused_until: &mut Option<Instant>, pause: Duration) {
    match next {
        Next::Go => {}
        Next::Regroup => *regroup = true,
        Next::Pause => {
            *regroup = true;
            *paused_until = Some(Instant::now() + pause);
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

/// Follows the broker's blocked flag; when it blocks, the direct publishes
/// awaiting a confirm answer `Buffered` at once.
pub(crate) fn set_blocked(shared: &Shared, blocked: bool) {
    let changed = {
        let mut inner = shared.lock();
        shared.blocked_now.store(blocked, Ordering::SeqCst);
        std::mem::replace(&mut inner.blocked, blocked) != blocked
    };
    if changed {
        if blocked {
            shared.blocked_notify.notify_waiters();
            tracing::warn!(
                "{} is blocking publishers (resource alarm); events are buffered",
                shared.broker()
            );
        } else {
            tracing::info!("{} unblocked publishers", shared.broker());
            shared.wake_drain.notify_one();
        }
    }
}
