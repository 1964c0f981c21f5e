//! What becomes of a pending event when the broker answers one of its sends:
//! the per-event failure policy, apart from connection failures.
//!
//! - confirmed: it leaves the buffer (and the store);
//! - refused for good (the event's own and permanent: a permission refused
//!   for its routing key, too large for the broker, unroutable): never sent
//!   again; counted as refused and logged with its id and type, since its
//!   publisher was answered already;
//! - nacked (the event's own and perhaps passing): parked and sent again after
//!   a backoff of its own, at most `max_publish_attempts` sends in all, then
//!   given up like a refusal; the events behind it go on meanwhile;
//! - interrupted (another event's failure closed the channel it was on):
//!   queued again at its place and sent again at once;
//! - anything else (the connection): queued again at its place; the drain
//!   pauses, and the supervisor reconnects if the session is lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use crate::error::{BackendError, BackendErrorKind};

use super::backoff;
use super::buffer::Pending;
use super::shared::{Inner, Shared};

/// Interrupted sends of one event after which its failures count as the
/// connection's (the drain pauses): a backend that keeps interrupting sends
/// cannot make the drain spin.
const MAX_INTERRUPTS: u32 = 8;

/// What the drain does after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Goes on.
    Go,
    /// Sends nothing new until the sends in flight are answered: they fail
    /// too (the channel they were on is gone), and what comes back goes
    /// again in publish order.
    Regroup,
    /// Regroups, and pauses a moment: the failure was the connection's.
    Pause,
}

impl Shared {
    /// Applies the answer to send `send` of event `seq` (from the drain, or
    /// for a direct publish whose caller stopped waiting).
    pub(crate) fn settle(&self, seq: u64, send: u64, result: Result<(), BackendError>) -> Next {
        let error = match result {
            Ok(()) => {
                self.answered();
                let mut inner = self.lock();
                if let Some(p) = inner.buffer.confirmed(seq) {
                    self.counters.drained();
                    self.forget(p.seq);
                    self.notify_if_idle(&inner);
                }
                return Next::Go;
            }
            Err(e) => e,
        };
        let kind = error.kind();
        if matches!(
            kind,
            BackendErrorKind::EventRefused | BackendErrorKind::Nacked
        ) {
            self.answered();
        }
        let mut inner = self.lock();
        // An older send of an event sent again, or one queued again after a
        // lost connection: its failure changes nothing.
        let Some(mut pending) = inner.buffer.failed(seq, send) else {
            return Next::Go;
        };
        match kind {
            BackendErrorKind::EventRefused => {
                self.give_up(&mut inner, pending, &error.to_string());
                Next::Go
            }
            BackendErrorKind::Nacked => {
                pending.nacks += 1;
                self.after_nack(&mut inner, pending, &error);
                Next::Go
            }
            BackendErrorKind::Interrupted if pending.interrupts < MAX_INTERRUPTS => {
                pending.interrupts += 1;
                tracing::debug!(
                    id = %pending.event.id(), error = %error,
                    "send interrupted by another event's failure; sending it again"
                );
                inner.buffer.requeue(pending);
                self.wake_drain.notify_one();
                Next::Regroup
            }
            _ => {
                tracing::debug!(
                    id = %pending.event.id(), error = %error,
                    "publish from the buffer failed; kept for a retry"
                );
                inner.last_error = Some(error.to_string());
                inner.buffer.requeue(pending);
                self.wake_drain.notify_one();
                Next::Pause
            }
        }
    }

    /// A send of `pending` was nacked (`pending.nacks` counts it): parks it
    /// for a backoff of its own, or gives it up after the last attempt.
    pub(crate) fn after_nack(&self, inner: &mut Inner, pending: Pending, error: &BackendError) {
        let max = self.config.max_publish_attempts();
        if pending.nacks >= max {
            let reason = format!("{error}; given up after {max} nacked attempts");
            self.give_up(inner, pending, &reason);
            return;
        }
        let delay = self.nack_delay(pending.nacks);
        tracing::warn!(
            id = %pending.event.id(), event_type = %pending.event.event_type(),
            attempt = pending.nacks, ?delay,
            "{} nacked event {} (attempt {} of {max}); sending it again in {delay:?}, \
             the events behind it go on meanwhile",
            self.broker(), pending.event.event_type(), pending.nacks
        );
        inner.last_error = Some(error.to_string());
        inner.buffer.park(pending, Instant::now() + delay);
        // The drain sets its timer for the new retry time.
        self.wake_drain.notify_one();
    }

    /// The delay before sending again an event nacked `nacks` times:
    /// exponential with full jitter from `min(retry delay, 1 s)`, capped by
    /// the retry delay cap.
    pub(crate) fn nack_delay(&self, nacks: u32) -> Duration {
        let base = self.config.retry_delay().min(Duration::from_secs(1));
        backoff::delay(base, self.config.max_retry_delay(), nacks)
    }

    /// Gives up an event the broker refused for good after its publisher was
    /// answered: nothing to hand it back to, so it is logged (id and type,
    /// never the payload), counted as refused, and forgotten by the store.
    pub(crate) fn give_up(&self, inner: &mut Inner, pending: Pending, reason: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        inner.last_loss = Some(Utc::now());
        inner.last_error = Some(reason.to_owned());
        tracing::error!(
            id = %pending.event.id(), event_type = %pending.event.event_type(), error = %reason,
            "{} refused event {} ({}) for good; it is dropped and counted as refused: {reason}",
            self.broker(), pending.event.event_type(), pending.event.id()
        );
        self.forget(pending.seq);
        self.notify_if_idle(inner);
    }
}
