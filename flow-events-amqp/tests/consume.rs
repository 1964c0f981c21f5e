//! The AMQP backend at the `Session` level, against a real broker:
//! consuming, acks, retries, dead letters and queue declarations.

mod common;

use std::time::Duration;

use common::CleanupSubscription;
use common::{Fixture, WAIT, next_raw, raw, ready, unique};
use flow_events_core::{BackendErrorKind, Decision, Event, QueueKind};
use flow_events_testkit::steps::{
    next_delivery, numbered, publish_confirmed, subscribed, subscription,
};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;

#[tokio::test(flavor = "multi_thread")]
async fn consume_and_ack() {
    require_broker!("consume_and_ack");
    let mut fx = Fixture::new("ack");
    let name = unique("ack");
    fx.cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = subscribed(&*session, &subscription(&name, "order.*")).await;
    let sent = numbered("order.created", 1).with_header("traceparent", "00-abc");
    publish_confirmed(&*session, &sent).await;
    publish_confirmed(&*session, &numbered("user.created", 2)).await;
    let incoming = next_delivery(&mut stream, WAIT).await;
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
    let mut cleanup = common::Cleanup::new(common::URL);
    cleanup.subscription(&name);
    let session = fx.session().await;
    let mut stream = session
        .subscribe(&subscription(&name, "#").with_queue_kind(kind))
        .await
        .expect("subscribe");
    let sent = numbered("order.created", 1);
    publish_confirmed(&*session, &sent).await;
    let first = next_delivery(&mut stream, WAIT).await;
    assert_eq!(first.delivery.attempt(), 1);
    assert!(!first.delivery.redelivered());
    first.acker.settle(Decision::Retry).await.expect("retry");
    let second = next_delivery(&mut stream, WAIT).await;
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
    let mut stream = subscribed(&*session, &subscription(&name, "#")).await;
    let sent = numbered("order.failed", 1);
    publish_confirmed(&*session, &sent).await;
    next_delivery(&mut stream, WAIT)
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
    let sent = numbered("order.failed", 1);
    publish_confirmed(&*session, &sent).await;
    next_delivery(&mut stream, WAIT)
        .await
        .acker
        .settle(Decision::Retry)
        .await
        .expect("retry 1");
    let second = next_delivery(&mut stream, WAIT).await;
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
    let mut stream = subscribed(&*session, &subscription(&name, "#")).await;
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
    let valid = numbered("order.created", 2);
    publish_confirmed(&*session, &valid).await;
    let incoming = next_delivery(&mut stream, WAIT).await;
    assert_eq!(incoming.delivery.event(), &valid);
    incoming.acker.settle(Decision::Ack).await.expect("ack");
    let dead = next_raw(&ch, &format!("{name}.dead")).await;
    assert_eq!(dead.data, br#"{"password": "hunter2"}"#);
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
    publish_confirmed(&*session, &numbered("order.created", 1)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), session.closed())
            .await
            .is_err()
    );
    session.close().await;
}
