//! The publish path: straight to the broker while it answers, else into the
//! buffer; never longer than the confirm wait for a caller.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use futures_util::FutureExt;
use tokio::time::{Instant, timeout, timeout_at};
use tracing::Instrument;

use crate::backend::{ConfirmWait, Confirmation, Session};
use crate::error::{BackendError, BackendErrorKind, PublishError, PublishErrorKind};
use crate::event::Event;
use crate::sink::{EventSink, PublishOutcome};

use super::buffer::Pending;
use super::guards::{DirectFlight, InFlight, Unstored};
use super::service::Resilient;
use super::shared::{Inner, Kept, NotKept};
use super::spans;

/// What admitting an event into the buffer gave: what was kept, and the copy
/// to store (with a store, when kept).
type Admitted = Result<(Kept, Option<Arc<Event>>), NotKept>;

#[async_trait]
impl EventSink for Resilient {
    async fn publish(&self, mut event: Event) -> Result<PublishOutcome, PublishError> {
        let started = Instant::now();
        let span = spans::publish(&*self.shared.backend, &mut event);
        let result = self.publish_now(event, started).instrument(span).await;
        self.shared
            .counters
            .publish_answered(&result, started.elapsed());
        result
    }
}

impl Resilient {
    /// Publishes directly when it may, else buffers; `since` is when the
    /// caller called.
    ///
    /// The paths taken when the broker does not simply confirm (buffering,
    /// a failed send, a confirm later than the confirm wait) are boxed: the
    /// future of every publish is then the size of the direct path's.
    async fn publish_now(
        &self,
        mut event: Event,
        since: Instant,
    ) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        shared.backend.prepare_event(&mut event);
        let limit = shared.config.max_event_bytes();
        // The event is encoded once, here: the bytes serve the size check,
        // the buffer's byte bound, the message body of a direct send and,
        // with a store, what the store writes if the event waits.
        let body = event.encode();
        let size = body.len();
        if size > limit {
            return Err(self.refuse(PublishErrorKind::TooLarge { size, limit }, event));
        }
        let route = {
            let mut inner = shared.lock();
            if shared.closing.load(Ordering::Relaxed) || inner.closed {
                drop(inner);
                return Err(self.refuse(PublishErrorKind::ShuttingDown, event));
            }
            let seq = inner.buffer.next_seq();
            match shared.direct_session(&inner) {
                Some(session) => {
                    // Counted under the lock, so that shutdown sees it.
                    shared.direct_in_flight.fetch_add(1, Ordering::SeqCst);
                    Ok((seq, session, event))
                }
                None => {
                    let pending = self.pending(&inner, seq, Arc::new(event), since, Some(size));
                    Err((seq, self.admit(&mut inner, pending, None)))
                }
            }
        };
        match route {
            Ok((seq, session, event)) => {
                let _flight = DirectFlight { shared };
                self.direct(seq, session, event, body, since).await
            }
            Err((seq, admitted)) => Box::pin(self.buffered(seq, admitted, None, Some(body))).await,
        }
    }
}

impl Resilient {
    pub(super) fn refuse(&self, kind: PublishErrorKind, event: Event) -> PublishError {
        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        PublishError::new(kind, event)
    }

    /// A pending event, sized when the buffer counts bytes (`size` when the
    /// caller knows it, else counted here).
    fn pending(
        &self,
        inner: &Inner,
        seq: u64,
        event: Arc<Event>,
        since: Instant,
        size: Option<usize>,
    ) -> Pending {
        let size = if inner.buffer.counts_bytes() {
            size.unwrap_or_else(|| event.encoded_len())
        } else {
            0
        };
        let mut pending = Pending::new(seq, event, since, size);
        pending.ready = self.shared.store.is_none();
        pending
    }

    /// Admits an event into the buffer (the lock held), queued or parked
    /// until `parked_until`. On success, gives what was kept and, with a
    /// store, a copy to store.
    fn admit(
        &self,
        inner: &mut Inner,
        pending: Pending,
        parked_until: Option<Instant>,
    ) -> Admitted {
        let copy = self.shared.store.as_ref().map(|_| pending.event.clone());
        let kept = self.shared.buffer(inner, pending, parked_until)?;
        // Dropped (drop-newest): nothing to store.
        let copy = copy.filter(|_| matches!(kept, Kept::Added(_)));
        Ok((kept, copy))
    }

