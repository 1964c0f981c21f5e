//! The AMQP backend at the `Session` level, against a real broker:
//! publishing, confirms, refusals, the wire format and closing.

mod common;

use common::CleanupSubscription;
use common::{Fixture, WAIT, next_raw, raw, ready, unique};
use flow_events_core::{BackendErrorKind, Event};
use flow_events_testkit::steps::{numbered, publish_confirmed, subscribed, subscription};
use futures_util::StreamExt;
use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;

#[tokio::test(flavor = "multi_thread")]
async fn publish_is_confirmed_with_many_in_flight() {
    require_broker!("publish_is_confirmed_with_many_in_flight");
    let mut fx = Fixture::new("confirm");
    let session = fx.session().await;
    let (_conn, ch) = raw().await;
    let queue = fx.raw_queue(&ch, "#").await;
    let mut confirmations = Vec::new();
    for n in 0..200 {
        confirmations.push(
            session
                .send(&numbered("order.created", n))
                .await
                .expect("send"),
        );
    }
    for c in futures_util::future::join_all(confirmations).await {
        c.expect("confirmed");
    }
    assert_eq!(ready(&ch, &queue).await, 200);
    session.close().await;
}

/// `send` returns once lapin has queued the publish, before it is written:
/// events sent in a row reach the queue in send order, whatever order their
/// confirmations are awaited in (the decorator's drain relies on it).
#[tokio::test(flavor = "multi_thread")]
async fn sends_keep_their_order_without_waiting_for_writes() {
    require_broker!("sends_keep_their_order_without_waiting_for_writes");
    let mut fx = Fixture::new("order");
    let session = fx.session().await;
    let (_conn, ch) = raw().await;
    let queue = fx.raw_queue(&ch, "#").await;
    let mut confirmations = Vec::new();
    for n in 0..500 {
        confirmations.push(
            session
                .send(&numbered("order.created", n))
                .await
                .expect("send"),
        );
    }
    for c in confirmations.into_iter().rev() {
        c.await.expect("confirmed");
    }
    for n in 0..500 {
        let message = ch
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .unwrap_or_else(|| panic!("message {n} missing"));
        let got: Event = serde_json::from_slice(&message.delivery.data).expect("an event");
        assert_eq!(got.data()["n"], n, "out of order");
    }
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unroutable_event_with_mandatory_is_refused() {
    require_broker!("unroutable_event_with_mandatory_is_refused");
    let fx = Fixture::with("mandatory", |c| c, |o| o.with_mandatory(true));
    let session = fx.session().await;
    let err = session
        .send(&numbered("nobody.listens", 1))
        .await
        .expect("send")
        .await
        .expect_err("unroutable");
    assert_eq!(err.kind(), BackendErrorKind::EventRefused, "{err}");
    assert!(err.message().contains("unroutable"), "{err}");
    // The session goes on.
    let (_conn, ch) = raw().await;
    let mut fx = fx;
    fx.raw_queue(&ch, "#").await;
    publish_confirmed(&*session, &numbered("somebody.listens", 2)).await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_event_is_refused_before_sending() {
    require_broker!("oversized_event_is_refused_before_sending");
    let fx = Fixture::with("oversized", |c| c.with_max_event_bytes(1024), |o| o);
    let session = fx.session().await;
    let big =
        Event::try_new("blob.stored", serde_json::json!({ "b": "x".repeat(2000) })).expect("event");
    let err = match session.send(&big).await {
        Ok(_) => panic!("an oversized event was sent"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), BackendErrorKind::EventRefused, "{err}");
    assert!(err.message().contains("limit is 1024"), "{err}");
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_format() {
    require_broker!("wire_format");
    let mut fx = Fixture::with("wire", |c| c, |o| o.with_app_id("billing"));
    let session = fx.session().await;
    let (_conn, ch) = raw().await;
    let queue = fx.raw_queue(&ch, "invoice.*").await;
    let sent = Event::try_new(
        "invoice.paid",
        serde_json::json!({"invoice": 7, "total": "12.50"}),
    )
    .expect("event")
    .with_header("traceparent", "00-abc-01");
    publish_confirmed(&*session, &sent).await;
    let msg = next_raw(&ch, &queue).await;
    assert_eq!(msg.exchange.as_str(), fx.exchange);
    assert_eq!(msg.routing_key.as_str(), "invoice.paid");
    let p = &msg.properties;
    assert_eq!(
        p.message_id().as_ref().unwrap().as_str(),
        sent.id().to_string()
    );
    assert_eq!(p.kind().as_ref().unwrap().as_str(), "invoice.paid");
    assert_eq!(
        p.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(*p.timestamp(), Some(sent.timestamp().timestamp() as u64));
    assert_eq!(p.app_id().as_ref().unwrap().as_str(), "billing");
    assert_eq!(
        p.headers().as_ref().unwrap().inner().get("traceparent"),
        Some(&AMQPValue::LongString("00-abc-01".into()))
    );
    let body: serde_json::Value = serde_json::from_slice(&msg.data).expect("JSON body");
    assert_eq!(body["id"], sent.id().to_string());
    assert_eq!(body["type"], "invoice.paid");
    assert_eq!(
        body["data"],
        serde_json::json!({"invoice": 7, "total": "12.50"})
    );
    assert_eq!(body["headers"]["traceparent"], "00-abc-01");
    let ts = body["timestamp"].as_str().expect("timestamp string");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(ts).expect("RFC 3339"),
        sent.timestamp()
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn close_resolves_every_waiter_and_ends_streams() {
    require_broker!("close_resolves_every_waiter_and_ends_streams");
    let mut fx = Fixture::new("close");
    let name = unique("close");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = subscribed(&*session, &subscription(&name, "#")).await;
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let s = session.clone();
            tokio::spawn(async move { s.closed().await })
        })
        .collect();
    session.close().await;
    for w in waiters {
        let reason = tokio::time::timeout(WAIT, w)
            .await
            .expect("closed in time")
            .expect("task");
        assert_eq!(reason.kind(), BackendErrorKind::Closed);
    }
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("ends")
            .is_none()
    );
    let err = match session.send(&numbered("order.created", 1)).await {
        Ok(_) => panic!("sent on a closed session"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), BackendErrorKind::Closed);
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_watch_starts_unblocked() {
    require_broker!("blocked_watch_starts_unblocked");
    let fx = Fixture::new("blocked");
    let session = fx.session().await;
    assert!(!*session.blocked().borrow());
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mandatory_refusals_name_the_right_events_with_many_in_flight() {
    require_broker!("mandatory_refusals_name_the_right_events_with_many_in_flight");
    let mut fx = Fixture::with("returns", |c| c, |o| o.with_mandatory(true));
    let session = fx.session().await;
    let (_conn, ch) = raw().await;
    fx.durable_queue(&ch, "routed.*").await;
    // Persistent messages to a durable queue are confirmed in batches, so
    // acks for several events (one of them returned) arrive together.
    let mut pending = Vec::new();
    for n in 0..600 {
        let routed = n % 7 != 3;
        let e = numbered(if routed { "routed.event" } else { "lost.event" }, n);
        let confirmation = session.send(&e).await.expect("send");
        pending.push((routed, confirmation));
    }
    let mut refused = 0;
    for (routed, confirmation) in pending.into_iter().rev() {
        match confirmation.await {
            Ok(()) => assert!(routed, "an unroutable event was confirmed"),
            Err(e) => {
                assert!(!routed, "a routed event was refused: {e}");
                assert_eq!(e.kind(), BackendErrorKind::EventRefused);
                refused += 1;
            }
        }
    }
    assert_eq!(refused, (0..600).filter(|n| n % 7 == 3).count());
    session.close().await;
}
