//! The committer: the one owner of the database, behind a lock. Whoever
//! leads (see [`crate::group`]) takes everything queued (appends and removes,
//! in arrival order), applies it in one write transaction, commits once, then
//! answers every waiting append: concurrent appends share one fsync.
//!
//! A batch without an append (only removes) is committed without an fsync
//! (`Durability::None`); the next durable commit makes it durable, and so
//! does a flush after [`FLUSH_AFTER`] without other work. A remove lost in a
//! crash only means the event is published again (at-least-once).

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use flow_events_core::{Recovered, StoreError, StoreErrorKind, StoredEvent};
use redb::{Database, Durability};
use tokio::sync::oneshot;

use crate::error::{copy_error, fail, needs_reopen};
use crate::open::open_for_store;
use crate::record::PENDING;
use crate::salvage::{Scan, rewrite, scan, set_aside};

/// How long removes may stay in non-durable commits when nothing else comes.
pub(crate) const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Non-durable commits in a row before one is made durable anyway.
const MAX_UNFLUSHED: u32 = 64;
/// Removes remembered for appends that have not arrived yet.
const MAX_TOMBSTONES: usize = 65_536;

/// What a waiting request is told.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The append's commit: durable, or why not.
    Stored(Result<(), StoreError>),
    /// What a recovery read.
    Recovered(Result<Recovered, StoreError>),
    /// Lead: commit what is queued (this request included), then hand on;
    /// the request's answer comes on the token's receiver.
    Lead(crate::group::LeadToken),
}

/// A request to the committer.
#[derive(Debug)]
pub(crate) enum Op {
    /// Store `record` under `seq`, answer once durable.
    Append {
        seq: u64,
        record: Vec<u8>,
        done: oneshot::Sender<Answer>,
    },
    /// Forget `seq`.
    Remove(u64),
    /// Read what is stored.
    Recover(oneshot::Sender<Answer>),
}

/// Counters shared with the store handle.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Durable (fsync'd) commits.
    pub(crate) durable_commits: AtomicU64,
    /// Appends made durable.
    pub(crate) appends: AtomicU64,
    /// Removes are committed but not yet durable: a flush is due.
    pub(crate) unflushed: AtomicBool,
}

/// The database and what goes with it.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) path: PathBuf,
    pub(crate) db: Option<Database>,
    pub(crate) stats: Arc<Stats>,
    /// What opening the file found, reported by the first recovery.
    pub(crate) open_problem: Option<(u64, String)>,
    /// Removes that came before their append: that append is not written.
    tombstones: BTreeSet<u64>,
    /// Non-durable commits since the last durable one.
    unflushed: u32,
    /// Removes whose commit failed, retried with the next one.
    failed_removes: Vec<u64>,
    /// Removes committed without an fsync since the last durable commit: an
    /// error that makes the file be opened again loses them.
    unflushed_removes: Vec<u64>,
}

impl Writer {
    pub(crate) fn new(path: PathBuf, db: Database, open_problem: Option<(u64, String)>) -> Self {
        Self {
            path,
            db: Some(db),
            stats: Arc::default(),
            open_problem,
            tombstones: BTreeSet::new(),
            unflushed: 0,
            failed_removes: Vec::new(),
            unflushed_removes: Vec::new(),
        }
    }

    fn set_unflushed(&mut self, n: u32) {
        self.unflushed = n;
        self.stats.unflushed.store(n > 0, Ordering::Relaxed);
    }

