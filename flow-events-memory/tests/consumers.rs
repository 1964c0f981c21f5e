//! The memory backend at the session level: competing consumers,
//! prefetch, settling, sessions ending and broker outages.
//!
//! Delivery on the memory broker is synchronous: once `send` or `settle` has
//! returned, every resulting delivery is already in its consumer's stream. So
//! "nothing more arrives" is checked by polling the stream once
//! (`now_or_never`), and waits for something that must come are bounded by a
//! timeout.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{WAIT, ack_all, connect, event, ready};
use flow_events_core::{Backend, BackendErrorKind, Decision};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::steps::{
    next_delivery, numbered, publish_confirmed, stream_ends, subscribed, subscription,
};
use futures_util::StreamExt;

#[tokio::test]
async fn competing_consumers_share_the_work_round_robin() {
    let broker = MemoryBroker::new();
    let (one, two) = (connect(&broker).await, connect(&broker).await);
    let subscription = subscription("workers", "job.#").with_prefetch(100);
    let mut s1 = subscribed(&*one, &subscription).await;
    let mut s2 = subscribed(&*two, &subscription).await;
    assert_eq!(broker.consumer_count("workers"), 2);

    for n in 0..10 {
        publish_confirmed(&*one, &numbered("job.run", n)).await;
    }
    let (g1, g2) = (ready(&mut s1), ready(&mut s2));
    assert_eq!((g1.len(), g2.len()), (5, 5));
    let ids: HashSet<_> = g1
        .iter()
        .chain(&g2)
        .map(|d| d.delivery.event().id())
        .collect();
    assert_eq!(ids.len(), 10);
    ack_all(g1).await;
    ack_all(g2).await;
}

#[tokio::test]
async fn prefetch_bounds_unsettled_deliveries_per_consumer() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("slow", "#").with_prefetch(2)).await;
    for n in 0..5 {
        publish_confirmed(&*session, &numbered("job.run", n)).await;
    }
    assert_eq!(broker.unacked_len("slow"), 2);
    assert_eq!(broker.queue_len("slow"), 3);
    let mut got = ready(&mut stream);
    assert_eq!(got.len(), 2);

    // Settling one frees one slot, and the next message comes.
    got.remove(0).acker.settle(Decision::Ack).await.unwrap();
    let more = ready(&mut stream);
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].delivery.event().data()["n"], 2);
    assert_eq!(broker.unacked_len("slow"), 2);
    assert_eq!(broker.queue_len("slow"), 2);
    ack_all(got).await;
    ack_all(more).await;
}

#[tokio::test]
async fn retry_redelivers_flagged_with_the_next_attempt() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("billing", "#")).await;
    let sent = event("order.created");
    publish_confirmed(&*session, &sent).await;

    for attempt in 1..=3 {
        let d = next_delivery(&mut stream, WAIT).await;
        assert_eq!(d.delivery.event().id(), sent.id());
        assert_eq!(d.delivery.attempt(), attempt);
        assert_eq!(d.delivery.redelivered(), attempt > 1);
        d.acker.settle(Decision::Retry).await.unwrap();
    }
    let d = next_delivery(&mut stream, WAIT).await;
    assert_eq!(d.delivery.attempt(), 4);
    d.acker.settle(Decision::Ack).await.unwrap();
    assert!(broker.dead_letters("billing").is_empty());
}

#[tokio::test]
async fn retry_puts_the_message_back_before_the_ones_waiting() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("billing", "#").with_prefetch(1)).await;
    publish_confirmed(&*session, &numbered("order.created", 0)).await;
    publish_confirmed(&*session, &numbered("order.created", 1)).await;
    let first = next_delivery(&mut stream, WAIT).await;
    first.acker.settle(Decision::Retry).await.unwrap();
    let again = next_delivery(&mut stream, WAIT).await;
    assert_eq!(again.delivery.event().data()["n"], 0);
    assert!(again.delivery.redelivered());
    again.acker.settle(Decision::Ack).await.unwrap();
    let second = next_delivery(&mut stream, WAIT).await;
    assert_eq!(second.delivery.event().data()["n"], 1);
    second.acker.settle(Decision::Ack).await.unwrap();
}

