//! `RedbStore`: the durable [`PendingStore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::Utc;
use flow_events_core::{Event, PendingStore, Recovered, StoreError, StoreErrorKind};
use redb::{Database, Durability, TableDefinition};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::oneshot;

use crate::error::{fail, io_error};
use crate::group::Group;
use crate::open::open_for_store;
use crate::record::{self, encode};
use crate::writer::{Answer, Op, Writer};

/// A [`PendingStore`] in one redb file: pending events survive a crash or a
/// restart of the service.
///
/// Appends from concurrent publishers share one commit (one fsync); removes
/// ride along with the next commit. The commit runs on a publisher's own
/// thread (inside [`tokio::task::block_in_place`] on a multi-threaded runtime,
/// on the blocking pool on a current-thread one): one publisher pays one
/// commit and no hand-over between threads, and the publishers that arrive
/// during a commit share the next one. A background thread commits removes
/// when no append comes; dropping the store lets it finish what is queued,
/// make the last removes durable and close the file (a few milliseconds at
/// most), which releases the file lock.
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
    group: Arc<Group>,
    background: Option<JoinHandle<()>>,
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
        let mut opened = open_for_store(&path)?;
        if let Err(e) = presize(&opened.db, &path) {
            // Not needed for correctness: go on with the file as it is, opened
            // again (redb refuses writes after an I/O error).
            tracing::warn!(path = %path.display(), error = %e, "could not grow outbox {} ahead of use: {e}", path.display());
            drop(opened);
            opened = open_for_store(&path)?;
        }
        let group = Arc::new(Group::new(Writer::new(
            path.clone(),
            opened.db,
            opened.problem,
        )));
        let background = {
            let group = group.clone();
            std::thread::Builder::new()
                .name("flow-events-outbox".to_owned())
                .spawn(move || group.background())
                .map_err(|e| {
                    StoreError::new(
                        StoreErrorKind::Other,
                        format!("cannot start the outbox background thread: {e}"),
                    )
                    .with_source(e)
                })?
        };
        Ok(Self {
            path,
            group,
            background: Some(background),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durable (fsync'd) commits so far. With many concurrent publishers this
    /// grows much more slowly than [`RedbStore::appends`]: they share commits.
    pub fn durable_commits(&self) -> u64 {
        self.group.stats().durable_commits.load(Ordering::Relaxed)
    }

    /// Appends made durable so far.
    pub fn appends(&self) -> u64 {
        self.group.stats().appends.load(Ordering::Relaxed)
    }

    /// Queues a request and waits for its answer, leading the commit when
    /// nobody else does.
    async fn request(&self, op: Op, answer: oneshot::Receiver<Answer>) -> Answer {
        let mut answer = answer;
        if self.group.push(op) {
            self.lead().await;
        }
        loop {
            match answer.await {
                Ok(Answer::Lead(token)) => {
                    answer = token.take();
                    self.lead().await;
                }
                Ok(done) => return done,
                Err(_) => return Answer::Stored(Err(self.lost())),
            }
        }
    }

    /// Commits a batch on this thread. On a multi-threaded runtime the worker
    /// hands its other tasks to another thread for the commit's duration; on a
    /// current-thread runtime the commit runs on the blocking pool, so the
    /// runtime's one thread never waits for the disk.
    async fn lead(&self) {
        match Handle::try_current() {
            Ok(rt) if rt.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.group.lead());
            }
            Ok(_) => {
                let group = self.group.clone();
                // If this future is dropped the commit still runs to the end
                // and hands the lead on.
                if tokio::task::spawn_blocking(move || group.lead())
                    .await
                    .is_err()
                {
                    tracing::error!(path = %self.path.display(), "outbox commit task failed");
                }
            }
            Err(_) => self.group.lead(),
        }
    }

    fn lost(&self) -> StoreError {
        StoreError::new(
            StoreErrorKind::Other,
            format!(
                "outbox {}: the commit of this request failed without an answer",
                self.path.display()
            ),
        )
    }
}

/// The size an outbox file is grown to when it is smaller.
const PRESIZE: u64 = 4 << 20;

/// Grows a small outbox file to about [`PRESIZE`] once, with pages that are
/// freed again at once (64 KiB stay in a table of their own, at the end of the
/// file, so that redb does not shrink it back): later commits reuse them instead of growing the file, and a
/// commit that grows the file costs the filesystem's journal on top of the
/// fsync (the p99 of a one-publisher append on a fresh file was about three
/// times that on a grown one).
fn presize(db: &Database, path: &Path) -> Result<(), StoreError> {
    const ROOM: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("room");
    const CHUNK: usize = 64 * 1024;
    let len = std::fs::metadata(path)
        .map_err(|e| io_error(path, "cannot read the size of", e))?
        .len();
    if len >= PRESIZE {
        return Ok(());
    }
    let chunks = (PRESIZE - len) / CHUNK as u64;
    let chunk = vec![0u8; CHUNK];
    let mut txn = db.begin_write().map_err(fail(path, "begin write"))?;
    txn.set_durability(Durability::None);
    {
        let mut room = txn.open_table(ROOM).map_err(fail(path, "open table"))?;
        for i in 0..chunks {
            room.insert(i, chunk.as_slice())
                .map_err(fail(path, "grow"))?;
        }
    }
    txn.commit().map_err(fail(path, "grow"))?;
    // All but the last chunk are freed for reuse; the last, written at the
    // end of the file, keeps redb from trimming the free space off again.
    let mut txn = db.begin_write().map_err(fail(path, "begin write"))?;
    txn.set_durability(Durability::Immediate);
    {
        let mut room = txn.open_table(ROOM).map_err(fail(path, "open table"))?;
        for i in 0..chunks.saturating_sub(1) {
            room.remove(i).map_err(fail(path, "grow"))?;
        }
    }
    txn.commit().map_err(fail(path, "grow"))
}

impl RedbStore {
    /// Writes an encoded record under `seq`; returns once it is durable.
    async fn append_record(&self, seq: u64, record: Vec<u8>) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        match self.request(Op::Append { seq, record, done }, answer).await {
            Answer::Stored(result) => result,
            _ => Err(self.lost()),
        }
    }
}

#[async_trait]
impl PendingStore for RedbStore {
    async fn recover(&self) -> Result<Recovered, StoreError> {
        let (done, answer) = oneshot::channel();
        match self.request(Op::Recover(done), answer).await {
            Answer::Recovered(result) => result,
            Answer::Stored(Err(e)) => Err(e),
            _ => Err(self.lost()),
        }
    }

    async fn append(&self, seq: u64, event: &Event) -> Result<(), StoreError> {
        let record = encode(event, Utc::now()).map_err(|e| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("cannot encode event {}: {e}", event.id()),
            )
            .with_source(e)
        })?;
        self.append_record(seq, record).await
    }

    async fn append_encoded(
        &self,
        seq: u64,
        _event: &Event,
        json: &[u8],
    ) -> Result<(), StoreError> {
        self.append_record(seq, record::from_json(json, Utc::now()))
            .await
    }

    fn remove(&self, seq: u64) {
        self.group.push_remove(seq);
    }

    fn describe(&self) -> String {
        format!("redb {}", self.path.display())
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // The background thread commits what is queued, flushes and closes
        // the file.
        self.group.close();
        if let Some(background) = self.background.take()
            && background.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "outbox background thread panicked");
        }
    }
}