    /// Applies `batch` in order: writes are grouped into one commit; a
    /// recovery commits what came before it first.
    pub(crate) fn process(&mut self, batch: Vec<Op>) {
        let mut writes = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Recover(done) => {
                    if !writes.is_empty() {
                        self.commit(std::mem::take(&mut writes));
                    }
                    let _ = done.send(Answer::Recovered(self.recover()));
                }
                write => writes.push(write),
            }
        }
        if !writes.is_empty() {
            self.commit(writes);
        }
    }

    /// Makes the last removes durable and closes the file (releasing its lock).
    pub(crate) fn close(&mut self) {
        if self.unflushed > 0 {
            self.flush();
        }
        if !self.failed_removes.is_empty() {
            self.after_failure(&[]);
        }
        self.db = None;
    }

    /// The database, opened again if an error closed it.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self.db.is_none() {
            let opened = open_for_store(&self.path)?;
            if let Some((_, problem)) = opened.problem {
                tracing::error!(path = %self.path.display(), "outbox reopened after an error: {problem}");
            }
            self.set_unflushed(0);
            self.db = Some(opened.db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| StoreError::new(StoreErrorKind::Other, "outbox database not open"))
    }

    /// One transaction for `writes`, durable when any of them is an append.
    fn commit(&mut self, mut writes: Vec<Op>) {
        if !self.failed_removes.is_empty() {
            // Removes a full disk refused before go first: freeing space is
            // what such a disk needs.
            let retried: Vec<Op> = std::mem::take(&mut self.failed_removes)
                .into_iter()
                .map(Op::Remove)
                .collect();
            writes.splice(0..0, retried);
        }
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
                self.set_unflushed(0);
                self.unflushed_removes.clear();
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .appends
                    .fetch_add(appends as u64, Ordering::Relaxed);
            }
            Ok(()) => {
                self.set_unflushed(self.unflushed + 1);
                self.unflushed_removes.extend(removes_in(&writes));
            }
            Err(e) => {
                tracing::error!(
                    path = %self.path.display(), error = %e, appends,
                    "outbox commit failed: {e}"
                );
                if needs_reopen(e) {
                    self.close_after_error();
                }
                self.after_failure(&writes);
            }
        }
        for op in writes {
            if let Op::Append { done, .. } = op {
                let answer = match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(copy_error(e)),
                };
                // A caller that has gone (its publish was cancelled) needs no answer.
                let _ = done.send(Answer::Stored(answer));
            }
        }
    }

    /// After a failed commit: applies its removes on their own, durably, on
    /// the file opened again (they free space, what a full disk needs, and
    /// lost they would mean duplicates),
    /// and takes its appends out in case the failure came after redb had
    /// written them: their callers were told they are not stored.
    fn after_failure(&mut self, writes: &[Op]) {
        let mut removes: Vec<Op> = std::mem::take(&mut self.failed_removes)
            .into_iter()
            .map(Op::Remove)
            .collect();
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
                self.set_unflushed(0);
                self.unflushed_removes.clear();
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    path = %self.path.display(), error = %e, removes = removes.len(),
                    "outbox clean-up after a failed commit failed too: {e}; its removes are \
                     retried with the next commit"
                );
                self.keep_failed_removes(removes_in(&removes));
                self.close_after_error();
            }
            Err(_) => {
                self.keep_failed_removes(removes_in(&removes));
                self.close_after_error();
            }
        }
    }

    /// Drops the database after an error (redb refuses every write after an
    /// I/O error until the file is opened again). Removes committed without an
    /// fsync since the last durable commit are gone with it: they are kept to
    /// be committed again.
    fn close_after_error(&mut self) {
        self.db = None;
        self.set_unflushed(0);
        let lost = std::mem::take(&mut self.unflushed_removes);
        self.keep_failed_removes(lost);
    }

    /// Keeps removes that could not be committed for the next commit (bounded:
    /// past the bound the oldest are given up, and their events will be
    /// published again, which at-least-once allows).
    fn keep_failed_removes(&mut self, removes: impl IntoIterator<Item = u64>) {
        self.failed_removes.extend(removes);
        if self.failed_removes.len() > MAX_TOMBSTONES {
            let excess = self.failed_removes.len() - MAX_TOMBSTONES;
            self.failed_removes.drain(..excess);
            tracing::warn!(
                path = %self.path.display(), given_up = excess,
                "outbox: {excess} removes could not be committed and were given up; \
                 those events will be published again"
            );
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
    pub(crate) fn flush(&mut self) {
        let path = self.path.clone();
        let result = self.db().and_then(|db| {
            let mut txn = db.begin_write().map_err(fail(&path, "begin flush"))?;
            txn.set_durability(Durability::Immediate);
            txn.commit().map_err(fail(&path, "flush"))
        });
        match result {
            Ok(()) => {
                self.set_unflushed(0);
                self.unflushed_removes.clear();
                self.stats.durable_commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "outbox flush failed: {e}");
                self.close_after_error();
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

/// The sequence numbers `ops` remove.
fn removes_in(ops: &[Op]) -> impl Iterator<Item = u64> + '_ {
    ops.iter().filter_map(|op| match op {
        Op::Remove(seq) => Some(*seq),
        _ => None,
    })
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
