//! Publishing with a broker confirm or nothing: for callers that keep the event
//! themselves until the broker has it (a transactional outbox relay), for whom
//! "buffered" is no answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::timeout;
use tracing::Instrument;

use crate::backend::{ConfirmWait, Session};
use crate::error::{BackendError, BackendErrorKind, PublishError, PublishErrorKind};
use crate::event::Event;

use super::service::Resilient;
use super::spans;

impl Resilient {
    /// Publishes `event` on the current session and waits for the broker's
    /// confirm. Never buffers: `Ok(())` means the broker confirmed it, and any
    /// failure hands the event back with a kind that says what happened:
    ///
    /// - [`PublishErrorKind::NotConnected`]: no session, the broker is
    ///   blocking publishers, or the connection failed under the publish (the
    ///   event may have reached the broker in that last case);
    /// - [`PublishErrorKind::Nacked`]: the broker nacked it;
    /// - [`PublishErrorKind::Timeout`]: no confirm within the publish timeout
    ///   (`RABBITMQ_PUBLISH_TIMEOUT`); the event may have reached the broker;
    /// - [`PublishErrorKind::Refused`]: the broker refuses this event for good;
    /// - [`PublishErrorKind::TooLarge`], [`PublishErrorKind::ShuttingDown`].
    ///
    /// It does not wait for a connection: watch the state
    /// ([`ConnectionMonitor::watch_state`](crate::ConnectionMonitor::watch_state))
    /// to know when to try again. Events in the pending buffer are not waited
    /// for, so an event published this way may overtake them.
    pub async fn publish_confirmed(&self, event: Event) -> Result<(), PublishError> {
        let mut results = self.publish_confirmed_batch(vec![event]).await;
        results
            .pop()
            .unwrap_or_else(|| unreachable!("publish_confirmed_batch gives one result per event"))
    }

    /// [`Resilient::publish_confirmed`] for several events: they are sent in
    /// their order on one session, and their confirms awaited together (one
    /// result per event, in the same order). When a send fails for a reason
    /// other than the event itself (the connection), the events after it are
    /// not sent and are handed back with the same kind, so no later event
    /// overtakes an earlier one on the wire. An event the broker refuses for
    /// good does not stop the ones after it.
    pub async fn publish_confirmed_batch(
        &self,
        events: Vec<Event>,
    ) -> Vec<Result<(), PublishError>> {
        self.send_confirmed_batch(events).await.confirmed().await
    }

    /// The first half of [`Resilient::publish_confirmed_batch`]: returns once
    /// every event is sent (or refused), in order; the confirms are awaited
    /// with [`SentBatch::confirmed`]. A caller can send its next batch while
    /// the confirms of this one come in, and keep the broker busy. Dropping
    /// the `SentBatch` gives up on the confirms (the events may have reached
    /// the broker).
    pub async fn send_confirmed_batch(&self, events: Vec<Event>) -> SentBatch {
        let shared = &*self.shared;
        let limit = shared.config.max_event_bytes();
        let publish_timeout = shared.config.publish_timeout();
        let closing = shared.closing.load(Ordering::Relaxed);
        let session: Option<Arc<dyn Session>> = {
            let inner = shared.lock();
            shared.session().filter(|_| !inner.blocked)
        };

        // Sent events with their confirms, or the final result of each event.
        let mut slots: Vec<Slot> = Vec::with_capacity(events.len());
        let mut stopped: Option<PublishErrorKind> = None;
        for mut event in events {
            shared.backend.prepare_event(&mut event);
            let span = spans::publish(&*shared.backend, &mut event);
            // Encoded once: for the size check and as the message body.
            let body = event.encode();
            if body.len() > limit {
                let size = body.len();
                slots.push(Slot::Done(Err(PublishError::new(
                    PublishErrorKind::TooLarge { size, limit },
                    event,
                ))));
                continue;
            }
            let session = match (&stopped, closing, &session) {
                (Some(kind), _, _) => {
                    slots.push(Slot::Done(Err(PublishError::new(kind.clone(), event))));
                    continue;
                }
                (None, true, _) => {
                    slots.push(Slot::Done(Err(PublishError::new(
                        PublishErrorKind::ShuttingDown,
                        event,
                    ))));
                    continue;
                }
                (None, false, None) => {
                    slots.push(Slot::Done(Err(PublishError::new(
                        PublishErrorKind::NotConnected,
                        event,
                    ))));
                    continue;
                }
                (None, false, Some(session)) => session,
            };
            // The confirm is bounded here (`bounded`), by the publish timeout.
            let send = session.send_encoded(&event, body, ConfirmWait::Caller);
            let sent = match timeout(publish_timeout, send).instrument(span).await {
                Ok(sent) => sent,
                Err(_) => Err(BackendError::timeout("publish", publish_timeout)),
            };
            match sent {
                Ok(confirmation) => slots.push(Slot::Sent(
                    event,
                    bounded(publish_timeout, confirmation).boxed(),
                )),
                Err(e) => {
                    let kind = kind_of(&e);
                    if !e.refuses_event() {
                        stopped = Some(kind.clone());
                    }
                    tracing::debug!(
                        id = %event.id(), event_type = %event.event_type(), error = %e,
                        "confirmed publish failed at send"
                    );
                    slots.push(Slot::Done(Err(
                        PublishError::new(kind, event).with_source(e)
                    )));
                }
            }
        }
        SentBatch {
            slots,
            owner: self.clone(),
        }
    }
}

