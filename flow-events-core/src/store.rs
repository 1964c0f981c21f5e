//! Where pending events are kept until the broker confirms them.
//!
//! The resilience decorator always keeps its pending events in memory, in
//! order. A [`PendingStore`] adds a copy that outlives the process: with a
//! durable store, `publish` answers `Buffered` only once the event is on disk,
//! and a restarted service publishes what the last run left, first and in order.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::BoxError;
use crate::event::Event;

/// What went wrong with a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// Another process holds the store (its file is locked).
    Locked,
    /// The store could not be read in full; see the message.
    Corrupt,
    /// The disk is full or refused the write.
    Io,
    /// Anything else.
    Other,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Locked => "store locked by another process",
            Self::Corrupt => "store corrupt",
            Self::Io => "store write failed",
            Self::Other => "store error",
        })
    }
}

/// A store failed.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl StoreError {
    /// A new error.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

/// One stored event: its sequence number (publish order) and when it was stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Publish order; larger is later.
    pub seq: u64,
    /// The event.
    pub event: Event,
    /// When it was stored.
    pub stored_at: DateTime<Utc>,
}

/// What a store found at start-up.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Recovered {
    /// The events, in sequence order.
    pub events: Vec<StoredEvent>,
    /// Records that could not be read (corrupt or truncated), skipped.
    pub unreadable: u64,
    /// What happened, when something could not be read.
    pub problem: Option<String>,
}

impl Recovered {
    /// A recovery of `events` with nothing unreadable.
    pub fn new(events: Vec<StoredEvent>) -> Self {
        Self {
            events,
            unreadable: 0,
            problem: None,
        }
    }

    /// Records `unreadable` records and what happened.
    pub fn with_unreadable(mut self, unreadable: u64, problem: impl Into<String>) -> Self {
        self.unreadable = unreadable;
        self.problem = Some(problem.into());
        self
    }
}

/// Keeps pending events until the broker confirms them.
#[async_trait]
pub trait PendingStore: Send + Sync + 'static {
    /// What the last run left, in sequence order. Called once, before any append.
    async fn recover(&self) -> Result<Recovered, StoreError>;

    /// Stores `event` under `seq`; returns once it is durable. Concurrent calls
    /// may share one commit.
    async fn append(&self, seq: u64, event: &Event) -> Result<(), StoreError>;

    /// [`PendingStore::append`] of an event whose JSON encoding (`json`, what
    /// `serde_json::to_vec(event)` gives) the caller has made already: a
    /// store that writes the JSON writes these bytes instead of encoding the
    /// event again. The default ignores them and calls `append`.
    async fn append_encoded(&self, seq: u64, event: &Event, json: &[u8]) -> Result<(), StoreError> {
        let _ = json;
        self.append(seq, event).await
    }

    /// The broker confirmed `seq` (or it was dropped by a bound): forget it.
    /// Need not be durable at once: an event forgotten late is published again
    /// after a crash (at-least-once).
    fn remove(&self, seq: u64);

    /// A short description for logs and status (a path, `memory`).
    fn describe(&self) -> String;
}

/// A store behind an `Arc` is a store: a service can keep a handle on it.
#[async_trait]
impl<T: PendingStore + ?Sized> PendingStore for std::sync::Arc<T> {
    async fn recover(&self) -> Result<Recovered, StoreError> {
        (**self).recover().await
    }
    async fn append(&self, seq: u64, event: &Event) -> Result<(), StoreError> {
        (**self).append(seq, event).await
    }
    fn remove(&self, seq: u64) {
        (**self).remove(seq);
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A [`PendingStore`] in memory: nothing survives the process, but it survives
/// a `Resilient` being dropped and started again over the same store, which is
/// how tests simulate a restart.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    events: Arc<Mutex<BTreeMap<u64, StoredEvent>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, StoredEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl PendingStore for MemoryStore {
    async fn recover(&self) -> Result<Recovered, StoreError> {
        Ok(Recovered::new(self.lock().values().cloned().collect()))
    }

    async fn append(&self, seq: u64, event: &Event) -> Result<(), StoreError> {
        // Copied before the lock is taken: concurrent publishers wait on it
        // only for the insert.
        let stored = StoredEvent {
            seq,
            event: event.clone(),
            stored_at: Utc::now(),
        };
        self.lock().insert(seq, stored);
        Ok(())
    }

    fn remove(&self, seq: u64) {
        self.lock().remove(&seq);
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}
