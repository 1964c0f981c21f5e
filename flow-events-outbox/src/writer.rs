//! The writer thread: the one owner of the database. It takes everything
//! queued (appends and removes, in arrival order), applies it in one write
//! transaction, commits once, then answers every waiting append: concurrent
//! appends share one fsync.
//!
//! A batch without an append (only removes) is committed without an fsync
//! (`Durability::None`); the next durable commit makes it durable, and so
//! does a flush after [`FLUSH_AFTER`] without other work. A remove lost in a
//! crash only means the event is published again (at-least-once).

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use flow_events_core::{Recovered, StoreError, StoreErrorKind, StoredEvent};
use redb::{Database, Durability};
use tokio::sync::oneshot;

use crate::error::{copy_error, fail, needs_reopen};
use crate::open::open_for_store;
use crate::record::PENDING;
use crate::salvage::{Scan, rewrite, scan, set_aside};

/// Most operations taken into one transaction.
const MAX_BATCH: usize = 8192;
/// How long removes may stay in non-durable commits when nothing else comes.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Non-durable commits in a row before one is made durable anyway.
const MAX_UNFLUSHED: u32 = 64;
/// Longest wait for more appends between two arrivals while gathering.
const GATHER_IDLE: Duration = Duration::from_micros(200);
/// Longest wait for more appends in all before a commit.
const GATHER_MAX: Duration = Duration::from_millis(2);
/// Removes remembered for appends that have not arrived yet.
const MAX_TOMBSTONES: usize = 65_536;

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Op {
    /// Store `record` under `seq`, answer once durable.
    Append {
        seq: u64,
        record: Vec<u8>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Forget `seq`.
    Remove(u64),
    /// Read what is stored.
    Recover(oneshot::Sender<Result<Recovered, StoreError>>),
}

/// Counters shared with the store handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Durable (fsync'd) commits.
    pub(crate) durable_commits: AtomicU64,
    /// Appends made durable.
    pub(crate) appends: AtomicU64,
    /// Appends sent and not answered yet.
    pub(crate) queued_appends: AtomicUsize,
}

/// The writer thread's state.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) path: PathBuf,
    pub(crate) db: Option<Database>,
    pub(crate) rx: Receiver<Op>,
    pub(crate) stats: Arc<Stats>,
    /// What opening the file found, reported by the first recovery.
    pub(crate) open_problem: Option<(u64, String)>,
    /// Removes that came before their append: that append is not written.
    tombstones: BTreeSet<u64>,
    /// Non-durable commits since the last durable one.
    unflushed: u32,
    /// Appends the next commit may expect: those the last one answered and
    /// those queued at that moment.
    expect: usize,
}

impl Writer {
    pub(crate) fn new(
        path: PathBuf,
        db: Database,
        rx: Receiver<Op>,
        stats: Arc<Stats>,
        open_problem: Option<(u64, String)>,
    ) -> Self {
        Self {
            path,
            db: Some(db),
            rx,
            stats,
            open_problem,
            tombstones: BTreeSet::new(),
            unflushed: 0,
            expect: 0,
        }
    }

