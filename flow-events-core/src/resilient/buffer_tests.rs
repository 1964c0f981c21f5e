//! Unit tests of the pending buffer.

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
    let event = Arc::new(Event::try_new("t", serde_json::Value::Null).unwrap());
    Pending::new(buf.next_seq(), event, Instant::now(), size)
}

fn seqs(buf: &PendingBuffer) -> Vec<u64> {
    buf.queue.iter().map(|p| p.seq).collect()
}

fn fill(b: &mut PendingBuffer, n: usize, size: usize) {
    for _ in 0..n {
        let p = ev(b, size);
        assert!(matches!(b.admit(p, None), Admit::Added(..)));
    }
}

#[test]
fn keeps_sequence_order_when_failed_sends_come_back() {
    let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
    fill(&mut b, 4, 0);
    let (one, s1, _) = b.take().unwrap();
    let (two, s2, _) = b.take().unwrap();
    assert_eq!(b.len(), 4);
    let p = b.failed(two, s2).unwrap();
    b.requeue(p);
    let p = b.failed(one, s1).unwrap();
    b.requeue(p);
    assert_eq!(seqs(&b), [1, 2, 3, 4]);
    assert_eq!(b.len(), 4);
}

#[test]
fn a_stale_send_fails_nothing_but_a_late_confirm_clears_the_event() {
    let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
    fill(&mut b, 2, 0);
    let (seq, first, _) = b.take().unwrap();
    assert_eq!(b.requeue_in_flight(), 1);
    let (again, second, _) = b.take().unwrap();
    assert_eq!((again, b.in_flight()), (seq, 1));
    assert!(b.failed(seq, first).is_none(), "an older send's failure");
    assert!(b.confirmed(seq).is_some(), "an older send's confirm");
    assert!(b.failed(seq, second).is_none());
    // Queued again and then confirmed late: it leaves the queue.
    let (two, _, _) = b.take().unwrap();
    b.requeue_in_flight();
    assert!(b.confirmed(two).is_some());
    assert!(b.is_idle());
}

#[test]
fn direct_publishing_waits_for_queued_and_unsent_events_only() {
    let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
    assert!(b.accepts_direct());
    fill(&mut b, 3, 0);
    assert!(!b.accepts_direct());
    let (_, _, _) = b.take().unwrap();
    b.sent();
    assert!(!b.accepts_direct(), "two still queued");
    let (two, s2, _) = b.take().unwrap();
    let (three, s3, _) = b.take().unwrap();
    assert!(!b.accepts_direct(), "taken, not yet sent");
    b.sent();
    b.sent();
    assert!(b.accepts_direct(), "all sent, confirms pending");
    assert!(!b.is_idle());
    let p = b.failed(two, s2).unwrap();
    b.requeue(p);
    assert!(!b.accepts_direct(), "a failed event is queued again");
    let mut p = b.failed(three, s3).unwrap();
    p.nacks = 1;
    b.park(p, Instant::now() + Duration::from_secs(1));
    b.remove(two);
    assert!(
        b.accepts_direct(),
        "a parked event does not hold publishing back"
    );
    b.unpark(Instant::now() + Duration::from_secs(1));
    assert!(b.accepts_direct(), "nor a nacked one queued for its retry");
    let (_, _, _) = b.take().unwrap();
    assert!(b.accepts_direct(), "nor one being sent again");
    b.sent();
}

#[test]
fn parked_events_come_back_when_due_in_order() {
    let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
    fill(&mut b, 3, 0);
    let (one, s1, _) = b.take().unwrap();
    let now = Instant::now();
    let p = b.failed(one, s1).unwrap();
    b.park(p, now + Duration::from_secs(2));
    assert_eq!(b.len(), 3);
    assert_eq!(b.next_due(), Some(now + Duration::from_secs(2)));
    assert_eq!(b.unpark(now + Duration::from_secs(1)), 0);
    assert_eq!(seqs(&b), [2, 3]);
    assert_eq!(b.unpark(now + Duration::from_secs(2)), 1);
    assert_eq!(seqs(&b), [1, 2, 3]);
    assert_eq!(b.next_due(), None);
}

#[test]
fn drop_newest() {
    let mut b = PendingBuffer::new(bounds(2, OverflowPolicy::DropNewest));
    fill(&mut b, 2, 0);
    let p = ev(&mut b, 0);
    assert!(matches!(b.admit(p, None), Admit::DroppedNewest(d) if d.seq == 3));
    assert_eq!(seqs(&b), [1, 2]);
}

