//! The AMQP backend at the `Session` level, against a real broker.

mod common;

use std::time::Duration;

use common::{Fixture, WAIT, next_raw, raw, unique};
use flow_events_core::{
    BackendErrorKind, Decision, DeliveryStream, Event, IncomingDelivery, QueueKind, Subscription,
    TopicPattern,
};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

fn event(event_type: &str, n: i64) -> Event {
    Event::try_new(event_type, serde_json::json!({ "n": n })).expect("event")
}

async fn next(stream: &mut DeliveryStream) -> IncomingDelivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no delivery in time")
        .expect("stream ended")
}

fn subscription(name: &str, pattern: &str) -> Subscription {
    Subscription::new(name, TopicPattern::new(pattern).expect("pattern")).expect("subscription")
}

/// Messages ready in `queue` (not counting unacked ones).
async fn ready(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

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
                .send(&event("order.created", n))
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
                .send(&event("order.created", n))
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
async fn consume_and_ack() {
    require_broker!("consume_and_ack");
    let mut fx = Fixture::new("ack");
    let name = unique("ack");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&subscription(&name, "order.*"))
        .await
        .expect("subscribe");
    let sent = event("order.created", 1).with_header("traceparent", "00-abc");
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("confirm");
    session
        .send(&event("user.created", 2))
        .await
        .expect("send")
        .await
        .expect("confirm");
    let incoming = next(&mut stream).await;
    assert_eq!(incoming.delivery.event(), &sent);
    assert_eq!(incoming.delivery.attempt(), 1);
    assert!(!incoming.delivery.redelivered());
    incoming.acker.settle(Decision::Ack).await.expect("ack");
    session.close().await;
    assert!(
        stream.next().await.is_none(),
        "the stream ends with the session"
    );
    // Acked, and `user.created` never matched: nothing is left.
    let (_conn, ch) = raw().await;
    assert_eq!(ready(&ch, &name).await, 0);
}