/// Events sent by [`Resilient::send_confirmed_batch`], their confirms to come.
#[must_use = "the confirms are known only once awaited"]
pub struct SentBatch {
    slots: Vec<Slot>,
    owner: Resilient,
}

impl std::fmt::Debug for SentBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentBatch")
            .field("events", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl SentBatch {
    /// How many events the batch holds (sent or already refused).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Awaits the confirms: one result per event, in the order given.
    pub async fn confirmed(self) -> Vec<Result<(), PublishError>> {
        let Self { mut slots, owner } = self;
        let confirms = slots.iter_mut().filter_map(|slot| match slot {
            Slot::Sent(_, confirm) => Some(confirm),
            Slot::Done(_) => None,
        });
        let outcomes = futures_util::future::join_all(confirms).await;
        let mut outcomes = outcomes.into_iter();
        let results: Vec<Result<(), PublishError>> = slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Done(result) => result,
                Slot::Sent(event, _) => match outcomes.next() {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => {
                        tracing::debug!(
                            id = %event.id(), event_type = %event.event_type(), error = %e,
                            "confirmed publish failed at the confirm"
                        );
                        Err(PublishError::new(kind_of(&e), event).with_source(e))
                    }
                    None => unreachable!("one outcome per sent event"),
                },
            })
            .collect();
        let confirmed = results.iter().filter(|r| r.is_ok()).count() as u64;
        let failed = results.len() as u64 - confirmed;
        let c = &owner.shared.counters;
        c.published.fetch_add(confirmed, Ordering::Relaxed);
        c.confirmed.fetch_add(confirmed, Ordering::Relaxed);
        c.failed.fetch_add(failed, Ordering::Relaxed);
        results
    }
}

/// An event sent and its confirm to come, or its result already known.
enum Slot {
    Sent(
        Event,
        futures_util::future::BoxFuture<'static, Result<(), BackendError>>,
    ),
    Done(Result<(), PublishError>),
}

/// The kind a caller acts on for a backend error.
fn kind_of(e: &BackendError) -> PublishErrorKind {
    match e.kind() {
        BackendErrorKind::EventRefused => PublishErrorKind::Refused,
        BackendErrorKind::Nacked => PublishErrorKind::Nacked,
        BackendErrorKind::Timeout => PublishErrorKind::Timeout,
        _ => PublishErrorKind::NotConnected,
    }
}

/// Awaits a confirm for at most `limit`; one that is ready at once skips the timer.
async fn bounded(
    limit: Duration,
    confirm: crate::backend::Confirmation,
) -> Result<(), BackendError> {
    let mut confirm = confirm;
    if let Some(result) = (&mut confirm).now_or_never() {
        return result;
    }
    timeout(limit, confirm)
        .await
        .unwrap_or_else(|_| Err(BackendError::timeout("publisher confirm", limit)))
}
