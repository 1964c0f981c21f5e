//! The memory backend at the session level: routing, competing consumers,
//! prefetch, settling, sessions ending and broker outages.
//!
//! Delivery on the memory broker is synchronous: once `send` or `settle` has
//! returned, every resulting delivery is already in its consumer's stream. So
//! "nothing more arrives" is checked by polling the stream once
//! (`now_or_never`), and waits for something that must come are bounded by a
//! timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{
    Backend, BackendErrorKind, Decision, DeliveryStream, Event, IncomingDelivery, Session,
    Subscription, TopicPattern,
};
use flow_events_memory::{MemoryBackend, MemoryBroker};
use futures_util::{FutureExt, StreamExt};

const WAIT: Duration = Duration::from_secs(5);

fn sub(name: &str, pattern: &str) -> Subscription {
    Subscription::new(name, TopicPattern::new(pattern).expect("a valid pattern"))
        .expect("a valid subscription")
}

fn event(event_type: &str) -> Event {
    Event::try_new(event_type, serde_json::json!({ "type": event_type })).expect("a valid event")
}

fn numbered(event_type: &str, n: usize) -> Event {
    Event::try_new(event_type, serde_json::json!({ "n": n })).expect("a valid event")
}

async fn connect(broker: &MemoryBroker) -> Arc<dyn Session> {
    broker.backend().connect().await.expect("the broker is up")
}

async fn send(session: &Arc<dyn Session>, event: &Event) {
    session
        .send(event)
        .await
        .expect("sent")
        .await
        .expect("confirmed");
}

/// The next delivery, which must come.
async fn next(stream: &mut DeliveryStream) -> IncomingDelivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a delivery in time")
        .expect("the stream to go on")
}

/// Everything the stream holds right now, without waiting.
fn ready(stream: &mut DeliveryStream) -> Vec<IncomingDelivery> {
    let mut out = Vec::new();
    while let Some(Some(d)) = stream.next().now_or_never() {
        out.push(d);
    }
    out
}

/// Whether the stream has ended (it must end in time).
async fn ends(stream: &mut DeliveryStream) -> bool {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the stream to end in time")
        .is_none()
}

fn types(deliveries: &[IncomingDelivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.delivery.event().event_type().to_string())
        .collect()
}

async fn ack_all(deliveries: Vec<IncomingDelivery>) {
    for d in deliveries {
        d.acker.settle(Decision::Ack).await.expect("settled");
    }
}

#[tokio::test]
async fn info_names_the_backend() {
    let info = MemoryBackend::new(&MemoryBroker::new()).info();
    assert_eq!(info.name, "memory");
    assert_eq!(info.url, "memory://");
}

#[tokio::test]
async fn publish_then_receive_then_ack() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = session.subscribe(&sub("billing", "order.*")).await.unwrap();
    let sent = event("order.created").with_header("trace", "abc");
    send(&session, &sent).await;

    let d = next(&mut stream).await;
    assert_eq!(d.delivery.event(), &sent);
    assert!(!d.delivery.redelivered());
    assert_eq!(d.delivery.attempt(), 1);
    assert_eq!(broker.unacked_len("billing"), 1);

    d.acker.settle(Decision::Ack).await.unwrap();
    assert_eq!(broker.unacked_len("billing"), 0);
    assert_eq!(broker.queue_len("billing"), 0);
    assert_eq!(broker.published_count(), 1);
    assert!(ready(&mut stream).is_empty());
}

#[tokio::test]
async fn publishing_where_nobody_subscribes_is_confirmed_and_goes_nowhere() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    send(&session, &event("nobody.listens")).await;
    assert_eq!(broker.published_count(), 1);
    assert!(!broker.has_queue("later"));

    // A subscription made afterwards does not get it.
    let mut stream = session.subscribe(&sub("later", "#")).await.unwrap();
    assert!(ready(&mut stream).is_empty());
    assert_eq!(broker.queue_len("later"), 0);
}

#[tokio::test]
async fn topic_patterns_route_exactly_the_matching_events() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut star = session.subscribe(&sub("star", "order.*")).await.unwrap();
    let mut hash = session.subscribe(&sub("hash", "order.#")).await.unwrap();
    let mut exact = session
        .subscribe(&sub("exact", "order.created"))
        .await
        .unwrap();

    for t in [
        "order",
        "order.created",
        "order.created.v2",
        "order.paid",
        "user.created",
    ] {
        send(&session, &event(t)).await;
    }

    let got = ready(&mut star);
    assert_eq!(types(&got), ["order.created", "order.paid"]);
    ack_all(got).await;
    let got = ready(&mut hash);
    assert_eq!(
        types(&got),
        ["order", "order.created", "order.created.v2", "order.paid"]
    );
    ack_all(got).await;
    let got = ready(&mut exact);
    assert_eq!(types(&got), ["order.created"]);
    ack_all(got).await;
}