    /// Serves requests until every sender is gone, then makes the last
    /// removes durable.
    pub(crate) fn run(mut self) {
        let mut batch = Vec::new();
        loop {
            let first = if self.unflushed > 0 {
                match self.rx.recv_timeout(FLUSH_AFTER) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.flush();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(op) => op,
                    Err(_) => break,
                }
            };
            batch.push(first);
            self.take_queued(&mut batch);
            self.gather(&mut batch);
            self.process(&mut batch);
        }
        if self.unflushed > 0 {
            self.flush();
        }
    }

    /// Moves what is queued into `batch`, up to [`MAX_BATCH`].
    fn take_queued(&mut self, batch: &mut Vec<Op>) {
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
    }

    /// Waits a little for the publishers the last commit answered: with many
    /// publishers they come back within microseconds, and one commit for all
    /// of them costs one fsync instead of two. Waits only while fewer appends
    /// are in hand than the last commit answered plus those queued then, at
    /// most [`GATHER_IDLE`] between arrivals and [`GATHER_MAX`] in all. One
    /// publisher never waits.
    fn gather(&mut self, batch: &mut Vec<Op>) {
        let mut appends = batch
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count();
        if appends == 0 || appends >= self.expect {
            return;
        }
        let deadline = Instant::now() + GATHER_MAX;
        while appends < self.expect && batch.len() < MAX_BATCH {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.rx.recv_timeout(left.min(GATHER_IDLE)) {
                Ok(op) => {
                    appends += usize::from(matches!(op, Op::Append { .. }));
                    batch.push(op);
                }
                Err(_) => break,
            }
        }
    }

    /// Applies `batch` in order: writes are grouped into one commit; a
    /// recovery commits what came before it first.
    fn process(&mut self, batch: &mut Vec<Op>) {
        let mut writes = Vec::with_capacity(batch.len());
        for op in batch.drain(..) {
            match op {
                Op::Recover(done) => {
                    if !writes.is_empty() {
                        self.commit(std::mem::take(&mut writes));
                    }
                    let _ = done.send(self.recover());
                }
                write => writes.push(write),
            }
        }
        if !writes.is_empty() {
            self.commit(writes);
        }
    }

    /// The database, opened again if an error closed it.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            let opened = open_for_store(&self.path)?;
            if let Some((_, problem)) = opened.problem {
                tracing::error!(path = %self.path.display(), "outbox reopened after an error: {problem}");
            }
            self.unflushed = 0;
            self.db = Some(opened.db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "outbox database not open"))
    }

    /// One transaction for `writes`, durable when any of them is an append.
    fn commit(&mut self, writes: Vec<Op>) {
        let appends = writes
            .iter()
            .filter(|op| matches!(op, Op::Append { .. }))
            .count();
        let durable = appends > 0 || self.unflushed + 1 >= MAX_UNFLUSHED;
        let result = catch_unwind(AssertUnwindSafe(|| self.write(&writes, durable)))
            .unwrap_or_else(|_| {
                Err(StoreError::new(
                    StoreErrorKind::Other,
                    format!("redb panicked writing outbox {}", self.path.display()),
                ))
            });
        match &result {
            Ok(()) if durable => {
                self.unflushed = 0;
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .appends
                    .fetch_add(appends as u64, Ordering::Relaxed);
            }
            Ok(()) => self.unflushed += 1,
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(), error = %e, appends,
                    "outbox commit failed: {e}"
                );
                if needs_reopen(e) {
                    // redb refuses every write after an I/O error until the
                    // file is opened again; what was not durable is gone.
                    self.db = None;
                    self.unflushed = 0;
                }
                if appends > 0 {
                    self.after_failure(&writes);
                }
            }
        }
        let mut answered = 0;
        for op in writes {
            if let Op::Append { done, .. } = op {
                answered += 1;
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(copy_error(e)),
                };
                let _ = done.send(answer);
            }
        }
        if answered > 0 {
            self.stats
                .queued_appends
                .fetch_sub(answered, Ordering::Relaxed);
            self.expect = answered + self.stats.queued_appends.load(Ordering::Relaxed);
        }
    }

    /// After a failed commit: applies its removes on their own (they free
    /// space, what a full disk needs, and lost they would mean duplicates),
    /// and takes its appends out in case the failure came after redb had
    /// written them: their callers were told they are not stored.
    fn after_failure(&mut self, writes: &[Op]) {
        let mut removes = Vec::new();
        let mut undo = Vec::new();
        for op in writes {
            match op {
                Op::Remove(seq) => removes.push(Op::Remove(*seq)),
                Op::Append { seq, .. } => undo.push(*seq),
                Op::Recover(_) => {}
            }
        }
        let path = self.path.clone();
        let mut tombstones = std::mem::take(&mut self.tombstones);
        let retried = catch_unwind(AssertUnwindSafe(|| {
            let db = self.db()?;
            apply(db, &path, &mut tombstones, &removes, &undo, true)
        }));
        self.tombstones = tombstones;
        match retried {
            Ok(Ok(())) => {
                self.unflushed = 0;
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    path = %self.path.display(), error = %e,
                    "outbox clean-up after a failed commit failed too: {e}"
                );
                self.db = None;
                self.unflushed = 0;
            }
            Err(_) => {
                self.db = None;
                self.unflushed = 0;
            }
        }
    }

    fn write(&mut self, writes: &[Op], durable: bool) -> Result<(), StoreError> {
        let mut tombstones = std::mem::take(&mut self.tombstones);
        let path = self.path.clone();
        let result = self
            .db()
            .and_then(|db| apply(db, &path, &mut tombstones, writes, &[], durable));
        self.tombstones = tombstones;
        result
    }

    /// An empty durable commit: makes the non-durable commits before it durable.
    fn flush(&mut self) {
        let path = self.path.clone();
        let result = self.db().and_then(|db| {
            let mut txn = db.begin_write().map_err(fail(&path, "begin flush"))?;
            txn.set_durability(Durability::Immediate);
            txn.commit().map_err(fail(&path, "flush"))
        });
        match result {
            Ok(()) => {
                self.unflushed = 0;
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "outbox flush failed: {e}");
                self.db = None;
                self.unflushed = 0;
            }
        }
    }

    /// Reads every record in sequence order. Records that do not decode are
    /// counted, moved to the `unreadable` table (kept for inspection, not
    /// reported again) and skipped. If the table itself cannot be read to the
    /// end, what was read is kept in a fresh file and the old one moved aside.
    fn recover(&mut self) -> Result<Recovered, StoreError> {
        self.tombstones.clear();
        let (mut unreadable, mut problems) = match self.open_problem.take() {
            Some((n, problem)) => (n, vec![problem]),
            None => (0, Vec::new()),
        };
        let path = self.path.clone();
        let scan = scan(self.db()?, &path);
        unreadable += scan.unreadable();
        if let Some(broken) = &scan.broken {
            let aside = self.salvage(&scan)?;
            problems.push(format!(
                "reading outbox {} stopped early ({broken}); the {} events read were kept in a \
                 fresh file and the old one moved aside to {}; how many more it held is unknown",
                path.display(),
                scan.good.len(),
                aside.display()
            ));
        } else if !scan.bad.is_empty() {
            set_aside(self.db()?, &path, &scan)?;
        }
        if let Some(bad) = scan.bad_summary() {
            problems.push(format!(
                "{bad}; they were moved to the outbox's unreadable table"
            ));
        }
        let events: Vec<StoredEvent> = scan.good.into_iter().map(|(event, _)| event).collect();
        let recovered = Recovered::new(events);
        Ok(if problems.is_empty() {
            recovered
        } else {
            recovered.with_unreadable(unreadable, problems.join("; "))
        })
    }

    /// Moves the damaged file aside and writes what was read into a fresh
    /// one; the old file's new name.
    fn salvage(&mut self, scan: &Scan) -> Result<PathBuf, StoreError> {
        self.db = None;
        let (db, aside) = rewrite(&self.path, scan)?;
        self.db = Some(db);
        Ok(aside)
    }
}