async fn retry_then_ack(kind: QueueKind) {
    let fx = Fixture::new("retry");
    let name = unique("retry");
    let mut cleanup = common::Cleanup::default();
    cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&subscription(&name, "#").with_queue_kind(kind))
        .await
        .expect("subscribe");
    let sent = event("order.created", 1);
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("confirm");
    let first = next(&mut stream).await;
    assert_eq!(first.delivery.attempt(), 1);
    assert!(!first.delivery.redelivered());
    first.acker.settle(Decision::Retry).await.expect("retry");
    let second = next(&mut stream).await;
    assert_eq!(second.delivery.event(), &sent);
    assert_eq!(second.delivery.attempt(), 2);
    assert!(second.delivery.redelivered());
    second.acker.settle(Decision::Ack).await.expect("ack");
    session.close().await;
    let (_conn, ch) = raw().await;
    assert_eq!(ready(&ch, &name).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_on_classic_queue_counts_the_attempt() {
    require_broker!("retry_on_classic_queue_counts_the_attempt");
    retry_then_ack(QueueKind::Classic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_on_quorum_queue_counts_the_attempt() {
    require_broker!("retry_on_quorum_queue_counts_the_attempt");
    retry_then_ack(QueueKind::Quorum).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_goes_to_the_dead_letter_queue() {
    require_broker!("reject_goes_to_the_dead_letter_queue");
    let mut fx = Fixture::new("reject");
    let name = unique("reject");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&subscription(&name, "#"))
        .await
        .expect("subscribe");
    let sent = event("order.failed", 1);
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("confirm");
    next(&mut stream)
        .await
        .acker
        .settle(Decision::reject("rejected by the test"))
        .await
        .expect("reject");
    let (_conn, ch) = raw().await;
    let dead = next_raw(&ch, &format!("{name}.dead")).await;
    let body: Event = serde_json::from_slice(&dead.data).expect("event body");
    assert_eq!(body, sent);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_the_last_attempt_dead_letters() {
    require_broker!("retry_after_the_last_attempt_dead_letters");
    let mut fx = Fixture::new("lastretry");
    let name = unique("lastretry");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&subscription(&name, "#").with_max_attempts(2))
        .await
        .expect("subscribe");
    let sent = event("order.failed", 1);
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("confirm");
    next(&mut stream)
        .await
        .acker
        .settle(Decision::Retry)
        .await
        .expect("retry 1");
    let second = next(&mut stream).await;
    assert_eq!(second.delivery.attempt(), 2);
    second.acker.settle(Decision::Retry).await.expect("retry 2");
    let (_conn, ch) = raw().await;
    let dead = next_raw(&ch, &format!("{name}.dead")).await;
    assert_eq!(
        dead.properties.message_id().as_ref().map(|m| m.to_string()),
        Some(sent.id().to_string())
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_body_is_dead_lettered_and_consuming_goes_on() {
    require_broker!("invalid_body_is_dead_lettered_and_consuming_goes_on");
    let mut fx = Fixture::new("invalid");
    let name = unique("invalid");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&subscription(&name, "#"))
        .await
        .expect("subscribe");
    let (_conn, ch) = raw().await;
    // Confirmed, so that it is in the queue before the valid event.
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    ch.basic_publish(
        fx.exchange.as_str().into(),
        "order.created".into(),
        BasicPublishOptions::default(),
        br#"{"password": "hunter2"}"#,
        BasicProperties::default(),
    )
    .await
    .expect("raw publish")
    .await
    .expect("raw confirm");
    let valid = event("order.created", 2);
    session
        .send(&valid)
        .await
        .expect("send")
        .await
        .expect("confirm");
    let incoming = next(&mut stream).await;
    assert_eq!(incoming.delivery.event(), &valid);
    incoming.acker.settle(Decision::Ack).await.expect("ack");
    let dead = next_raw(&ch, &format!("{name}.dead")).await;
    assert_eq!(dead.data, br#"{"password": "hunter2"}"#);
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unroutable_event_with_mandatory_is_refused() {
    require_broker!("unroutable_event_with_mandatory_is_refused");
    let fx = Fixture::with("mandatory", |c| c, |o| o.with_mandatory(true));
    let session = fx.session().await;
    let err = session
        .send(&event("nobody.listens", 1))
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
    session
        .send(&event("somebody.listens", 2))
        .await
        .expect("send")
        .await
        .expect("routable");
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
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("confirm");
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
    let mut stream = session
        .subscribe(&subscription(&name, "#"))
        .await
        .expect("subscribe");
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
    let err = match session.send(&event("order.created", 1)).await {
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
async fn queue_redeclared_with_other_kind_is_a_configuration_error() {
    require_broker!("queue_redeclared_with_other_kind_is_a_configuration_error");
    let mut fx = Fixture::new("kind");
    let name = unique("kind");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let stream = session
        .subscribe(&subscription(&name, "#"))
        .await
        .expect("subscribe classic");
    drop(stream);
    let err = match session
        .subscribe(&subscription(&name, "#").with_queue_kind(QueueKind::Quorum))
        .await
    {
        Ok(_) => panic!("a classic queue was redeclared as quorum"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), BackendErrorKind::Configuration, "{err}");
    assert!(err.message().contains("PRECONDITION_FAILED"), "{err}");
    // A channel error: the session lives on.
    session
        .send(&event("order.created", 1))
        .await
        .expect("send")
        .await
        .expect("confirm");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), session.closed())
            .await
            .is_err()
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mandatory_refusals_name_the_right_events_with_many_in_flight() {
    require_broker!("mandatory_refusals_name_the_right_events_with_many_in_flight");
    let mut fx = Fixture::with("returns", |c| c, |o| o.with_mandatory(true));
    let session = fx.session().await;
    let (_conn, ch) = raw().await;
    let name = unique("returns");
    fx.cleanup.queue(&name);
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("durable queue");
    ch.queue_bind(
        name.as_str().into(),
        fx.exchange.as_str().into(),
        "routed.*".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    // Persistent messages to a durable queue are confirmed in batches, so
    // acks for several events (one of them returned) arrive together.
    let mut pending = Vec::new();
    for n in 0..600 {
        let routed = n % 7 != 3;
        let e = event(if routed { "routed.event" } else { "lost.event" }, n);
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