#[tokio::test]
async fn a_queue_is_bound_to_every_pattern_it_was_subscribed_with() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut a = session.subscribe(&sub("audit", "order.*")).await.unwrap();
    let mut b = session.subscribe(&sub("audit", "user.*")).await.unwrap();
    send(&session, &event("order.created")).await;
    send(&session, &event("user.created")).await;
    send(&session, &event("stock.moved")).await;

    let mut got = ready(&mut a);
    got.extend(ready(&mut b));
    let mut got_types = types(&got);
    got_types.sort();
    assert_eq!(got_types, ["order.created", "user.created"]);
    ack_all(got).await;
}

#[tokio::test]
async fn a_queue_keeps_its_messages_while_no_consumer_is_attached() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let stream = session.subscribe(&sub("billing", "order.*")).await.unwrap();
    drop(stream);
    assert_eq!(broker.consumer_count("billing"), 0);

    for n in 0..3 {
        send(&session, &numbered("order.created", n)).await;
    }
    assert_eq!(broker.queue_len("billing"), 3);

    let mut stream = session.subscribe(&sub("billing", "order.*")).await.unwrap();
    let got = ready(&mut stream);
    let ns: Vec<_> = got
        .iter()
        .map(|d| d.delivery.event().data()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [0, 1, 2]);
    assert!(got.iter().all(|d| !d.delivery.redelivered()));
    ack_all(got).await;
    assert_eq!(broker.queue_len("billing"), 0);
}

#[tokio::test]
async fn many_events_arrive_in_order() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = session
        .subscribe(&sub("billing", "order.*").with_prefetch(16))
        .await
        .unwrap();
    let sender = Arc::clone(&session);
    let publisher = tokio::spawn(async move {
        for n in 0..1000 {
            send(&sender, &numbered("order.created", n)).await;
        }
    });
    for n in 0..1000 {
        let d = next(&mut stream).await;
        assert_eq!(d.delivery.event().data()["n"], n);
        d.acker.settle(Decision::Ack).await.unwrap();
    }
    publisher.await.unwrap();
    assert_eq!(broker.queue_len("billing"), 0);
}

#[tokio::test]
async fn competing_consumers_share_the_work_round_robin() {
    let broker = MemoryBroker::new();
    let (one, two) = (connect(&broker).await, connect(&broker).await);
    let subscription = sub("workers", "job.#").with_prefetch(100);
    let mut s1 = one.subscribe(&subscription).await.unwrap();
    let mut s2 = two.subscribe(&subscription).await.unwrap();
    assert_eq!(broker.consumer_count("workers"), 2);

    for n in 0..10 {
        send(&one, &numbered("job.run", n)).await;
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
    let mut stream = session
        .subscribe(&sub("slow", "#").with_prefetch(2))
        .await
        .unwrap();
    for n in 0..5 {
        send(&session, &numbered("job.run", n)).await;
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
    let mut stream = session.subscribe(&sub("billing", "#")).await.unwrap();
    let sent = event("order.created");
    send(&session, &sent).await;

    for attempt in 1..=3 {
        let d = next(&mut stream).await;
        assert_eq!(d.delivery.event().id(), sent.id());
        assert_eq!(d.delivery.attempt(), attempt);
        assert_eq!(d.delivery.redelivered(), attempt > 1);
        d.acker.settle(Decision::Retry).await.unwrap();
    }
    let d = next(&mut stream).await;
    assert_eq!(d.delivery.attempt(), 4);
    d.acker.settle(Decision::Ack).await.unwrap();
    assert!(broker.dead_letters("billing").is_empty());
}

#[tokio::test]
async fn retry_puts_the_message_back_before_the_ones_waiting() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = session
        .subscribe(&sub("billing", "#").with_prefetch(1))
        .await
        .unwrap();
    send(&session, &numbered("order.created", 0)).await;
    send(&session, &numbered("order.created", 1)).await;
    let first = next(&mut stream).await;
    first.acker.settle(Decision::Retry).await.unwrap();
    let again = next(&mut stream).await;
    assert_eq!(again.delivery.event().data()["n"], 0);
    assert!(again.delivery.redelivered());
    again.acker.settle(Decision::Ack).await.unwrap();
    let second = next(&mut stream).await;
    assert_eq!(second.delivery.event().data()["n"], 1);
    second.acker.settle(Decision::Ack).await.unwrap();
}

#[tokio::test]
async fn reject_dead_letters_and_does_not_redeliver() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = session.subscribe(&sub("billing", "#")).await.unwrap();
    let poison = event("order.created");
    send(&session, &poison).await;
    next(&mut stream)
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
    let mut stream = session.subscribe(&sub("billing", "#")).await.unwrap();
    send(&session, &event("order.created")).await;
    drop(next(&mut stream).await);

    let d = next(&mut stream).await;
    assert!(d.delivery.redelivered());
    assert_eq!(d.delivery.attempt(), 2);
    d.acker.settle(Decision::Ack).await.unwrap();
    assert_eq!(broker.unacked_len("billing"), 0);
}

