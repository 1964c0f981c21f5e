//! The bounded buffer of pending events: queued in publish order, parked until
//! their retry time, or in flight awaiting the broker's answer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::OverflowPolicy;
use crate::event::Event;

/// One pending event and when it was accepted.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: u64,
    /// Shared with the store's append while it runs (no copy of the payload).
    pub(crate) event: Arc<Event>,
    pub(crate) since: Instant,
    /// Bytes counted against the byte bound (0 when there is none).
    pub(crate) size: usize,
    /// Stored (or no store): the drain may take it. An event whose store
    /// append is still under way waits, and so do the events behind it.
    pub(crate) ready: bool,
    /// Sends of it that the broker nacked.
    pub(crate) nacks: u32,
    /// Sends of it interrupted by a failure that was not its own.
    pub(crate) interrupts: u32,
}

impl Pending {
    pub(crate) fn new(seq: u64, event: Arc<Event>, since: Instant, size: usize) -> Self {
        Self {
            seq,
            event,
            since,
            size,
            ready: true,
            nacks: 0,
            interrupts: 0,
        }
    }
}

/// What adding an event did.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Added; the pending count after it, and the oldest events dropped to
    /// make room (drop-oldest), to be logged.
    Added(usize, Vec<Pending>),
    /// Not added: dropped by drop-newest (to be logged).
    DroppedNewest(Box<Pending>),
    /// Not added: refused by the reject policy; the event is handed back.
    Rejected(Box<Pending>),
}

/// The bounds of the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) events: usize,
    pub(crate) bytes: Option<usize>,
    pub(crate) age: Option<Duration>,
    pub(crate) policy: OverflowPolicy,
}

/// An event sent and not yet answered; `send` tells its sends apart.
#[derive(Debug)]
struct Flying {
    pending: Pending,
    send: u64,
}

/// Pending events: queued in publish order, parked until a retry time (the
/// broker nacked them), or in flight (sent, awaiting the broker's answer).
/// All of them count against the bounds until the broker confirms them or
/// they are given up.
#[derive(Debug)]
pub(crate) struct PendingBuffer {
    queue: VecDeque<Pending>,
    /// Few at a time (only nacked events), so a plain list.
    parked: Vec<(Instant, Pending)>,
    in_flight: BTreeMap<u64, Flying>,
    /// Taken out and not yet handed to the session: a direct publish must not
    /// go before them (those never nacked: `sending_fresh`).
    sending: usize,
    sending_fresh: usize,
    bytes: usize,
    bounds: Bounds,
    next_seq: u64,
    next_send: u64,
}