#[tokio::test]
async fn reject_dead_letters_and_does_not_redeliver() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("billing", "#")).await;
    let poison = event("order.created");
    publish_confirmed(&*session, &poison).await;
    next_delivery(&mut stream, WAIT)
        .await
        .acker
        .settle(Decision::reject("rejected by the test"))
        .await
        .unwrap();

    assert!(ready(&mut stream).is_empty());
    assert_eq!(broker.queue_len("billing"), 0);
    assert_eq!(broker.unacked_len("billing"), 0);
    let dead = broker.dead_letters("billing");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id(), poison.id());
    assert_eq!(dead[0].data(), poison.data());
    let h = dead[0].headers();
    assert_eq!(h["x-flow-error"], "rejected by the test");
    assert_eq!(h["x-flow-attempts"], "1");
    assert_eq!(h["x-flow-routing-key"], "order.created");
    assert_eq!(h["x-flow-subscription"], "billing");
    assert!(broker.dead_letters("other").is_empty());
}

#[tokio::test]
async fn a_delivery_dropped_unsettled_goes_back() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("billing", "#")).await;
    publish_confirmed(&*session, &event("order.created")).await;
    drop(next_delivery(&mut stream, WAIT).await);

    let d = next_delivery(&mut stream, WAIT).await;
    assert!(d.delivery.redelivered());
    assert_eq!(d.delivery.attempt(), 2);
    d.acker.settle(Decision::Ack).await.unwrap();
    assert_eq!(broker.unacked_len("billing"), 0);
}

#[tokio::test]
async fn dropping_a_stream_puts_back_what_it_never_handed_out() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("billing", "#").with_prefetch(5)).await;
    for n in 0..5 {
        publish_confirmed(&*session, &numbered("order.created", n)).await;
    }
    let held = next_delivery(&mut stream, WAIT).await;
    drop(stream);
    assert_eq!(broker.consumer_count("billing"), 0);
    assert_eq!(broker.queue_len("billing"), 4);
    assert_eq!(broker.unacked_len("billing"), 1);

    // The delivery handed out is still valid on its open session.
    held.acker.settle(Decision::Ack).await.unwrap();
    assert_eq!(broker.unacked_len("billing"), 0);

    let mut stream = subscribed(&*session, &subscription("billing", "#")).await;
    let got = ready(&mut stream);
    let ns: Vec<_> = got
        .iter()
        .map(|d| d.delivery.event().data()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4]);
    ack_all(got).await;
}

#[tokio::test]
async fn closing_a_session_ends_its_streams_and_requeues_its_deliveries() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = subscribed(&*session, &subscription("billing", "#").with_prefetch(3)).await;
    for n in 0..3 {
        publish_confirmed(&*session, &numbered("order.created", n)).await;
    }
    let held = next_delivery(&mut stream, WAIT).await;
    session.close().await;

    assert_eq!(session.closed().await.kind(), BackendErrorKind::Closed);
    assert!(stream_ends(&mut stream, WAIT).await);
    let err = held.acker.settle(Decision::Ack).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Closed);
    let err = session.send(&event("order.created")).await.err().unwrap();
    assert_eq!(err.kind(), BackendErrorKind::Closed);
    assert!(
        session
            .subscribe(&subscription("billing", "#"))
            .await
            .is_err()
    );
    assert_eq!(broker.session_count(), 0);

    // All three went back, in order, flagged as redelivered, as attempt 2.
    assert_eq!(broker.queue_len("billing"), 3);
    let other = connect(&broker).await;
    let mut stream = subscribed(&*other, &subscription("billing", "#")).await;
    let got = ready(&mut stream);
    let seen: Vec<_> = got
        .iter()
        .map(|d| {
            (
                d.delivery.event().data()["n"].as_u64().unwrap(),
                d.delivery.redelivered(),
                d.delivery.attempt(),
            )
        })
        .collect();
    assert_eq!(seen, [(0, true, 2), (1, true, 2), (2, true, 2)]);
    ack_all(got).await;
}