    /// Completes a buffering: stores the copy (when there is a store; `json`
    /// is its encoding when made already), then lets the drain take it. A
    /// failed store hands the event back.
    async fn buffered(
        &self,
        seq: u64,
        admitted: Admitted,
        cause: Option<BackendError>,
        json: Option<Vec<u8>>,
    ) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        let (n, copy) = match admitted {
            Ok((Kept::Added(n), copy)) => (n, copy),
            Ok((Kept::Dropped(pending), _)) => return Ok(PublishOutcome::Dropped { pending }),
            Err(not_kept) => {
                let err = match not_kept {
                    NotKept::Full(event) => {
                        let capacity = shared.config.max_pending_events();
                        self.refuse(PublishErrorKind::BufferFull { capacity }, event)
                    }
                    NotKept::Closed(event) => self.refuse(PublishErrorKind::ShuttingDown, event),
                };
                return Err(match cause {
                    Some(cause) => err.with_source(cause),
                    None => err,
                });
            }
        };
        if let Some(copy) = copy {
            self.store_copy(seq, copy, json.as_deref()).await?;
        } else {
            shared.wake_drain.notify_one();
        }
        shared.counters.published.fetch_add(1, Ordering::Relaxed);
        Ok(PublishOutcome::Buffered { pending: n })
    }

    /// Writes the buffered event `seq` to the store (its encoding `json` when
    /// made already), then lets the drain take it. A failed write takes it
    /// out of the buffer and hands it back.
    async fn store_copy(
        &self,
        seq: u64,
        copy: Arc<Event>,
        json: Option<&[u8]>,
    ) -> Result<(), PublishError> {
        let shared = &*self.shared;
        let Some(store) = &shared.store else {
            return Ok(());
        };
        // If the caller gives up while the event is being stored, it stays
        // in the buffer and the drain may take it.
        let mut unstored = Unstored {
            shared,
            seq: Some(seq),
        };
        let appended = match json {
            Some(json) => store.append_encoded(seq, &copy, json).await,
            None => store.append(seq, &copy).await,
        };
        unstored.seq = None;
        if let Err(e) = appended {
            let removed = shared.lock().buffer.remove(seq);
            if removed.is_none() {
                // Dropped meanwhile by drop-oldest or expiry (logged there),
                // or confirmed already.
                tracing::debug!(seq, "event left the buffer before its store failed");
            }
            // The buffer's share is gone: the event is handed back uncopied.
            drop(removed);
            tracing::error!(
                id = %copy.id(), event_type = %copy.event_type(), error = %e,
                "could not store event {}: {e}; handing it back", copy.event_type()
            );
            return Err(self
                .refuse(PublishErrorKind::StoreFailed, Arc::unwrap_or_clone(copy))
                .with_store_error(e));
        }
        shared.stored(seq);
        Ok(())
    }

    /// Publishes on `session` (`body` is the event's encoding) and waits for
    /// the broker's answer, at most the confirm wait (from `since`), less if
    /// the broker blocks publishers.
    async fn direct(
        &self,
        seq: u64,
        session: Arc<dyn Session>,
        event: Event,
        body: Vec<u8>,
        since: Instant,
    ) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        let config = &shared.config;
        let deadline = since + config.confirm_wait().min(config.publish_timeout());
        let mut guard = InFlight::new(&self.shared, seq, since, event);
        // The broker's answers so far: if none comes before the confirm
        // wait is over, it has gone quiet.
        let mark = shared.answers();
        let sent = {
            let event = guard.event.as_ref().expect("the guard holds the event");
            // Bounded here (the deadline, then the publish timeout when
            // adopted): the session runs no timer of its own.
            let mut send = session.send_encoded(event, body, ConfirmWait::Caller);
            match (&mut send).now_or_never() {
                Some(sent) => Some(sent),
                None => timeout_at(deadline, send).await.ok(),
            }
        };
        let mut confirmation = match sent {
            Some(Ok(confirmation)) => confirmation,
            Some(Err(e)) => {
                return Box::pin(self.direct_failed(seq, guard.take(), since, e)).await;
            }
            None => {
                // Not handed over within the wait: it may be on its way or
                // not; buffered, it is sent again (at-least-once).
                let e = BackendError::timeout("publish", deadline - since);
                return Box::pin(self.direct_failed(seq, guard.take(), since, e)).await;
            }
        };
        let answer = match (&mut confirmation).now_or_never() {
            Some(answer) => Some(answer),
            None => {
                // Answered at once (`Buffered`) if the broker blocks
                // publishers meanwhile: the confirm would wait for the alarm.
                let blocked = shared.blocked_notify.notified();
                let mut blocked = std::pin::pin!(blocked);
                blocked.as_mut().enable();
                if shared.blocked_now.load(Ordering::SeqCst) {
                    None
                } else {
                    tokio::select! {
                        biased;
                        answer = &mut confirmation => Some(answer),
                        _ = tokio::time::sleep_until(deadline) => None,
                        _ = &mut blocked => None,
                    }
                }
            }
        };
        let event = guard.take();
        match answer {
            Some(Ok(())) => Ok(shared.confirmed_directly()),
            Some(Err(e)) => Box::pin(self.direct_failed(seq, event, since, e)).await,
            None => Box::pin(self.adopt(seq, event, since, confirmation, mark)).await,
        }
    }

    /// A direct publish failed: the event is handed back (refused for good),
    /// parked for a retry (nacked), or buffered.
    async fn direct_failed(
        &self,
        seq: u64,
        event: Event,
        since: Instant,
        error: BackendError,
    ) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        let max = shared.config.max_publish_attempts();
        let kind = error.kind();
        if matches!(
            kind,
            BackendErrorKind::EventRefused | BackendErrorKind::Nacked
        ) {
            shared.answered();
        }
        let refused = kind == BackendErrorKind::EventRefused;
        if refused || (kind == BackendErrorKind::Nacked && max <= 1) {
            tracing::warn!(
                id = %event.id(), event_type = %event.event_type(), error = %error,
                "{} refused event {} ({}); handing it back: {error}",
                shared.broker(), event.event_type(), event.id()
            );
            return Err(self
                .refuse(PublishErrorKind::Refused, event)
                .with_source(error));
        }
        let admitted = {
            let mut inner = shared.lock();
            let mut pending = self.pending(&inner, seq, Arc::new(event), since, None);
            let parked_until = if kind == BackendErrorKind::Nacked {
                pending.nacks = 1;
                let delay = shared.nack_delay(1);
                tracing::warn!(
                    id = %pending.event.id(), event_type = %pending.event.event_type(), ?delay,
                    "{} nacked event {} (attempt 1 of {max}); buffered, sent again in {delay:?}",
                    shared.broker(), pending.event.event_type()
                );
                Some(Instant::now() + delay)
            } else {
                tracing::debug!(id = %pending.event.id(), error = %error, "publish failed, buffering the event");
                None
            };
            inner.last_error = Some(error.to_string());
            self.admit(&mut inner, pending, parked_until)
        };
        self.buffered(seq, admitted, Some(error), None).await
    }

    /// The confirm wait is over (or the broker blocks publishers) and the
    /// confirm has not come: the buffer takes the event over, in flight, and
    /// the caller is answered `Buffered`. A late confirm clears it, a nack
    /// or a lost connection sends it again. With the buffer full it keeps
    /// waiting instead (the bound is the back-pressure), up to the publish
    /// timeout.
    async fn adopt(
        &self,
        seq: u64,
        event: Event,
        since: Instant,
        confirmation: Confirmation,
        mark: u64,
    ) -> Result<PublishOutcome, PublishError> {
        let shared = &*self.shared;
        let publish_timeout = shared.config.publish_timeout();
        let left = publish_timeout.saturating_sub(since.elapsed());
        let late = move || BackendError::timeout("publisher confirm", publish_timeout);
        let taken = {
            let mut inner = shared.lock();
            if inner.closed {
                Take::Closed(event)
            } else if inner.buffer.is_full() {
                Take::Full(event)
            } else {
                if !inner.blocked && shared.silent_since(mark) {
                    shared.set_stalled(&mut inner, true);
                }
                let pending = self.pending(&inner, seq, Arc::new(event), since, None);
                let copy = shared.store.as_ref().map(|_| pending.event.clone());
                let send = inner.buffer.adopt(pending);
                shared.counters.buffered.fetch_add(1, Ordering::Relaxed);
                Take::Adopted(send, copy, inner.buffer.len())
            }
        };
        match taken {
            Take::Closed(event) => {
                // Shutdown has ended: nothing would send it again.
                Err(self.refuse(PublishErrorKind::ShuttingDown, event))
            }
            Take::Full(event) => {
                let mut guard = InFlight::new(&self.shared, seq, since, event);
                let answer = timeout(left, confirmation)
                    .await
                    .unwrap_or_else(|_| Err(late()));
                let event = guard.take();
                match answer {
                    Ok(()) => Ok(shared.confirmed_directly()),
                    Err(e) => self.direct_failed(seq, event, since, e).await,
                }
            }
            Take::Adopted(send, copy, pending) => {
                let owner = Arc::downgrade(&self.shared);
                let cancel = shared.cancel.clone();
                tokio::spawn(async move {
                    let result = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = timeout(left, confirmation) => r.unwrap_or_else(|_| Err(late())),
                    };
                    if let Some(shared) = owner.upgrade() {
                        shared.settle(seq, send, result);
                    }
                });
                tracing::debug!(
                    seq,
                    "no confirm within the confirm wait; the event stays in the buffer until the \
                     broker answers"
                );
                if let Some(copy) = copy {
                    self.store_copy(seq, copy, None).await?;
                }
                shared.counters.published.fetch_add(1, Ordering::Relaxed);
                Ok(PublishOutcome::Buffered { pending })
            }
        }
    }
}

/// What became of a direct publish whose confirm wait is over.
enum Take {
    /// Shutdown has ended; the event goes back to its caller.
    Closed(Event),
    /// The buffer is full; the caller keeps waiting.
    Full(Event),
    /// In flight in the buffer under this send number; a copy to store; the
    /// pending count.
    Adopted(u64, Option<Arc<Event>>, usize),
}