#[tokio::test]
async fn dropping_a_stream_puts_back_what_it_never_handed_out() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut stream = session
        .subscribe(&sub("billing", "#").with_prefetch(5))
        .await
        .unwrap();
    for n in 0..5 {
        send(&session, &numbered("order.created", n)).await;
    }
    let held = next(&mut stream).await;
    drop(stream);
    assert_eq!(broker.consumer_count("billing"), 0);
    assert_eq!(broker.queue_len("billing"), 4);
    assert_eq!(broker.unacked_len("billing"), 1);

    // The delivery handed out is still valid on its open session.
    held.acker.settle(Decision::Ack).await.unwrap();
    assert_eq!(broker.unacked_len("billing"), 0);

    let mut stream = session.subscribe(&sub("billing", "#")).await.unwrap();
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
    let mut stream = session
        .subscribe(&sub("billing", "#").with_prefetch(3))
        .await
        .unwrap();
    for n in 0..3 {
        send(&session, &numbered("order.created", n)).await;
    }
    let held = next(&mut stream).await;
    session.close().await;

    assert_eq!(session.closed().await.kind(), BackendErrorKind::Closed);
    assert!(ends(&mut stream).await);
    let err = held.acker.settle(Decision::Ack).await.unwrap_err();
    assert_eq!(err.kind(), BackendErrorKind::Closed);
    let err = session.send(&event("order.created")).await.err().unwrap();
    assert_eq!(err.kind(), BackendErrorKind::Closed);
    assert!(session.subscribe(&sub("billing", "#")).await.is_err());
    assert_eq!(broker.session_count(), 0);

    // All three went back, in order, flagged as redelivered, as attempt 2.
    assert_eq!(broker.queue_len("billing"), 3);
    let other = connect(&broker).await;
    let mut stream = other.subscribe(&sub("billing", "#")).await.unwrap();
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
    let mut s1 = one.subscribe(&sub("billing", "#")).await.unwrap();
    let mut s2 = two.subscribe(&sub("audit", "#")).await.unwrap();
    send(&one, &event("order.created")).await;
    let held = next(&mut s1).await;
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
    assert!(ends(&mut s1).await);
    assert!(ends(&mut s2).await);

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
    let mut stream = session.subscribe(&sub("billing", "#")).await.unwrap();
    let d = next(&mut stream).await;
    assert!(d.delivery.redelivered());
    assert_eq!(d.delivery.attempt(), 2);
    d.acker.settle(Decision::Ack).await.unwrap();
    // Flagged too: the broker had sent it to the lost consumer, unread.
    let mut stream = session.subscribe(&sub("audit", "#")).await.unwrap();
    let d = next(&mut stream).await;
    assert!(d.delivery.redelivered());
    d.acker.settle(Decision::Ack).await.unwrap();
}

#[tokio::test]
async fn a_session_dropped_by_every_user_closes() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let stream = session.subscribe(&sub("billing", "#")).await.unwrap();
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
    let subscription = sub("workers", "job.#").with_prefetch(8);
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let session = connect(&broker).await;
        let mut stream = session.subscribe(&subscription).await.unwrap();
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
                send(&session, &numbered(&format!("job.t{task}"), n)).await;
            }
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    let session = connect(&broker).await;
    send(&session, &event("job.stop")).await;
    send(&session, &event("job.stop")).await;

    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), TASKS * EACH);
    assert_eq!(unique.len(), TASKS * EACH);
    assert_eq!(broker.published_count(), (TASKS * EACH + 2) as u64);
}
