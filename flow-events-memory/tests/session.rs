//! The memory backend at the session level: publishing, routing, queues
//! bound to patterns, and order.
//!
//! Delivery on the memory broker is synchronous: once `send` or `settle` has
//! returned, every resulting delivery is already in its consumer's stream. So
//! "nothing more arrives" is checked by polling the stream once
//! (`now_or_never`), and waits for something that must come are bounded by a
//! timeout.

mod common;

use std::sync::Arc;

use common::{WAIT, ack_all, connect, event, ready, types};
use flow_events_core::{Backend, Decision};
use flow_events_memory::{MemoryBackend, MemoryBroker};
use flow_events_testkit::steps::{
    next_delivery, numbered, publish_confirmed, subscribed, subscription,
};

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
    let mut stream = subscribed(&*session, &subscription("billing", "order.*")).await;
    let sent = event("order.created").with_header("trace", "abc");
    publish_confirmed(&*session, &sent).await;

    let d = next_delivery(&mut stream, WAIT).await;
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
    publish_confirmed(&*session, &event("nobody.listens")).await;
    assert_eq!(broker.published_count(), 1);
    assert!(!broker.has_queue("later"));

    // A subscription made afterwards does not get it.
    let mut stream = subscribed(&*session, &subscription("later", "#")).await;
    assert!(ready(&mut stream).is_empty());
    assert_eq!(broker.queue_len("later"), 0);
}

#[tokio::test]
async fn topic_patterns_route_exactly_the_matching_events() {
    let broker = MemoryBroker::new();
    let session = connect(&broker).await;
    let mut star = subscribed(&*session, &subscription("star", "order.*")).await;
    let mut hash = subscribed(&*session, &subscription("hash", "order.#")).await;
    let mut exact = subscribed(&*session, &subscription("exact", "order.created")).await;

    for t in [
        "order",
        "order.created",
        "order.created.v2",
        "order.paid",
        "user.created",
    ] {
        publish_confirmed(&*session, &event(t)).await;
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
    let mut a = subscribed(&*session, &subscription("audit", "order.*")).await;
    let mut b = subscribed(&*session, &subscription("audit", "user.*")).await;
    publish_confirmed(&*session, &event("order.created")).await;
    publish_confirmed(&*session, &event("user.created")).await;
    publish_confirmed(&*session, &event("stock.moved")).await;

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
    let stream = subscribed(&*session, &subscription("billing", "order.*")).await;
    drop(stream);
    assert_eq!(broker.consumer_count("billing"), 0);

    for n in 0..3 {
        publish_confirmed(&*session, &numbered("order.created", n)).await;
    }
    assert_eq!(broker.queue_len("billing"), 3);

    let mut stream = subscribed(&*session, &subscription("billing", "order.*")).await;
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
    let mut stream = subscribed(
        &*session,
        &subscription("billing", "order.*").with_prefetch(16),
    )
    .await;
    let sender = Arc::clone(&session);
    let publisher = tokio::spawn(async move {
        for n in 0..1000 {
            publish_confirmed(&*sender, &numbered("order.created", n)).await;
        }
    });
    for n in 0..1000 {
        let d = next_delivery(&mut stream, WAIT).await;
        assert_eq!(d.delivery.event().data()["n"], n);
        d.acker.settle(Decision::Ack).await.unwrap();
    }
    publisher.await.unwrap();
    assert_eq!(broker.queue_len("billing"), 0);
}
