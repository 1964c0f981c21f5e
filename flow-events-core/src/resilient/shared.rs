//! State shared by the handle, the supervisor task and the consumer tasks.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendInfo, Session};
use crate::config::Config;
use crate::error::BackendError;
use crate::event::Event;
use crate::monitor::{ConnectionState, ConnectionStatus};
use crate::sink::PublishOutcome;

use super::buffer::{Admit, Bounds, Pending, PendingBuffer};
use super::metrics::Counters;
use crate::padded::{CacheLine, ShardedNotify};
use crate::store::PendingStore;

/// The current session and its generation (0: none yet).
#[derive(Clone, Default)]
pub(crate) struct Current {
    pub(crate) generation: u64,
    pub(crate) session: Option<Arc<dyn Session>>,
}

/// The state behind the lock. The connection state and the live session
/// have their source in the watch channels of [`Shared`], written while this
/// lock is held so that they change together with it (`direct` is a copy of
/// the session, for the publishes).
pub(crate) struct Inner {
    pub(crate) buffer: PendingBuffer,
    pub(crate) blocked: bool,
    /// The broker has answered nothing for longer than the confirm wait
    /// while sends awaited its answer: new events go to the buffer.
    pub(crate) stalled: bool,
    /// While stalled, every send awaited ended without an answer: the drain
    /// may send one event to probe the broker.
    pub(crate) probe: bool,
    /// Shutdown has taken what was pending: nothing is buffered any more.
    pub(crate) closed: bool,
    /// When the connection state last changed.
    pub(crate) since: DateTime<Utc>,
    pub(crate) last_error: Option<String>,
    /// The error of the last failed connection attempt, until one succeeds.
    pub(crate) connect_error: Option<BackendError>,
    pub(crate) reconnect_attempts: u32,
    pub(crate) last_connected: Option<DateTime<Utc>>,
    /// When an event was last dropped, expired or refused.
    pub(crate) last_loss: Option<DateTime<Utc>>,
    /// The live session, a copy of `current_tx`'s written with it, for the
    /// publishes, which hold this lock already (the watch's own lock is one
    /// more write to a shared line per publish); with it, whether it can
    /// report that the broker blocks publishers (its [`Session::blocked`]
    /// channel has a sender): direct publishes on one that cannot skip
    /// waiting for the notice.
    pub(crate) direct: Option<(Arc<dyn Session>, bool)>,
}

/// What buffering did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Buffered; the pending count.
    Added(usize),
    /// Dropped by drop-newest; the pending count.
    Dropped(usize),
}

/// Why an event could not be buffered; it is handed back.
#[derive(Debug)]
pub(crate) enum NotKept {
    /// The buffer is full under the reject policy.
    Full(Event),
    /// Shutdown has ended: nothing drains the buffer any more.
    Closed(Event),
}

pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) info: BackendInfo,
    pub(crate) config: Config,
    pub(crate) store: Option<Arc<dyn PendingStore>>,
    /// The lock and the counts below are written by every publish, from
    /// every thread: each on cache lines of its own, so that a write to one
    /// does not take the line of the read-only fields (the configuration,
    /// the backend) from the other threads.
    pub(crate) inner: CacheLine<Mutex<Inner>>,
    /// The connection state (written with the lock held).
    pub(crate) state_tx: watch::Sender<ConnectionState>,
    /// The live session and its generation (written with the lock held).
    pub(crate) current_tx: watch::Sender<Current>,
    /// Wakes the drainer: events were buffered, or the broker unblocked.
    pub(crate) wake_drain: Notify,
    /// Wakes shutdown: the buffer became idle, or the last direct publish ended.
    pub(crate) idle: Notify,
    /// Wakes the direct publishes awaiting a confirm: the broker blocks
    /// publishers, so they answer `Buffered` now. Every such publish waits
    /// on one of these, chosen by its sequence number: one shared list of
    /// waiters, locked twice by each publish in flight, would be contended
    /// by every thread publishing.
    pub(crate) blocked_notify: ShardedNotify,
    /// Direct publishes between their send and their answer to the caller.
    pub(crate) direct_in_flight: CacheLine<AtomicUsize>,
    /// Answers of the broker to sends (confirms, nacks, refusals) so far:
    /// the broker is silent since a send while this has not moved.
    answers: CacheLine<AtomicU64>,
    /// Mirrors `Inner::stalled`, read without the lock on every answer.
    stalled: AtomicBool,
    /// Mirrors `Inner::blocked`, read without the lock by direct publishes.
    pub(crate) blocked_now: AtomicBool,
    pub(crate) counters: CacheLine<Counters>,
    pub(crate) closing: AtomicBool,
    pub(crate) cancel: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("backend", &self.info)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        config: Config,
        store: Option<Arc<dyn PendingStore>>,
    ) -> Self {
        let info = backend.info();
        let bounds = Bounds {
            events: config.max_pending_events(),
            bytes: config.max_pending_bytes(),
            age: config.max_pending_age(),
            policy: config.overflow_policy(),
        };
        Self {
            backend,
            info,
            store,
            inner: CacheLine(Mutex::new(Inner {
                buffer: PendingBuffer::new(bounds),
                blocked: false,
                stalled: false,
                probe: false,
                closed: false,
                since: Utc::now(),
                last_error: None,
                connect_error: None,
                reconnect_attempts: 0,
                last_connected: None,
                last_loss: None,
                direct: None,
            })),
            config,
            state_tx: watch::channel(ConnectionState::Disconnected).0,
            current_tx: watch::channel(Current::default()).0,
            wake_drain: Notify::new(),
            idle: Notify::new(),
            blocked_notify: ShardedNotify::default(),
            direct_in_flight: CacheLine(AtomicUsize::new(0)),
            answers: CacheLine(AtomicU64::new(0)),
            stalled: AtomicBool::new(false),
            blocked_now: AtomicBool::new(false),
            counters: CacheLine(Counters::default()),
            closing: AtomicBool::new(false),
            cancel: CancellationToken::new(),
        }
    }

    /// Locks the inner state. A poisoned lock (a panic while holding it) still
    /// holds consistent data: every critical section is a few field updates.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The broker's name in log lines, as the backend gives it.
    pub(crate) fn broker(&self) -> &'static str {
        self.info.display_name
    }

    /// Changes the state, stamps `since` and tells the watchers; `inner`
    /// is the locked state. Returns whether it changed.
    pub(crate) fn set_state(&self, inner: &mut Inner, state: ConnectionState) -> bool {
        let changed = self.state_tx.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
        if changed {
            inner.since = Utc::now();
        }
        changed
    }

    /// The connection state.
    pub(crate) fn state(&self) -> ConnectionState {
        *self.state_tx.borrow()
    }

    /// The live session, if connected.
    pub(crate) fn session(&self) -> Option<Arc<dyn Session>> {
        self.current_tx.borrow().session.clone()
    }

    /// A new session is live (`Some`) or the live one is gone (`None`);
    /// `inner` is the locked state.
    pub(crate) fn set_session(&self, inner: &mut Inner, session: Option<Arc<dyn Session>>) {
        // A closed channel (the default `blocked`) never reports blocking.
        inner.direct = session.clone().map(|s| {
            let may_block = s.blocked().has_changed().is_ok();
            (s, may_block)
        });
        self.current_tx.send_modify(|c| {
            if session.is_some() {
                c.generation += 1;
            }
            c.session = session;
        });
    }

    /// The session to publish on directly: connected, not blocked, not
    /// stalled, and nothing pending that a new event must not overtake
    /// (events the drain has already sent on this session are ahead of it on
    /// the wire).
    ///
    /// With it, whether the session may report blocking.
    pub(crate) fn direct_session(&self, inner: &Inner) -> Option<(Arc<dyn Session>, bool)> {
        if inner.blocked || inner.stalled || !inner.buffer.accepts_direct() {
            return None;
        }
        inner.direct.clone()
    }

    /// Buffers an event (queued, or parked until `parked_until`), applying
    /// the overflow policy: `Ok(Kept::Added(n))`, or `Ok(Kept::Dropped(n))`
    /// under drop-newest (logged and counted here); `Err` hands the event
    /// back (reject policy, or shutdown has ended).
    pub(crate) fn buffer(
        &self,
        inner: &mut Inner,
        pending: Pending,
        parked_until: Option<Instant>,
    ) -> Result<Kept, NotKept> {
        if inner.closed {
            return Err(NotKept::Closed(Arc::unwrap_or_clone(pending.event)));
        }
        self.expire(inner);
        match inner.buffer.admit(pending, parked_until) {
            Admit::Added(n, dropped) => {
                self.counters.buffered.fetch_add(1, Ordering::Relaxed);
                for oldest in dropped {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    self.note_loss(inner);
                    self.forget(oldest.seq);
                    tracing::warn!(
                        event_type = %oldest.event.event_type(), id = %oldest.event.id(),
                        "pending events buffer full, dropping oldest event {}",
                        oldest.event.event_type()
                    );
                }
                Ok(Kept::Added(n))
            }
            Admit::DroppedNewest(newest) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.note_loss(inner);
                tracing::warn!(
                    event_type = %newest.event.event_type(), id = %newest.event.id(),
                    "pending events buffer full, dropping event {}",
                    newest.event.event_type()
                );
                Ok(Kept::Dropped(inner.buffer.len()))
            }
            Admit::Rejected(p) => Err(NotKept::Full(Arc::unwrap_or_clone(p.event))),
        }
    }

    /// Takes out, counts and logs the events older than the age bound.
    pub(crate) fn expire(&self, inner: &mut Inner) {
        for old in inner.buffer.expire(Instant::now()) {
            self.counters.expired.fetch_add(1, Ordering::Relaxed);
            inner.last_loss = Some(Utc::now());
            self.forget(old.seq);
            tracing::warn!(
                event_type = %old.event.event_type(), id = %old.event.id(),
                "pending event {} expired after {:?} without reaching the broker, dropping it",
                old.event.event_type(), old.since.elapsed()
            );
        }
    }

    /// Stamps the time of the latest lost event (for health).
    pub(crate) fn note_loss(&self, inner: &mut Inner) {
        inner.last_loss = Some(Utc::now());
    }

    /// The store append of event `seq` has ended, or its caller gave up
    /// waiting for it: the drain may take the event. If a bound dropped it
    /// meanwhile (logged and counted there), the store forgets it too (a
    /// remove that reaches the store before the append keeps the append out).
    /// Whether the event is still buffered.
    pub(crate) fn stored(&self, seq: u64) -> bool {
        let buffered = self.lock().buffer.mark_ready(seq);
        if !buffered {
            self.forget(seq);
        }
        self.wake_drain.notify_one();
        buffered
    }

    /// The event `seq` left the buffer (confirmed or dropped): the store forgets it.
    pub(crate) fn forget(&self, seq: u64) {
        if let Some(store) = &self.store {
            store.remove(seq);
        }
    }

    /// The address shown: the current session's while connected, otherwise
    /// the backend's (every configured address).
    pub(crate) fn url(&self) -> String {
        self.current_tx
            .borrow()
            .session
            .as_ref()
            .and_then(|s| s.url())
            .unwrap_or_else(|| self.info.url.clone())
    }

    /// Wakes shutdown if nothing is pending any more.
    pub(crate) fn notify_if_idle(&self, inner: &Inner) {
        if inner.buffer.is_idle() {
            self.idle.notify_waiters();
        }
    }

    /// A mark of the broker's answers so far, for [`Shared::silent_since`].
    pub(crate) fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    /// The broker confirmed a direct publish (not through the buffer): it
    /// answered, and the event counts as published and confirmed.
    pub(crate) fn confirmed_directly(&self) -> PublishOutcome {
        self.answered();
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        self.counters.confirmed.fetch_add(1, Ordering::Relaxed);
        PublishOutcome::Confirmed
    }

    /// The broker answered a send (a confirm, a nack, a refusal): it is
    /// alive, so publishing is no longer stalled.
    pub(crate) fn answered(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
        if self.stalled.load(Ordering::Relaxed) {
            let mut inner = self.lock();
            self.set_stalled(&mut inner, false);
        }
    }

    /// Whether the broker has answered nothing since `mark` (from
    /// [`Shared::answers`]) was taken.
    pub(crate) fn silent_since(&self, mark: u64) -> bool {
        self.answers() == mark
    }

    /// Marks publishing stalled (the broker answers nothing) or not, and says so.
    pub(crate) fn set_stalled(&self, inner: &mut Inner, stalled: bool) {
        inner.probe = false;
        if std::mem::replace(&mut inner.stalled, stalled) == stalled {
            return;
        }
        self.stalled.store(stalled, Ordering::Relaxed);
        let broker = self.broker();
        if stalled {
            let wait = self.config.confirm_wait();
            inner.last_error = Some(format!(
                "{broker} has confirmed nothing for {wait:?} while publishes await its answer"
            ));
            tracing::warn!(
                confirm_wait = ?wait, in_flight = inner.buffer.in_flight(),
                "{broker} has confirmed nothing for {wait:?}; events are buffered until it answers \
                 (the connection is given up when its heartbeats stop)"
            );
        } else {
            tracing::info!("{broker} answers publishes again");
            self.wake_drain.notify_one();
        }
    }

    /// While stalled, every send awaited ended without an answer (publish
    /// timeouts): one event may go to probe the broker.
    pub(crate) fn probe_after_timeouts(&self, inner: &mut Inner) {
        if !inner.probe {
            inner.probe = true;
            tracing::debug!("no send awaits an answer any more; one event probes the broker");
        }
    }

    /// The session is gone: whatever it was, it no longer stalls publishing.
    pub(crate) fn unstall_quietly(&self, inner: &mut Inner) {
        inner.stalled = false;
        inner.probe = false;
        self.stalled.store(false, Ordering::Relaxed);
    }

    pub(crate) fn status(&self) -> ConnectionStatus {
        let inner = self.lock();
        let c = &self.counters;
        let mut s = ConnectionStatus::for_backend(self.state(), &self.info);
        s.url = self.url();
        s.blocked = inner.blocked;
        s.stalled = inner.stalled;
        s.pending_events = inner.buffer.len();
        s.oldest_pending_age = inner.buffer.oldest().map(|t| t.elapsed());
        s.dropped_events = c.dropped.load(Ordering::Relaxed);
        s.expired_events = c.expired.load(Ordering::Relaxed);
        s.refused_events = c.refused.load(Ordering::Relaxed);
        s.unreadable_events = c.unreadable.load(Ordering::Relaxed);
        s.store = self.store.as_ref().map(|st| st.describe());
        s.last_error = inner.last_error.clone();
        s.reconnect_attempts = inner.reconnect_attempts;
        s.reconnects = c.reconnects.load(Ordering::Relaxed);
        s.since = inner.since;
        s.last_connected = inner.last_connected;
        s.last_loss = inner.last_loss;
        s.published = c.published.load(Ordering::Relaxed);
        s.confirmed = c.confirmed.load(Ordering::Relaxed);
        s.buffered = c.buffered.load(Ordering::Relaxed);
        s.failed = c.failed.load(Ordering::Relaxed);
        s
    }
}
