//! The publish path: straight to the broker while it answers, else into the
//! buffer; never longer than the confirm wait for a caller.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::future::Future;
use std::pin::Pin;

use futures_util::FutureExt;
use futures_util::future::Either;
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

/// The future of a publish call.
type Publishing<'a> =
    Pin<Box<dyn Future<Output = Result<PublishOutcome, PublishError>> + Send + 'a>>;

// Written out instead of `#[async_trait]`: an `async fn` keeps each argument
// twice in its future (as captured and as a local), and this future is
// allocated on every publish. This one keeps the event once.
impl EventSink for Resilient {
    fn publish<'life0, 'async_trait>(&'life0 self, mut event: Event) -> Publishing<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let started = Instant::now();
            let span = spans::publish(&*self.shared.backend, &mut event);
            let result = self.route(event, started, span).await;
            self.shared
                .counters
                .publish_answered(&result, started.elapsed());
            result
        })
    }
}

/// Where a publish goes, decided without waiting.
enum Route<'a> {
    /// Handed back at once (too large, shutting down).
    Refused(PublishError),
    /// Straight to the broker.
    Direct(Direct<'a>),
    /// Into the buffer under this sequence number, with its encoding.
    Buffer(u64, Admitted, Vec<u8>),
}

/// A publish on its way straight to the broker: everything its wait needs,
/// held once. (Each `async fn` keeps its arguments for its whole life, so
/// the direct path takes one value instead of several: the future of every
/// publish, boxed by the trait, stays small.)
struct Direct<'a> {
    /// The event, buffered if the caller's future is dropped before the answer.
    guard: InFlight<'a>,
    /// Counts the publish until its answer. Declared after `guard`: a
    /// cancelled publish's event is in the buffer before shutdown stops
    /// waiting for it.
    _flight: DirectFlight<'a>,
    session: Arc<dyn Session>,
    /// Whether the session may report that the broker blocks publishers.
    may_block: bool,
    /// The event's encoding, taken by the send.
    body: Vec<u8>,
}

impl Resilient {
    /// Routes a publish (`since` is when the caller called) and gives the
    /// wait for its answer, in `span`.
    ///
    /// The paths taken when the broker does not simply confirm (buffering,
    /// a failed send, a confirm later than the confirm wait) are boxed: the
    /// future of every publish is then the size of the direct path's.
    fn route(
        &self,
        event: Event,
        since: Instant,
        span: tracing::Span,
    ) -> impl Future<Output = Result<PublishOutcome, PublishError>> + Send + '_ {
        match span.in_scope(|| self.routed(event, since)) {
            // Without a span (no `otel`, or no subscriber that wants it) the
            // direct path is awaited as it is: no span to enter on every poll.
            Route::Direct(direct) if span.is_disabled() => {
                Either::Left(Either::Left(self.direct(direct)))
            }
            Route::Direct(direct) => {
                Either::Left(Either::Right(self.direct(direct).instrument(span)))
            }
            Route::Buffer(seq, admitted, body) => Either::Right::<_, Publishing<'_>>(Box::pin(
                self.buffered(seq, admitted, None, Some(body))
                    .instrument(span),
            )),
            Route::Refused(e) => {
                Either::Right::<_, Publishing<'_>>(Box::pin(std::future::ready(Err(e))))
            }
        }
    }

    /// Decides where a publish goes: straight to the broker while it
    /// answers, else into the buffer.
    fn routed(&self, mut event: Event, since: Instant) -> Route<'_> {
        let shared = &*self.shared;
        shared.backend.prepare_event(&mut event);
        let limit = shared.config.max_event_bytes();
        // The event is encoded once, here: the bytes serve the size check,
        // the buffer's byte bound, the message body of a direct send and,
        // with a store, what the store writes if the event waits.
        let body = event.encode();
        let size = body.len();
        if size > limit {
            return Route::Refused(self.refuse(PublishErrorKind::TooLarge { size, limit }, event));
        }
        let mut inner = shared.lock();
        if shared.closing.load(Ordering::Relaxed) || inner.closed {
            drop(inner);
            return Route::Refused(self.refuse(PublishErrorKind::ShuttingDown, event));
        }
        let seq = inner.buffer.next_seq();
        match shared.direct_session(&inner) {
            Some((session, may_block)) => {
                // Counted under the lock, so that shutdown sees it.
                shared.direct_in_flight.fetch_add(1, Ordering::SeqCst);
                drop(inner);
                Route::Direct(Direct {
                    guard: InFlight::new(&self.shared, seq, since, event),
                    _flight: DirectFlight { shared },
                    session,
                    may_block,
                    body,
                })
            }
            None => {
                let pending = self.pending(&inner, seq, Arc::new(event), since, Some(size));
                let admitted = self.admit(&mut inner, pending, None);
                Route::Buffer(seq, admitted, body)
            }
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

    /// Publishes on the direct publish's session and waits for the broker's
    /// answer, at most the confirm wait (from the call), less if the broker
    /// blocks publishers.
    ///
    /// A function giving an `async` block rather than an `async fn`, so that
    /// the future holds `direct` once (see [`Direct`]).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn direct<'a>(
        &'a self,
        mut direct: Direct<'a>,
    ) -> impl Future<Output = Result<PublishOutcome, PublishError>> + Send + 'a {
        async move {
            // Named whole, so that the block takes `direct` whole: it would
            // otherwise take only the fields it uses, and the in-flight
            // count (never used) would end when this function returns.
            let direct = &mut direct;
            let shared = &*self.shared;
            let config = &shared.config;
            let (seq, since) = (direct.guard.seq, direct.guard.since);
            let deadline = since + config.confirm_wait().min(config.publish_timeout());
            let guard = &mut direct.guard;
            // The broker's answers so far: if none comes before the confirm
            // wait is over, it has gone quiet.
            let mark = shared.answers();
            let sent = {
                let event = guard.event.as_ref().expect("the guard holds the event");
                // Bounded here (the deadline, then the publish timeout when
                // adopted): the session runs no timer of its own.
                let body = std::mem::take(&mut direct.body);
                let mut send = direct
                    .session
                    .send_encoded(event, body, ConfirmWait::Caller);
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
                    // publishers meanwhile: the confirm would wait for the
                    // alarm. (A session that cannot report it is not
                    // waited on: no waiter to register and drop.)
                    let may_block = direct.may_block;
                    let blocked = shared.blocked_notify.notified(seq);
                    let mut blocked = std::pin::pin!(blocked);
                    if may_block {
                        blocked.as_mut().enable();
                    }
                    if may_block && shared.blocked_now.load(Ordering::SeqCst) {
                        None
                    } else {
                        tokio::select! {
                            biased;
                            answer = &mut confirmation => Some(answer),
                            _ = tokio::time::sleep_until(deadline) => None,
                            _ = &mut blocked, if may_block => None,
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