impl PendingBuffer {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Self {
            queue: VecDeque::new(),
            parked: Vec::new(),
            in_flight: BTreeMap::new(),
            sending: 0,
            sending_fresh: 0,
            bytes: 0,
            bounds,
            next_seq: 0,
            next_send: 0,
        }
    }

    /// Whether events must be sized (a byte bound is set).
    pub(crate) fn counts_bytes(&self) -> bool {
        self.bounds.bytes.is_some()
    }

    /// A sequence number for an event about to be published.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Events pending: queued, parked or in flight.
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + self.parked.len() + self.in_flight.len()
    }

    /// Whether the bound in events is reached.
    pub(crate) fn is_full(&self) -> bool {
        self.full_for(0)
    }

    /// Bytes pending (0 without a byte bound).
    #[cfg_attr(not(any(test, feature = "metrics")), allow(dead_code))]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Nothing pending at all.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.parked.is_empty() && self.in_flight.is_empty()
    }

    /// Events in flight (sent, not answered).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a new event may be published directly: nothing is queued and
    /// everything taken out has been handed to the session, so a direct
    /// publish on that session goes after all of it. Events in flight do not
    /// hold direct publishing back (under steady load the buffer then empties
    /// instead of taking every new event in turn), nor do nacked ones, parked
    /// or queued for their retry (they go again behind later events).
    pub(crate) fn accepts_direct(&self) -> bool {
        // Nacked events come back at the front (their sequence is old): the
        // scan stops at the first other one.
        self.sending_fresh == 0 && self.queue.iter().all(|p| p.nacks > 0)
    }

    /// When the oldest pending event was accepted.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        let queued = self.queue.front().map(|p| p.since);
        let parked = self.parked.iter().map(|(_, p)| p.since).min();
        let flying = self.in_flight.values().next().map(|f| f.pending.since);
        [queued, parked, flying].into_iter().flatten().min()
    }

    fn full_for(&self, size: usize) -> bool {
        self.len() >= self.bounds.events
            || self.bounds.bytes.is_some_and(|max| self.bytes + size > max)
    }

    /// Adds an event at its place in sequence order (or parked until
    /// `parked_until`), applying the overflow policy.
    pub(crate) fn admit(&mut self, pending: Pending, parked_until: Option<Instant>) -> Admit {
        let too_big_alone =
            self.bounds.events == 0 || self.bounds.bytes.is_some_and(|max| pending.size > max);
        if too_big_alone {
            return match self.bounds.policy {
                OverflowPolicy::Reject => Admit::Rejected(Box::new(pending)),
                _ => Admit::DroppedNewest(Box::new(pending)),
            };
        }
        let mut dropped = Vec::new();
        while self.full_for(pending.size) {
            match self.bounds.policy {
                OverflowPolicy::DropNewest => {
                    self.restore(dropped);
                    return Admit::DroppedNewest(Box::new(pending));
                }
                OverflowPolicy::Reject => {
                    self.restore(dropped);
                    return Admit::Rejected(Box::new(pending));
                }
                OverflowPolicy::DropOldest => match self.pop_oldest_before(pending.seq) {
                    Some(p) => dropped.push(p),
                    // The newcomer is older than all that waits, or all is in
                    // flight: the newcomer is the one to drop.
                    None => {
                        self.restore(dropped);
                        return Admit::DroppedNewest(Box::new(pending));
                    }
                },
            }
        }
        match parked_until {
            Some(until) => self.park(pending, until),
            None => self.requeue(pending),
        }
        Admit::Added(self.len(), dropped)
    }

    /// Takes out the oldest waiting (queued, else parked) event older than `seq`.
    fn pop_oldest_before(&mut self, seq: u64) -> Option<Pending> {
        if self.queue.front().is_some_and(|p| p.seq < seq) {
            let p = self.queue.pop_front()?;
            self.bytes -= p.size;
            return Some(p);
        }
        let (i, _) = self
            .parked
            .iter()
            .enumerate()
            .filter(|(_, (_, p))| p.seq < seq)
            .min_by_key(|(_, (_, p))| p.seq)?;
        let (_, p) = self.parked.swap_remove(i);
        self.bytes -= p.size;
        Some(p)
    }

    fn restore(&mut self, dropped: Vec<Pending>) {
        for p in dropped {
            self.requeue(p);
        }
    }

    /// Queues an event at its place in sequence order.
    pub(crate) fn requeue(&mut self, pending: Pending) {
        self.bytes += pending.size;
        if self.queue.back().is_none_or(|last| last.seq < pending.seq) {
            self.queue.push_back(pending);
        } else {
            let at = self.queue.partition_point(|p| p.seq < pending.seq);
            self.queue.insert(at, pending);
        }
    }

    /// Parks an event until `until` (its retry time).
    pub(crate) fn park(&mut self, pending: Pending, until: Instant) {
        self.bytes += pending.size;
        self.parked.push((until, pending));
    }

    /// Queues the parked events whose retry time has come; how many.
    pub(crate) fn unpark(&mut self, now: Instant) -> usize {
        let mut moved = 0;
        let mut i = 0;
        while i < self.parked.len() {
            if self.parked[i].0 <= now {
                let (_, p) = self.parked.swap_remove(i);
                self.bytes -= p.size;
                self.requeue(p);
                moved += 1;
            } else {
                i += 1;
            }
        }
        moved
    }

    /// The earliest retry time of a parked event.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.parked.iter().map(|(t, _)| *t).min()
    }

    /// Loads events recovered from a store, in order, past any bound (they were
    /// accepted by the last run); later sequence numbers follow them.
    pub(crate) fn recover(&mut self, pending: Pending) {
        self.next_seq = self.next_seq.max(pending.seq);
        self.requeue(pending);
    }

    /// Marks the event `seq` as stored; whether it is still pending.
    pub(crate) fn mark_ready(&mut self, seq: u64) -> bool {
        if let Some(i) = self.find(seq) {
            self.queue[i].ready = true;
            return true;
        }
        if let Some((_, p)) = self.parked.iter_mut().find(|(_, p)| p.seq == seq) {
            p.ready = true;
            return true;
        }
        match self.in_flight.get_mut(&seq) {
            Some(f) => {
                f.pending.ready = true;
                true
            }
            None => false,
        }
    }

    /// Takes the event `seq` out, wherever it is (its store append failed).
    pub(crate) fn remove(&mut self, seq: u64) -> Option<Pending> {
        let p = if let Some(i) = self.find(seq) {
            self.queue.remove(i)?
        } else if let Some(i) = self.parked.iter().position(|(_, p)| p.seq == seq) {
            self.parked.swap_remove(i).1
        } else {
            self.in_flight.remove(&seq)?.pending
        };
        self.bytes -= p.size;
        Some(p)
    }

    fn find(&self, seq: u64) -> Option<usize> {
        let i = self.queue.partition_point(|p| p.seq < seq);
        (self.queue.get(i)?.seq == seq).then_some(i)
    }

    /// Takes out the waiting (queued or parked) events older than the age bound.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Pending> {
        let Some(max_age) = self.bounds.age else {
            return Vec::new();
        };
        let old = |p: &Pending| now.saturating_duration_since(p.since) > max_age;
        let mut expired = Vec::new();
        // The queue is in publish order, so the oldest are at the front (a
        // put-back event is older than what follows it, too).
        while self.queue.front().is_some_and(old) {
            if let Some(p) = self.queue.pop_front() {
                self.bytes -= p.size;
                expired.push(p);
            }
        }
        let mut i = 0;
        while i < self.parked.len() {
            if old(&self.parked[i].1) {
                let (_, p) = self.parked.swap_remove(i);
                self.bytes -= p.size;
                expired.push(p);
            } else {
                i += 1;
            }
        }
        expired
    }

    /// Takes the oldest queued event out to send it: it is in flight from now
    /// on, under the returned send number. `None` when nothing is queued or
    /// the oldest is not stored yet.
    pub(crate) fn take(&mut self) -> Option<(u64, u64, Arc<Event>)> {
        if !self.queue.front()?.ready {
            return None;
        }
        let pending = self.queue.pop_front()?;
        self.sending += 1;
        if pending.nacks == 0 {
            self.sending_fresh += 1;
        }
        let (seq, event) = (pending.seq, pending.event.clone());
        // Moved from the queue: its bytes stay counted.
        let send = self.fly(pending);
        Some((seq, send, event))
    }

    /// An event taken out has been handed to the session (or its send failed).
    pub(crate) fn sent(&mut self) {
        // The drain hands one at a time to the session.
        self.sending = self.sending.saturating_sub(1);
        self.sending_fresh = self.sending_fresh.min(self.sending);
    }

    /// Takes in an event sent directly whose caller stopped waiting for its
    /// answer: in flight under the returned send number. Past the bounds: it
    /// is on its way already.
    pub(crate) fn adopt(&mut self, pending: Pending) -> u64 {
        self.bytes += pending.size;
        self.fly(pending)
    }

    fn fly(&mut self, pending: Pending) -> u64 {
        self.next_send += 1;
        let send = self.next_send;
        self.in_flight.insert(pending.seq, Flying { pending, send });
        send
    }

    /// The broker confirmed a send of event `seq`: it leaves the buffer,
    /// whichever send it was and wherever it is now (a late confirm of a send
    /// whose event was queued again clears it too). `None` if it has left
    /// already.
    pub(crate) fn confirmed(&mut self, seq: u64) -> Option<Pending> {
        let p = match self.in_flight.remove(&seq) {
            Some(f) => f.pending,
            None => return self.remove(seq),
        };
        self.bytes -= p.size;
        Some(p)
    }

    /// Send `send` of event `seq` failed: takes the event out to be queued,
    /// parked or given up. `None` if that send is no longer the event's
    /// current one (it was queued again after a lost connection, or sent again).
    pub(crate) fn failed(&mut self, seq: u64, send: u64) -> Option<Pending> {
        if self.in_flight.get(&seq)?.send != send {
            return None;
        }
        let p = self.in_flight.remove(&seq)?.pending;
        self.bytes -= p.size;
        Some(p)
    }

    /// Everything in flight goes back into the queue, in order (the
    /// connection was lost: it is published again).
    pub(crate) fn requeue_in_flight(&mut self) -> usize {
        let flying = std::mem::take(&mut self.in_flight);
        let n = flying.len();
        for (_, f) in flying {
            self.bytes -= f.pending.size;
            self.requeue(f.pending);
        }
        n
    }

    /// Takes every pending event out (shutdown), in publish order.
    pub(crate) fn drain_all(&mut self) -> Vec<Pending> {
        self.bytes = 0;
        let mut all: Vec<Pending> = self.queue.drain(..).collect();
        all.extend(self.parked.drain(..).map(|(_, p)| p));
        all.extend(
            std::mem::take(&mut self.in_flight)
                .into_values()
                .map(|f| f.pending),
        );
        all.sort_by_key(|p| p.seq);
        all
    }
}

#[cfg(test)]
#[path = "buffer_tests.rs"]
mod tests;
