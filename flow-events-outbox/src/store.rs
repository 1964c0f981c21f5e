//! `RedbStore`: the durable [`PendingStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::Utc;
use flow_events_core::{Event, PendingStore, Recovered, StoreError, StoreErrorKind};
use tokio::sync::oneshot;

use crate::open::open_for_store;
use crate::record::encode;
use crate::writer::{Op, Stats, Writer};

/// A [`PendingStore`] in one redb file: pending events survive a crash or a
/// restart of the service.
///
/// Appends from concurrent publishers share one commit (one fsync); removes
/// ride along with the next commit. One thread owns the file; dropping the
/// store lets it finish what is queued, makes the last removes durable, and
/// waits for it (a few milliseconds at most), which releases the file lock.
///
/// ```
/// use flow_events_core::{Event, EventSink, PublishOutcome, Resilient};
/// use flow_events_memory::MemoryBroker;
/// use flow_events_outbox::RedbStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let broker = MemoryBroker::new();
/// broker.take_down();
/// let events = Resilient::builder(broker.backend())
///     .with_store(RedbStore::open(dir.path().join("outbox.redb"))?)
///     .start()
///     .await?;
/// // The broker is down: the event is on disk when `publish` answers.
/// let outcome = events.publish(Event::try_new("order.created", serde_json::json!({"id": 1}))?).await?;
/// assert!(matches!(outcome, PublishOutcome::Buffered { .. }));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedbStore {
    path: PathBuf,
    tx: Option<Sender<Op>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<Stats>,
}

impl RedbStore {
    /// Opens the outbox at `path`, creating it (and its directory) if missing.
    ///
    /// Fails with [`StoreErrorKind::Locked`] when another process has it open,
    /// and [`StoreErrorKind::Io`] when it cannot be created or read from disk.
    /// A file whose content redb cannot use does not fail: it is moved aside to
    /// `<path>.corrupt-<time>`, a fresh outbox is started, and
    /// [`PendingStore::recover`] reports it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let opened = open_for_store(&path)?;
        let (tx, rx) = channel();
        let stats = Arc::new(Stats::default());
        let writer = Writer::new(path.clone(), opened.db, rx, stats.clone(), opened.problem);
        let writer = std::thread::Builder::new()
            .name("flow-events-outbox".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| {
                StoreError::new(
                    StoreErrorKind::Other,
                    format!("cannot start the outbox writer thread: {e}"),
                )
                .with_source(e)
            })?;
        Ok(Self {
            path,
            tx: Some(tx),
            writer: Some(writer),
            stats,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durable (fsync'd) commits so far. With many concurrent publishers this
    /// grows much more slowly than [`RedbStore::appends`]: they share commits.
    pub fn durable_commits(&self) -> u64 {
        self.stats.durable_commits.load(Ordering::Relaxed)
    }

    /// Appends made durable so far.
    pub fn appends(&self) -> u64 {
        self.stats.appends.load(Ordering::Relaxed)
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(op).ok())
            .ok_or_else(|| self.stopped())
    }

    fn stopped(&self) -> StoreError {
        StoreError::new(
            StoreErrorKind::Other,
            format!("the writer of outbox {} has stopped", self.path.display()),
        )
    }
}

#[async_trait]
impl PendingStore for RedbStore {
    async fn recover(&self) -> Result<Recovered, StoreError> {
        let (done, answer) = oneshot::channel();
        self.send(Op::Recover(done))?;
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    async fn append(&self, seq: u64, event: &Event) -> Result<(), StoreError> {
        let record = encode(event, Utc::now()).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot encode event {}: {e}", event.id()),
            )
            .with_source(e)
        })?;
        let (done, answer) = oneshot::channel();
        self.stats.queued_appends.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.send(Op::Append { seq, record, done }) {
            self.stats.queued_appends.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        answer.await.unwrap_or_else(|_| Err(self.stopped()))
    }

    fn remove(&self, seq: u64) {
        if self.send(Op::Remove(seq)).is_err() {
            tracing::debug!(seq, "outbox writer stopped; remove not recorded");
        }
    }

    fn describe(&self) -> String {
        format!("redb {}", self.path.display())
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has applied what is queued.
        drop(self.tx.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "outbox writer thread panicked");
        }
    }
}
