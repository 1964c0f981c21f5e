//! Group commit without a writer thread in the way.
//!
//! A request (append, remove, recovery) is queued. An append or a recovery
//! that finds nobody committing leads: on its own thread it takes everything
//! queued, commits it as one transaction (one fsync), answers every request of
//! the batch, then hands the lead to the next waiting request, whose own
//! request is in the next batch. Requests that arrive while a commit runs wait
//! for it and share the next one, so throughput grows with the number of
//! publishers, and a lone publisher commits on its own thread with no
//! hand-over to another thread and back.
//!
//! A background thread commits what nobody leads for: removes (the drain's
//! confirms) when no append comes, requests whose callers have gone, and the
//! flush that makes removes durable after [`FLUSH_AFTER`] of quiet. It also
//! makes the last removes durable and closes the file when the store is
//! dropped.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::writer::{Answer, FLUSH_AFTER, Op, Stats, Writer};

/// Most requests taken into one transaction.
const MAX_BATCH: usize = 8192;

#[derive(Debug, Default)]
struct Queue {
    ops: Vec<Op>,
    /// Somebody is committing or has been handed the lead.
    leader: bool,
    /// The store is being dropped: the background thread finishes up.
    closing: bool,
}

/// The lead, handed to a waiting request. If that request's caller has gone
/// before using it (its task dropped with the token unread), dropping the
/// token gives the lead back, so that nobody waits for a leader that will not
/// come.
#[derive(Debug)]
pub(crate) struct LeadToken {
    group: Option<Arc<Group>>,
    /// Where the request's own answer comes.
    pub(crate) answer: Option<oneshot::Receiver<Answer>>,
}

impl LeadToken {
    /// Takes the lead: the caller must now call [`Group::lead`].
    pub(crate) fn take(mut self) -> oneshot::Receiver<Answer> {
        self.group = None;
        self.answer.take().unwrap_or_else(|| oneshot::channel().1)
    }

    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for LeadToken {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            group.give_up_lead();
        }
    }
}

/// The queue of requests and the database, shared by the callers and the
/// background thread.
#[derive(Debug)]
pub(crate) struct Group {
    queue: Mutex<Queue>,
    /// Wakes the background thread.
    wake: Condvar,
    writer: Mutex<Writer>,
    stats: Arc<Stats>,
}

impl Group {
    pub(crate) fn new(writer: Writer) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            stats: writer.stats.clone(),
            writer: Mutex::new(writer),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer's counters.
    pub(crate) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Queues a request that waits for its answer; whether its caller leads
    /// (and must call [`Group::lead`]).
    pub(crate) fn push(&self, op: Op) -> bool {
        let mut q = self.queue();
        q.ops.push(op);
        !std::mem::replace(&mut q.leader, true)
    }

    /// Queues a remove: it rides along with the next commit, or the background
    /// thread commits it.
    pub(crate) fn push_remove(&self, seq: u64) {
        let mut q = self.queue();
        q.ops.push(Op::Remove(seq));
        if !q.leader {
            self.wake.notify_one();
        }
    }

    /// Commits what is queued as one batch (the leader only), then hands the
    /// lead on. Blocks for the commit.
    pub(crate) fn lead(self: &Arc<Self>) {
        let batch = {
            let mut q = self.queue();
            let n = q.ops.len().min(MAX_BATCH);
            q.ops.drain(..n).collect::<Vec<_>>()
        };
        if !batch.is_empty() {
            let mut writer = self.writer();
            // The writer catches redb's panics itself; this is the last line:
            // a panic here drops the batch's answers (their callers get an
            // error) instead of leaving the lead taken for ever.
            if catch_unwind(AssertUnwindSafe(|| writer.process(batch))).is_err() {
                tracing::error!(path = %writer.path.display(), "outbox commit panicked");
            }
        }
        self.hand_on();
    }

    /// Gives the lead to the first queued request whose caller still waits,
    /// or gives it up (the background thread then takes what is left).
    fn hand_on(self: &Arc<Self>) {
        let mut q = self.queue();
        for op in q.ops.iter_mut() {
            let done = match op {
                Op::Append { done, .. } | Op::Recover(done) => done,
                Op::Remove(_) => continue,
            };
            let (tx, rx) = oneshot::channel();
            let waiter = std::mem::replace(done, tx);
            let token = LeadToken {
                group: Some(self.clone()),
                answer: Some(rx),
            };
            match waiter.send(Answer::Lead(token)) {
                Ok(()) => return,
                // That caller has gone: the token comes back, unused.
                Err(Answer::Lead(mut token)) => token.disarm(),
                Err(_) => {}
            }
        }
        self.release(q);
    }

    /// Gives up the lead (the queue lock held) and wakes the background
    /// thread when there is something for it.
    fn release(&self, mut q: MutexGuard<'_, Queue>) {
        q.leader = false;
        if !q.ops.is_empty() || q.closing || self.stats.unflushed.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }

    /// A lead handed to a caller that has gone: given back, and the
    /// background thread takes over.
    fn give_up_lead(&self) {
        let q = self.queue();
        self.release(q);
    }

    /// The background thread: commits what nobody leads for, flushes removes
    /// after a quiet spell, and on closing finishes what is queued, makes it
    /// durable and closes the file.
    pub(crate) fn background(self: &Arc<Self>) {
        let mut q = self.queue();
        loop {
            if !q.leader && !q.ops.is_empty() {
                q.leader = true;
                drop(q);
                self.lead();
                q = self.queue();
                continue;
            }
            if q.closing && !q.leader {
                break;
            }
            let flush_due = !q.leader && self.stats.unflushed.load(Ordering::Relaxed);
            if flush_due {
                let (guard, waited) = self
                    .wake
                    .wait_timeout(q, FLUSH_AFTER)
                    .unwrap_or_else(|e| e.into_inner());
                q = guard;
                if waited.timed_out() && !q.leader && q.ops.is_empty() {
                    q.leader = true;
                    drop(q);
                    self.writer().flush();
                    self.hand_on();
                    q = self.queue();
                }
            } else {
                q = self.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        }
        drop(q);
        self.writer().close();
    }

    /// Tells the background thread to finish.
    pub(crate) fn close(&self) {
        self.queue().closing = true;
        self.wake.notify_one();
    }
}
