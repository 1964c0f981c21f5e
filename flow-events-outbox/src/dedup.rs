//! A durable de-duplication store: the ids each subscription has handled, in
//! a redb file, kept for a retention window and up to a number of ids.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use flow_events_core::{DedupStore, EventId, StoreError, StoreErrorKind};
use redb::{
    Database, ReadOnlyTable, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition,
};

use crate::error::store_error;

/// (subscription, id) -> when it was handled, milliseconds since the epoch.
const SEEN: TableDefinition<(&str, u128), u64> = TableDefinition::new("dedup_seen");
/// (when handled, subscription, id): the oldest first, for pruning.
const BY_TIME: TableDefinition<(u64, &str, u128), ()> = TableDefinition::new("dedup_by_time");

/// Ids pruned at most per write, so that one write stays short.
const PRUNE_BATCH: usize = 256;

/// The ids each subscription has handled, in a redb file: a redelivered or
/// duplicated event is skipped across restarts of the consumer. An id is
/// forgotten after the retention window, and the oldest ones first once the
/// store holds more than its bound (both checked at each write, a few
/// hundred ids at a time). Every write is committed to disk before the
/// delivery is acknowledged.
///
/// One file can serve several subscriptions (the ids are kept per
/// subscription); it is locked by the process that opened it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flow_events_core::{DedupStore, EventId, Subscription, TopicPattern};
/// use flow_events_outbox::RedbDedupStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = RedbDedupStore::open(dir.path().join("dedup.redb"))
///     .unwrap()
///     .with_retention(Duration::from_secs(7 * 86_400))
///     .with_max_ids(1_000_000);
/// let id = EventId::new();
/// store.remember("billing", id).await.unwrap();
/// assert!(store.seen("billing", id).await.unwrap());
/// assert!(!store.seen("shipping", id).await.unwrap());
/// let sub = Subscription::new("billing", TopicPattern::all())
///     .unwrap()
///     .with_dedup_store(Arc::new(store));
/// # let _ = sub;
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RedbDedupStore {
    db: Arc<Database>,
    path: PathBuf,
    retention: Duration,
    max_ids: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RedbDedupStore {
    /// Opens (or creates) the store at `path`. Defaults: ids kept 7 days,
    /// at most 1 000 000 of them.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| store_error(&path, "open", e))?;
        let txn = db
            .begin_write()
            .map_err(|e| store_error(&path, "open", e))?;
        txn.open_table(SEEN)
            .map_err(|e| store_error(&path, "open", e))?;
        txn.open_table(BY_TIME)
            .map_err(|e| store_error(&path, "open", e))?;
        txn.commit().map_err(|e| store_error(&path, "open", e))?;
        Ok(Self {
            db: Arc::new(db),
            path,
            retention: Duration::from_secs(7 * 86_400),
            max_ids: 1_000_000,
        })
    }

    /// How long an id is remembered. Default: 7 days.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The most ids kept (all subscriptions together), at least 1; the oldest
    /// go first. Default: 1 000 000.
    pub fn with_max_ids(mut self, max_ids: u64) -> Self {
        self.max_ids = max_ids.max(1);
        self
    }

    /// The ids kept now.
    pub fn len(&self) -> Result<u64, StoreError> {
        self.read_seen(|seen| seen.len())
    }

    /// Whether it keeps no id.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    fn retention_ms(&self) -> u64 {
        u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX)
    }

    /// Reads the table of seen ids in a read transaction of its own.
    fn read_seen<T>(
        &self,
        read: impl FnOnce(&ReadOnlyTable<(&'static str, u128), u64>) -> Result<T, StorageError>,
    ) -> Result<T, StoreError> {
        let path = &self.path;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| store_error(path, "read", e))?;
        let seen = txn
            .open_table(SEEN)
            .map_err(|e| store_error(path, "read", e))?;
        read(&seen).map_err(|e| store_error(path, "read", e))
    }

    fn seen_now(&self, subscription: &str, id: u128) -> Result<bool, StoreError> {
        let at = self.read_seen(|seen| Ok(seen.get((subscription, id))?.map(|v| v.value())))?;
        Ok(at.is_some_and(|at| now_ms().saturating_sub(at) <= self.retention_ms()))
    }

    fn remember_now(&self, subscription: &str, id: u128) -> Result<(), StoreError> {
        let path = &self.path;
        let now = now_ms();
        let txn = self
            .db
            .begin_write()
            .map_err(|e| store_error(path, "write", e))?;
        {
            let mut seen = txn
                .open_table(SEEN)
                .map_err(|e| store_error(path, "write", e))?;
            let mut by_time = txn
                .open_table(BY_TIME)
                .map_err(|e| store_error(path, "write", e))?;
            let before = seen
                .insert((subscription, id), now)
                .map_err(|e| store_error(path, "write", e))?
                .map(|v| v.value());
            if let Some(before) = before {
                by_time
                    .remove((before, subscription, id))
                    .map_err(|e| store_error(path, "write", e))?;
            }
            by_time
                .insert((now, subscription, id), ())
                .map_err(|e| store_error(path, "write", e))?;
            // Forget what is past the retention, then the oldest beyond the bound.
            let cutoff = now.saturating_sub(self.retention_ms());
            let len = seen.len().map_err(|e| store_error(path, "write", e))?;
            let over = len.saturating_sub(self.max_ids);
            let mut gone: Vec<(u64, String, u128)> = Vec::new();
            for entry in by_time.iter().map_err(|e| store_error(path, "write", e))? {
                let (key, _) = entry.map_err(|e| store_error(path, "write", e))?;
                let (at, sub, old) = key.value();
                let counted = u64::try_from(gone.len()).unwrap_or(u64::MAX);
                if gone.len() >= PRUNE_BATCH || (at >= cutoff && counted >= over) {
                    break;
                }
                gone.push((at, sub.to_owned(), old));
            }
            for (at, sub, old) in &gone {
                by_time
                    .remove((*at, sub.as_str(), *old))
                    .map_err(|e| store_error(path, "write", e))?;
                seen.remove((sub.as_str(), *old))
                    .map_err(|e| store_error(path, "write", e))?;
            }
        }
        txn.commit().map_err(|e| store_error(path, "commit", e))
    }
}

