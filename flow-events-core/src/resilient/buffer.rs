//! The bounded buffer of pending events, ordered by publish sequence.

use std::collections::VecDeque;
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

/// Pending events in publish order. `in_flight` counts events taken out to be
/// published and not yet confirmed: they still count against the bound, and come
/// back in order if their publish fails.
#[derive(Debug)]
pub(crate) struct PendingBuffer {
    queue: VecDeque<Pending>,
    in_flight: usize,
    /// Taken out and not yet handed to the session: a direct publish must not
    /// go before them.
    sending: usize,
    in_flight_bytes: usize,
    bytes: usize,
    bounds: Bounds,
    next_seq: u64,
    oldest_in_flight: Option<Instant>,
}

impl PendingBuffer {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Self {
            queue: VecDeque::new(),
            in_flight: 0,
            sending: 0,
            in_flight_bytes: 0,
            bytes: 0,
            bounds,
            next_seq: 0,
            oldest_in_flight: None,
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

    /// Events buffered or in flight from the buffer.
    pub(crate) fn len(&self) -> usize {
        self.queue.len() + self.in_flight
    }

    /// Bytes buffered or in flight (0 without a byte bound).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes + self.in_flight_bytes
    }

    /// Nothing buffered and nothing in flight from the buffer.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0
    }

    /// Whether a new event may be published directly: nothing is queued and
    /// everything taken out has been handed to the session, so a direct
    /// publish on that session goes after all of it. Events in flight from the
    /// buffer do not hold direct publishing back: under steady load the
    /// buffer then empties instead of taking every new event in turn.
    pub(crate) fn accepts_direct(&self) -> bool {
        self.queue.is_empty() && self.sending == 0
    }

    pub(crate) fn oldest(&self) -> Option<Instant> {
        match (self.queue.front().map(|p| p.since), self.oldest_in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn full_for(&self, size: usize) -> bool {
        self.len() >= self.bounds.events
            || self
                .bounds
                .bytes
                .is_some_and(|max| self.bytes() + size > max)
    }

    /// Adds an event at its place in sequence order, applying the overflow policy.
    pub(crate) fn admit(&mut self, pending: Pending) -> Admit {
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
                OverflowPolicy::DropOldest => match self.queue.front() {
                    Some(oldest) if oldest.seq < pending.seq => {
                        if let Some(p) = self.pop_front() {
                            dropped.push(p);
                        }
                    }
                    // The newcomer is older than all that is queued, or all is in
                    // flight: the newcomer is the one to drop.
                    _ => {
                        self.restore(dropped);
                        return Admit::DroppedNewest(Box::new(pending));
                    }
                },
            }
        }
        self.insert(pending);
        Admit::Added(self.len(), dropped)
    }

    fn restore(&mut self, dropped: Vec<Pending>) {
        for p in dropped {
            self.insert(p);
        }
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let p = self.queue.pop_front()?;
        self.bytes -= p.size;
        Some(p)
    }

    fn insert(&mut self, pending: Pending) {
        self.bytes += pending.size;
        if self.queue.back().is_none_or(|last| last.seq < pending.seq) {
            self.queue.push_back(pending);
        } else {
            let at = self.queue.partition_point(|p| p.seq < pending.seq);
            self.queue.insert(at, pending);
        }
    }

    /// Loads events recovered from a store, in order, past any bound (they were
    /// accepted by the last run); later sequence numbers follow them.
    pub(crate) fn recover(&mut self, pending: Pending) {
        self.next_seq = self.next_seq.max(pending.seq);
        self.insert(pending);
    }

    /// Marks the event `seq` as stored; whether it was still queued.
    pub(crate) fn mark_ready(&mut self, seq: u64) -> bool {
        match self.find(seq) {
            Some(i) => {
                self.queue[i].ready = true;
                true
            }
            None => false,
        }
    }

    /// Takes the queued event `seq` back out (its store append failed).
    pub(crate) fn remove(&mut self, seq: u64) -> Option<Pending> {
        let i = self.find(seq)?;
        let p = self.queue.remove(i)?;
        self.bytes -= p.size;
        Some(p)
    }

    fn find(&self, seq: u64) -> Option<usize> {
        let i = self.queue.partition_point(|p| p.seq < seq);
        (self.queue.get(i)?.seq == seq).then_some(i)
    }

    /// Takes out the queued events older than the age bound.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Pending> {
        let Some(max_age) = self.bounds.age else {
            return Vec::new();
        };
        let mut expired = Vec::new();
        // The queue is in publish order, so the oldest are at the front (a
        // put-back event is older than what follows it, too).
        while self
            .queue
            .front()
            .is_some_and(|p| now.saturating_duration_since(p.since) > max_age)
        {
            if let Some(p) = self.pop_front() {
                expired.push(p);
            }
        }
        expired
    }

    /// Takes the oldest event out to publish it (it stays counted until
    /// settled); `None` when nothing is queued or the oldest is not stored yet.
    pub(crate) fn take(&mut self) -> Option<Pending> {
        if !self.queue.front()?.ready {
            return None;
        }
        let p = self.pop_front()?;
        if self.in_flight == 0 {
            self.oldest_in_flight = Some(p.since);
        }
        self.in_flight += 1;
        self.sending += 1;
        self.in_flight_bytes += p.size;
        Some(p)
    }

    /// An event taken out has been handed to the session (or its send failed).
    pub(crate) fn sent(&mut self) {
        self.sending = self.sending.saturating_sub(1);
    }

    /// An event taken out was confirmed (or given up on): it leaves the buffer.
    pub(crate) fn settle(&mut self, size: usize) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(size);
        if self.in_flight == 0 {
            self.oldest_in_flight = None;
        }
    }

    /// An event taken out failed to publish: it goes back at its place.
    pub(crate) fn put_back(&mut self, pending: Pending) {
        self.settle(pending.size);
        self.insert(pending);
    }

    /// Takes every queued event out (shutdown).
    pub(crate) fn drain_all(&mut self) -> Vec<Pending> {
        self.bytes = 0;
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(events: usize, policy: OverflowPolicy) -> Bounds {
        Bounds {
            events,
            bytes: None,
            age: None,
            policy,
        }
    }

    fn ev(buf: &mut PendingBuffer, size: usize) -> Pending {
        Pending {
            seq: buf.next_seq(),
            event: Arc::new(Event::try_new("t", serde_json::Value::Null).unwrap()),
            since: Instant::now(),
            size,
            ready: true,
        }
    }

    fn seqs(buf: &PendingBuffer) -> Vec<u64> {
        buf.queue.iter().map(|p| p.seq).collect()
    }

    fn fill(b: &mut PendingBuffer, n: usize, size: usize) {
        for _ in 0..n {
            let p = ev(b, size);
            assert!(matches!(b.admit(p), Admit::Added(..)));
        }
    }

    #[test]
    fn keeps_sequence_order_on_put_back() {
        let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
        fill(&mut b, 4, 0);
        let one = b.take().unwrap();
        let two = b.take().unwrap();
        assert_eq!(b.len(), 4);
        b.put_back(two);
        b.put_back(one);
        assert_eq!(seqs(&b), [1, 2, 3, 4]);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn direct_publishing_waits_for_queued_and_unsent_events_only() {
        let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
        assert!(b.accepts_direct());
        fill(&mut b, 2, 0);
        assert!(!b.accepts_direct());
        let one = b.take().unwrap();
        b.sent();
        assert!(!b.accepts_direct(), "one still queued");
        let two = b.take().unwrap();
        assert!(!b.accepts_direct(), "taken, not yet sent");
        b.sent();
        assert!(b.accepts_direct(), "both sent, confirms pending");
        assert!(!b.is_idle());
        b.put_back(two);
        assert!(!b.accepts_direct(), "a failed event is queued again");
        b.settle(one.size);
    }

    #[test]
    fn drop_newest() {
        let mut b = PendingBuffer::new(bounds(2, OverflowPolicy::DropNewest));
        fill(&mut b, 2, 0);
        let p = ev(&mut b, 0);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(d) if d.seq == 3));
        assert_eq!(seqs(&b), [1, 2]);
    }

    #[test]
    fn drop_oldest() {
        let mut b = PendingBuffer::new(bounds(2, OverflowPolicy::DropOldest));
        fill(&mut b, 2, 0);
        let p = ev(&mut b, 0);
        match b.admit(p) {
            Admit::Added(2, dropped) => assert_eq!(dropped[0].seq, 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(seqs(&b), [2, 3]);
    }

    #[test]
    fn reject_hands_back() {
        let mut b = PendingBuffer::new(bounds(1, OverflowPolicy::Reject));
        fill(&mut b, 1, 0);
        let p = ev(&mut b, 0);
        assert!(matches!(b.admit(p), Admit::Rejected(d) if d.seq == 2));
    }

    #[test]
    fn in_flight_counts_against_capacity() {
        let mut b = PendingBuffer::new(bounds(1, OverflowPolicy::DropOldest));
        fill(&mut b, 1, 0);
        let taken = b.take().unwrap();
        let p = ev(&mut b, 0);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(_)));
        b.settle(taken.size);
        assert!(b.is_idle());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut b = PendingBuffer::new(bounds(0, OverflowPolicy::DropOldest));
        let p = ev(&mut b, 0);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(_)));
    }

    #[test]
    fn byte_bound_drops_as_many_oldest_as_needed() {
        let mut b = PendingBuffer::new(Bounds {
            bytes: Some(100),
            ..bounds(1000, OverflowPolicy::DropOldest)
        });
        fill(&mut b, 4, 25);
        assert_eq!(b.bytes(), 100);
        let p = ev(&mut b, 60);
        match b.admit(p) {
            Admit::Added(2, dropped) => {
                assert_eq!(dropped.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2, 3])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(b.bytes(), 85);
        // Bigger than the whole bound: never fits.
        let p = ev(&mut b, 101);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(_)));
    }

    #[test]
    fn byte_bound_reject_leaves_buffer_as_it_was() {
        let mut b = PendingBuffer::new(Bounds {
            bytes: Some(50),
            ..bounds(1000, OverflowPolicy::Reject)
        });
        fill(&mut b, 2, 25);
        let p = ev(&mut b, 1);
        assert!(matches!(b.admit(p), Admit::Rejected(_)));
        assert_eq!(seqs(&b), [1, 2]);
        assert_eq!(b.bytes(), 50);
    }

    #[test]
    fn not_ready_front_holds_the_drain() {
        let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
        let mut p = ev(&mut b, 0);
        p.ready = false;
        b.admit(p);
        fill(&mut b, 1, 0);
        assert!(b.take().is_none());
        assert!(b.mark_ready(1));
        assert_eq!(b.take().unwrap().seq, 1);
        assert_eq!(b.remove(2).unwrap().seq, 2);
        assert!(b.remove(2).is_none());
    }

    #[test]
    fn expire_takes_old_events_from_the_front() {
        let mut b = PendingBuffer::new(Bounds {
            age: Some(Duration::from_secs(10)),
            ..bounds(10, OverflowPolicy::DropNewest)
        });
        fill(&mut b, 3, 0);
        let now = Instant::now();
        assert!(b.expire(now).is_empty());
        assert_eq!(b.expire(now + Duration::from_secs(11)).len(), 3);
        assert!(b.is_idle());
    }
}