#[test]
fn drop_oldest() {
    let mut b = PendingBuffer::new(bounds(2, OverflowPolicy::DropOldest));
    fill(&mut b, 2, 0);
    let p = ev(&mut b, 0);
    match b.admit(p, None) {
        Admit::Added(2, dropped) => assert_eq!(dropped[0].seq, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(seqs(&b), [2, 3]);
}

#[test]
fn drop_oldest_takes_a_parked_event_when_nothing_is_queued() {
    let mut b = PendingBuffer::new(bounds(2, OverflowPolicy::DropOldest));
    fill(&mut b, 2, 0);
    let (one, s1, _) = b.take().unwrap();
    let (_, _, _) = b.take().unwrap();
    let p = b.failed(one, s1).unwrap();
    b.park(p, Instant::now() + Duration::from_secs(5));
    let p = ev(&mut b, 0);
    match b.admit(p, None) {
        Admit::Added(2, dropped) => assert_eq!(dropped[0].seq, 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reject_hands_back() {
    let mut b = PendingBuffer::new(bounds(1, OverflowPolicy::Reject));
    fill(&mut b, 1, 0);
    let p = ev(&mut b, 0);
    assert!(matches!(b.admit(p, None), Admit::Rejected(d) if d.seq == 2));
}

#[test]
fn in_flight_counts_against_capacity() {
    let mut b = PendingBuffer::new(bounds(1, OverflowPolicy::DropOldest));
    fill(&mut b, 1, 0);
    let (seq, _, _) = b.take().unwrap();
    let p = ev(&mut b, 0);
    assert!(matches!(b.admit(p, None), Admit::DroppedNewest(_)));
    assert!(b.is_full());
    b.confirmed(seq);
    assert!(b.is_idle());
}

#[test]
fn adopted_events_are_in_flight_past_the_bound() {
    let mut b = PendingBuffer::new(Bounds {
        bytes: Some(10),
        ..bounds(1, OverflowPolicy::DropNewest)
    });
    fill(&mut b, 1, 10);
    let p = ev(&mut b, 5);
    let seq = p.seq;
    let send = b.adopt(p);
    assert_eq!((b.len(), b.bytes(), b.in_flight()), (2, 15, 1));
    assert!(b.failed(seq, send + 1).is_none());
    let p = b.failed(seq, send).unwrap();
    b.requeue(p);
    assert_eq!(seqs(&b), [1, 2]);
    assert_eq!(b.drain_all().len(), 2);
    assert_eq!(b.bytes(), 0);
}

#[test]
fn zero_capacity_keeps_nothing() {
    let mut b = PendingBuffer::new(bounds(0, OverflowPolicy::DropOldest));
    let p = ev(&mut b, 0);
    assert!(matches!(b.admit(p, None), Admit::DroppedNewest(_)));
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
    match b.admit(p, None) {
        Admit::Added(2, dropped) => {
            assert_eq!(dropped.iter().map(|p| p.seq).collect::<Vec<_>>(), [1, 2, 3])
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.bytes(), 85);
    // Bigger than the whole bound: never fits.
    let p = ev(&mut b, 101);
    assert!(matches!(b.admit(p, None), Admit::DroppedNewest(_)));
}

#[test]
fn byte_bound_reject_leaves_buffer_as_it_was() {
    let mut b = PendingBuffer::new(Bounds {
        bytes: Some(50),
        ..bounds(1000, OverflowPolicy::Reject)
    });
    fill(&mut b, 2, 25);
    let p = ev(&mut b, 1);
    assert!(matches!(b.admit(p, None), Admit::Rejected(_)));
    assert_eq!(seqs(&b), [1, 2]);
    assert_eq!(b.bytes(), 50);
}

#[test]
fn not_ready_front_holds_the_drain() {
    let mut b = PendingBuffer::new(bounds(10, OverflowPolicy::DropNewest));
    let mut p = ev(&mut b, 0);
    p.ready = false;
    b.admit(p, None);
    fill(&mut b, 1, 0);
    assert!(b.take().is_none());
    assert!(b.mark_ready(1));
    assert_eq!(b.take().unwrap().0, 1);
    assert_eq!(b.remove(2).unwrap().seq, 2);
    assert!(b.remove(2).is_none());
}

#[test]
fn expire_takes_old_waiting_events() {
    let mut b = PendingBuffer::new(Bounds {
        age: Some(Duration::from_secs(10)),
        ..bounds(10, OverflowPolicy::DropNewest)
    });
    fill(&mut b, 3, 0);
    let now = Instant::now();
    let p = ev(&mut b, 0);
    b.admit(p, Some(now + Duration::from_secs(60)));
    assert!(b.expire(now).is_empty());
    assert_eq!(b.expire(now + Duration::from_secs(11)).len(), 4);
    assert!(b.is_idle());
}
