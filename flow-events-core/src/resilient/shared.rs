//! State shared by the handle, the supervisor task and the consumer tasks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendInfo, Session};
use crate::config::Config;
use crate::event::Event;
use crate::monitor::{ConnectionState, ConnectionStatus};

use super::buffer::{Admit, Bounds, Pending, PendingBuffer};
use crate::store::PendingStore;

/// The current session and its generation (0: none yet).
#[derive(Clone, Default)]
pub(crate) struct Current {
    pub(crate) generation: u64,
    pub(crate) session: Option<Arc<dyn Session>>,
}

pub(crate) struct Inner {
    pub(crate) buffer: PendingBuffer,
    /// The live session; `None` while not connected.
    pub(crate) session: Option<Arc<dyn Session>>,
    pub(crate) blocked: bool,
    pub(crate) state: ConnectionState,
    pub(crate) since: DateTime<Utc>,
    pub(crate) last_error: Option<String>,
    pub(crate) reconnect_attempts: u32,
    pub(crate) last_connected: Option<DateTime<Utc>>,
    /// When an event was last dropped or expired.
    pub(crate) last_loss: Option<DateTime<Utc>>,
}

/// What buffering did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kept {
    /// Buffered; the pending count.
    Added(usize),
    /// Dropped by drop-newest; the pending count.
    Dropped(usize),
}

impl Inner {
    /// The session to publish on directly: connected, not blocked, and nothing
    /// pending that a new event must not overtake (events the drain has already
    /// sent on this session are ahead of it on the wire).
    pub(crate) fn direct_session(&self) -> Option<&Arc<dyn Session>> {
        match &self.session {
            Some(s) if !self.blocked && self.buffer.accepts_direct() => Some(s),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) confirmed: AtomicU64,
    pub(crate) buffered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) unreadable: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) info: BackendInfo,
    pub(crate) config: Config,
    pub(crate) store: Option<Arc<dyn PendingStore>>,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) state_tx: watch::Sender<ConnectionState>,
    pub(crate) current_tx: watch::Sender<Current>,
    /// Wakes the drainer: events were buffered, or the broker unblocked.
    pub(crate) wake_drain: Notify,
    /// Wakes shutdown: the buffer became idle.
    pub(crate) idle: Notify,
    pub(crate) counters: Counters,
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
            inner: Mutex::new(Inner {
                buffer: PendingBuffer::new(bounds),
                session: None,
                blocked: false,
                state: ConnectionState::Disconnected,
                since: Utc::now(),
                last_error: None,
                reconnect_attempts: 0,
                last_connected: None,
                last_loss: None,
            }),
            config,
            state_tx: watch::channel(ConnectionState::Disconnected).0,
            current_tx: watch::channel(Current::default()).0,
            wake_drain: Notify::new(),
            idle: Notify::new(),
            counters: Counters::default(),
            closing: AtomicBool::new(false),
            cancel: CancellationToken::new(),
        }
    }

    /// Locks the inner state. A poisoned lock (a panic while holding it) still
    /// holds consistent data: every critical section is a few field updates.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state, stamps `since` and tells the watchers. Returns whether it changed.
    pub(crate) fn set_state(&self, inner: &mut Inner, state: ConnectionState) -> bool {
        if inner.state == state {
            return false;
        }
        inner.state = state;
        inner.since = Utc::now();
        self.state_tx.send_replace(state);
        true
    }

    /// Buffers an event, applying the overflow policy: `Ok(Kept::Added(n))`,
    /// or `Ok(Kept::Dropped(n))` under drop-newest (logged and counted here);
    /// `Err` hands the event back (reject policy).
    pub(crate) fn buffer(&self, inner: &mut Inner, pending: Pending) -> Result<Kept, Event> {
        self.expire(inner);
        match inner.buffer.admit(pending) {
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
            Admit::Rejected(p) => Err(Arc::unwrap_or_clone(p.event)),
        }
    }

    /// Takes out, counts and logs the events older than the age bound.
    pub(crate) fn expire(&self, inner: &mut Inner) {
        for old in inner.buffer.expire(tokio::time::Instant::now()) {
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
    pub(crate) fn url(&self, inner: &Inner) -> String {
        inner
            .session
            .as_ref()
            .and_then(|s| s.url())
            .unwrap_or_else(|| self.info.url.clone())
    }

    pub(crate) fn status(&self) -> ConnectionStatus {
        let inner = self.lock();
        let c = &self.counters;
        let mut s = ConnectionStatus::for_backend(inner.state, &self.info);
        s.url = self.url(&inner);
        s.blocked = inner.blocked;
        s.pending_events = inner.buffer.len();
        s.oldest_pending_age = inner.buffer.oldest().map(|t| t.elapsed());
        s.dropped_events = c.dropped.load(Ordering::Relaxed);
        s.expired_events = c.expired.load(Ordering::Relaxed);
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