/// Runs a store operation off the async threads (redb reads and writes the
/// file synchronously; a commit waits for the disk).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::new(
            StoreErrorKind::Other,
            format!("de-duplication store task failed: {e}"),
        ))
    })
}

#[async_trait]
impl DedupStore for RedbDedupStore {
    async fn seen(&self, subscription: &str, id: EventId) -> Result<bool, StoreError> {
        let (store, subscription) = (self.clone(), subscription.to_owned());
        blocking(move || store.seen_now(&subscription, id.as_uuid().as_u128())).await
    }

    async fn remember(&self, subscription: &str, id: EventId) -> Result<(), StoreError> {
        let (store, subscription) = (self.clone(), subscription.to_owned());
        blocking(move || store.remember_now(&subscription, id.as_uuid().as_u128())).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn ids_survive_a_reopen_and_are_kept_per_subscription() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedup.redb");
        let id = EventId::new();
        {
            let store = RedbDedupStore::open(&path).unwrap();
            store.remember("a", id).await.unwrap();
        }
        let store = RedbDedupStore::open(&path).unwrap();
        assert!(store.seen("a", id).await.unwrap());
        assert!(!store.seen("b", id).await.unwrap());
        assert!(!store.seen("a", EventId::new()).await.unwrap());
    }

    #[tokio::test]
    async fn the_bound_forgets_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbDedupStore::open(dir.path().join("d.redb"))
            .unwrap()
            .with_max_ids(3);
        let ids: Vec<EventId> = (0..5).map(|_| EventId::new()).collect();
        for id in &ids {
            store.remember("a", *id).await.unwrap();
        }
        assert_eq!(store.len().unwrap(), 3);
        assert!(store.seen("a", ids[4]).await.unwrap());
        assert!(!store.seen("a", ids[0]).await.unwrap());
    }

    #[tokio::test]
    async fn ids_past_the_retention_are_not_seen_and_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbDedupStore::open(dir.path().join("d.redb"))
            .unwrap()
            .with_retention(Duration::ZERO);
        let old = EventId::new();
        store.remember("a", old).await.unwrap();
        // Zero retention: seen only within the same millisecond at most.
        let later = now_ms();
        while now_ms() == later {
            std::thread::yield_now();
        }
        assert!(!store.seen("a", old).await.unwrap());
        store.remember("a", EventId::new()).await.unwrap();
        assert_eq!(store.len().unwrap(), 1, "the old id was pruned");
    }

    #[test]
    fn a_second_open_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let _first = RedbDedupStore::open(&path).unwrap();
        let err = RedbDedupStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Locked);
    }
}