#[tokio::test]
async fn taking_the_broker_down_loses_every_session() {
    let broker = MemoryBroker::new();
    let backend = broker.backend();
    let (one, two) = (
        backend.connect().await.unwrap(),
        backend.connect().await.unwrap(),
    );
    let mut s1 = subscribed(&*one, &subscription("billing", "#")).await;
    let mut s2 = subscribed(&*two, &subscription("audit", "#")).await;
    publish_confirmed(&*one, &event("order.created")).await;
    let held = next_delivery(&mut s1, WAIT).await;
    let waiting = {
        let two = Arc::clone(&two);
        tokio::spawn(async move { two.closed().await })
    };

    broker.take_down();
    assert!(!broker.is_up());

    let err = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    assert!(err.is_retryable());
    assert_eq!(one.closed().await.kind(), BackendErrorKind::Connection);
    // It can be awaited again.
    assert_eq!(one.closed().await.kind(), BackendErrorKind::Connection);
    assert!(stream_ends(&mut s1, WAIT).await);
    assert!(stream_ends(&mut s2, WAIT).await);

    let err = one.send(&event("order.created")).await.err().unwrap();
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    let err = backend.connect().await.err().unwrap();
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    let err = held.acker.settle(Decision::Ack).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Closed);

    // Queues and messages survive; the unsettled delivery is back, flagged.
    assert_eq!(broker.queue_len("billing"), 1);
    assert_eq!(broker.queue_len("audit"), 1);
    broker.bring_up();
    assert!(broker.is_up());
    let session = backend.connect().await.unwrap();
    let mut stream = subscribed(&*session, &subscription("billing", "#")).await;
    let d = next_delivery(&mut stream, WAIT).await;
    assert!(d.delivery.redelivered());
    assert_eq!(d.delivery.attempt(), 2);
    d.acker.settle(Decision::Ack).await.unwrap();
    // Flagged too: the broker had sent it to the lost consumer, unread.
    let mut stream = subscribed(&*session, &subscription("audit", "#")).await;
    let d = next_delivery(&mut stream, WAIT).await;
    assert!(d.delivery.redelivered());
    d.acker.settle(Decision::Ack).await.unwrap();
}

#[tokio::test]
async fn a_session_dropped_by_every_user_closes() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let stream = subscribed(&*session, &subscription("billing", "#")).await;
    assert_eq!(broker.session_count(), 1);
    drop(session);
    // The stream still uses the session.
    assert_eq!(broker.session_count(), 1);
    assert_eq!(broker.consumer_count("billing"), 1);
    drop(stream);
    assert_eq!(broker.session_count(), 0);
    assert_eq!(broker.consumer_count("billing"), 0);
    assert!(broker.has_queue("billing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_consumers_lose_nothing() {
    const TASKS: usize = 8;
    const EACH: usize = 500;
    let broker = MemoryBroker::new();
    let subscription = subscription("workers", "job.#").with_prefetch(8);
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let session = connect(&broker).await;
        let mut stream = subscribed(&*session, &subscription).await;
        consumers.push(tokio::spawn(async move {
            let _session = session;
            let mut ids = Vec::new();
            while let Ok(Some(d)) = tokio::time::timeout(WAIT, stream.next()).await {
                let stop = d.delivery.event().event_type().as_str() == "job.stop";
                if !stop {
                    ids.push(d.delivery.event().id());
                }
                d.acker.settle(Decision::Ack).await.unwrap();
                if stop {
                    break;
                }
            }
            ids
        }));
    }
    let mut publishers = Vec::new();
    for task in 0..TASKS {
        let session = connect(&broker).await;
        publishers.push(tokio::spawn(async move {
            for n in 0..EACH {
                publish_confirmed(&*session, &numbered(&format!("job.t{task}"), n)).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let session = connect(&broker).await;
    publish_confirmed(&*session, &event("job.stop")).await;
    publish_confirmed(&*session, &event("job.stop")).await;

    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), TASKS * EACH);
    assert_eq!(unique.len(), TASKS * EACH);
    assert_eq!(broker.published_count(), (TASKS * EACH + 2) as u64);
}
