//! Guards of the publish path: each keeps an event or a count right when
//! the caller's future is dropped half-way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use crate::event::Event;

use super::buffer::Pending;
use super::shared::{Kept, NotKept, Shared};

/// Counts a direct publish from its send to its caller's answer, so that
/// shutdown can wait for it.
pub(super) struct DirectFlight<'a> {
    pub(super) shared: &'a Shared,
}

impl Drop for DirectFlight<'_> {
    fn drop(&mut self) {
        let before = self.shared.direct_in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && self.shared.closing.load(Ordering::SeqCst) {
            self.shared.idle.notify_waiters();
        }
    }
}

/// Marks a buffered event ready for the drain if its publish is cancelled
/// while the store is writing it: it stays in memory (and in the store if the
/// write completes), and nothing behind it waits for an answer that will not
/// come.
pub(super) struct Unstored<'a> {
    pub(super) shared: &'a Shared,
    pub(super) seq: Option<u64>,
}

impl Drop for Unstored<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq.take() {
            tracing::debug!(
                seq,
                "publish cancelled while its event was being stored; it stays buffered"
            );
            if self.shared.stored(seq) {
                self.shared
                    .counters
                    .published
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Holds an event being published directly. If the caller's future is dropped
/// before the answer, the event goes to the buffer instead of being lost.
pub(super) struct InFlight<'a> {
    pub(super) shared: &'a Shared,
    pub(super) owner: &'a Arc<Shared>,
    pub(super) seq: u64,
    pub(super) since: Instant,
    pub(super) event: Option<Event>,
}

impl<'a> InFlight<'a> {
    /// Holds `event`, publish number `seq` started at `since`, for the
    /// decorator `owner`.
    pub(super) fn new(owner: &'a Arc<Shared>, seq: u64, since: Instant, event: Event) -> Self {
        Self {
            shared: owner,
            owner,
            seq,
            since,
            event: Some(event),
        }
    }

    /// Takes the event back: the publish is answered from here on.
    pub(super) fn take(&mut self) -> Event {
        self.event
            .take()
            .expect("the guard holds the event until taken, once")
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let Some(event) = self.event.take() else {
            return;
        };
        let shared = self.shared;
        let seq = self.seq;
        let mut inner = shared.lock();
        let size = if inner.buffer.counts_bytes() {
            event.encoded_len()
        } else {
            0
        };
        let mut pending = Pending::new(seq, Arc::new(event), self.since, size);
        // The caller has gone: no one to hand an error to. Store the event if
        // there is a store, in the background; keep it in memory whatever happens.
        let stored = match (&shared.store, tokio::runtime::Handle::try_current()) {
            (Some(store), Ok(rt)) => {
                pending.ready = false;
                Some((store.clone(), pending.event.clone(), rt))
            }
            _ => None,
        };
        match shared.buffer(&mut inner, pending, None) {
            Ok(Kept::Added(_)) => {
                drop(inner);
                shared.wake_drain.notify_one();
            }
            Ok(Kept::Dropped(_)) => return,
            Err(NotKept::Full(event) | NotKept::Closed(event)) => {
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                shared.note_loss(&mut inner);
                tracing::warn!(
                    id = %event.id(), event_type = %event.event_type(),
                    "publish cancelled and the buffer takes no more events, dropping event {}",
                    event.event_type()
                );
                return;
            }
        }
        if let Some((store, copy, rt)) = stored {
            let weak = Arc::downgrade(self.owner);
            rt.spawn(async move {
                if let Err(e) = store.append(seq, &copy).await {
                    tracing::error!(
                        id = %copy.id(), error = %e,
                        "could not store event {} of a cancelled publish; it is kept in memory only",
                        copy.event_type()
                    );
                }
                if let Some(shared) = weak.upgrade() {
                    shared.stored(seq);
                }
            });
        }
    }
}
