//! The bounded buffer of pending events, ordered by publish sequence.

use std::collections::VecDeque;

use tokio::time::Instant;

use crate::config::OverflowPolicy;
use crate::event::Event;

/// One pending event and when it was accepted.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) seq: u64,
    pub(crate) event: Event,
    pub(crate) since: Instant,
}

/// What adding an event did.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Added; the pending count after it.
    Added(usize),
    /// Added after dropping the oldest event, which is returned (to be logged).
    AddedDroppingOldest(usize, Box<Pending>),
    /// Not added: dropped by drop-newest (to be logged).
    DroppedNewest(Box<Pending>),
    /// Not added: refused by the reject policy; the event is handed back.
    Rejected(Box<Pending>),
}

/// Pending events in publish order. `in_flight` counts events taken out to be
/// published and not yet confirmed: they still count against the bound, and come
/// back in order if their publish fails.
#[derive(Debug)]
pub(crate) struct PendingBuffer {
    queue: VecDeque<Pending>,
    in_flight: usize,
    capacity: usize,
    policy: OverflowPolicy,
    next_seq: u64,
    oldest_in_flight: Option<Instant>,
}

impl PendingBuffer {
    pub(crate) fn new(capacity: usize, policy: OverflowPolicy) -> Self {
        Self {
            queue: VecDeque::new(),
            in_flight: 0,
            capacity,
            policy,
            next_seq: 0,
            oldest_in_flight: None,
        }
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

    /// Nothing buffered and nothing in flight from the buffer.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0
    }

    pub(crate) fn oldest(&self) -> Option<Instant> {
        match (self.queue.front().map(|p| p.since), self.oldest_in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Adds an event at its place in sequence order, applying the overflow policy.
    pub(crate) fn admit(&mut self, pending: Pending) -> Admit {
        if self.len() >= self.capacity {
            match self.policy {
                OverflowPolicy::DropNewest => return Admit::DroppedNewest(Box::new(pending)),
                OverflowPolicy::Reject => return Admit::Rejected(Box::new(pending)),
                OverflowPolicy::DropOldest => match self.queue.pop_front() {
                    Some(oldest) if oldest.seq < pending.seq => {
                        self.insert(pending);
                        return Admit::AddedDroppingOldest(self.len(), Box::new(oldest));
                    }
                    Some(oldest) => {
                        // The newcomer is older than everything queued: it is the one to drop.
                        self.queue.push_front(oldest);
                        return Admit::DroppedNewest(Box::new(pending));
                    }
                    // Everything is in flight: nothing to drop but the newcomer.
                    None => return Admit::DroppedNewest(Box::new(pending)),
                },
            }
        }
        self.insert(pending);
        Admit::Added(self.len())
    }

    fn insert(&mut self, pending: Pending) {
        if self.queue.back().is_none_or(|last| last.seq < pending.seq) {
            self.queue.push_back(pending);
        } else {
            let at = self.queue.partition_point(|p| p.seq < pending.seq);
            self.queue.insert(at, pending);
        }
    }

    /// Takes the oldest event out to publish it (it stays counted until settled).
    pub(crate) fn take(&mut self) -> Option<Pending> {
        let p = self.queue.pop_front()?;
        if self.in_flight == 0 {
            self.oldest_in_flight = Some(p.since);
        }
        self.in_flight += 1;
        Some(p)
    }

    /// An event taken out was confirmed (or given up on): it leaves the buffer.
    pub(crate) fn settle(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.oldest_in_flight = None;
        }
    }

    /// An event taken out failed to publish: it goes back at its place.
    pub(crate) fn put_back(&mut self, pending: Pending) {
        self.settle();
        self.insert(pending);
    }

    /// Takes every queued event out (shutdown).
    pub(crate) fn drain_all(&mut self) -> Vec<Event> {
        self.queue.drain(..).map(|p| p.event).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(buf: &mut PendingBuffer) -> Pending {
        Pending {
            seq: buf.next_seq(),
            event: Event::try_new("t", serde_json::Value::Null).unwrap(),
            since: Instant::now(),
        }
    }

    fn seqs(buf: &PendingBuffer) -> Vec<u64> {
        buf.queue.iter().map(|p| p.seq).collect()
    }

    #[test]
    fn keeps_sequence_order_on_put_back() {
        let mut b = PendingBuffer::new(10, OverflowPolicy::DropNewest);
        for _ in 0..4 {
            let p = ev(&mut b);
            assert!(matches!(b.admit(p), Admit::Added(_)));
        }
        let one = b.take().unwrap();
        let two = b.take().unwrap();
        assert_eq!(b.len(), 4);
        b.put_back(two);
        b.put_back(one);
        assert_eq!(seqs(&b), [1, 2, 3, 4]);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn drop_newest() {
        let mut b = PendingBuffer::new(2, OverflowPolicy::DropNewest);
        for _ in 0..2 {
            let p = ev(&mut b);
            b.admit(p);
        }
        let p = ev(&mut b);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(d) if d.seq == 3));
        assert_eq!(seqs(&b), [1, 2]);
    }

    #[test]
    fn drop_oldest() {
        let mut b = PendingBuffer::new(2, OverflowPolicy::DropOldest);
        for _ in 0..2 {
            let p = ev(&mut b);
            b.admit(p);
        }
        let p = ev(&mut b);
        assert!(matches!(b.admit(p), Admit::AddedDroppingOldest(2, d) if d.seq == 1));
        assert_eq!(seqs(&b), [2, 3]);
    }

    #[test]
    fn reject_hands_back() {
        let mut b = PendingBuffer::new(1, OverflowPolicy::Reject);
        let p = ev(&mut b);
        b.admit(p);
        let p = ev(&mut b);
        assert!(matches!(b.admit(p), Admit::Rejected(d) if d.seq == 2));
    }

    #[test]
    fn in_flight_counts_against_capacity() {
        let mut b = PendingBuffer::new(1, OverflowPolicy::DropOldest);
        let p = ev(&mut b);
        b.admit(p);
        let _taken = b.take().unwrap();
        let p = ev(&mut b);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(_)));
        b.settle();
        assert!(b.is_idle());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut b = PendingBuffer::new(0, OverflowPolicy::DropOldest);
        let p = ev(&mut b);
        assert!(matches!(b.admit(p), Admit::DroppedNewest(_)));
    }
}