/// Applies `writes` in one transaction, then takes out `undo` (appends whose
/// commit was reported failed; no tombstone is kept for them).
fn apply(
    db: &Database,
    path: &Path,
    tombstones: &mut BTreeSet<u64>,
    writes: &[Op],
    undo: &[u64],
    durable: bool,
) -> Result<(), StoreError> {
    let mut txn = db.begin_write().map_err(fail(path, "begin write"))?;
    txn.set_durability(if durable {
        Durability::Immediate
    } else {
        Durability::None
    });
    {
        let mut table = txn.open_table(PENDING).map_err(fail(path, "open table"))?;
        for op in writes {
            match op {
                Op::Append { seq, record, .. } => {
                    if !tombstones.remove(seq) {
                        table
                            .insert(*seq, record.as_slice())
                            .map_err(fail(path, "write"))?;
                    }
                }
                Op::Remove(seq) => {
                    let absent = table.remove(*seq).map_err(fail(path, "remove"))?.is_none();
                    if absent {
                        remember(tombstones, *seq);
                    }
                }
                Op::Recover(_) => {}
            }
        }
        for seq in undo {
            table.remove(*seq).map_err(fail(path, "remove"))?;
        }
    }
    txn.commit().map_err(fail(path, "commit"))
}

/// Remembers a remove that came before its append (bounded: the oldest go).
fn remember(tombstones: &mut BTreeSet<u64>, seq: u64) {
    tombstones.insert(seq);
    while tombstones.len() > MAX_TOMBSTONES {
        tombstones.pop_first();
    }
}
