//! The handler's decisions: a retried delivery comes again, a rejected one
//! does not.

use flow_events_core::{Decision, EventId, EventSink};
use serde_json::json;

use super::Harness;
use super::support::{Deliveries, Scope, assert_same_event, collect, publish, subscribe};

/// A delivery answered with `Retry` comes again, flagged as redelivered, as
/// attempt 2; acked then, it is not delivered a third time.
pub async fn retry_redelivers<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("retry");
    let client = harness.client().await;
    let (handler, mut seen) = collect(|d| {
        if d.event().data()["kind"] == json!("flaky") && d.attempt() == 1 {
            Decision::Retry
        } else {
            Decision::Ack
        }
    });
    let subscription = scope
        .subscription("orders", "order.*")
        .with_prefetch(1)
        .with_max_attempts(3);
    let handle = subscribe(&client, subscription, handler).await;

    let flaky = scope.event("order.created", json!({ "kind": "flaky" }));
    publish(&client, flaky.clone(), "the flaky event").await;

    let first = seen.next(wait, "the first delivery").await;
    assert_eq!(first.event().id(), flaky.id());
    assert!(!first.redelivered(), "the first delivery is not flagged");
    assert_eq!(first.attempt(), 1);

    let second = seen.next(wait, "the redelivery").await;
    assert_eq!(
        second.event().id(),
        flaky.id(),
        "the retried event comes again"
    );
    assert!(
        second.redelivered(),
        "a retried event is flagged as redelivered"
    );
    assert_eq!(second.attempt(), 2, "a retried event comes as attempt 2");
    assert_same_event(second.event(), &flaky, "the redelivered event");

    assert_only_markers_follow(&client, &scope, &mut seen, flaky.id(), wait).await;
    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// A delivery answered with `Reject` is not delivered again.
pub async fn reject_does_not_redeliver<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("reject");
    let client = harness.client().await;
    let (handler, mut seen) = collect(|d| {
        if d.event().data()["kind"] == json!("poison") {
            Decision::reject("poison")
        } else {
            Decision::Ack
        }
    });
    let subscription = scope.subscription("orders", "order.*").with_prefetch(1);
    let handle = subscribe(&client, subscription, handler).await;

    let poison = scope.event("order.created", json!({ "kind": "poison" }));
    publish(&client, poison.clone(), "the poison event").await;
    let first = seen.next(wait, "the poison event").await;
    assert_eq!(first.event().id(), poison.id());

    assert_only_markers_follow(&client, &scope, &mut seen, poison.id(), wait).await;
    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// Publishes two markers one after the other and asserts that they are the
/// next deliveries, so `gone` was not delivered again. With a prefetch of 1,
/// whether a broker puts a message back at the front or the back of the
/// queue, it would arrive before the second marker.
async fn assert_only_markers_follow<C: EventSink>(
    client: &C,
    scope: &Scope,
    seen: &mut Deliveries,
    gone: EventId,
    wait: std::time::Duration,
) {
    for n in 1..=2 {
        let marker = scope.event("order.marker", json!({ "kind": "marker", "n": n }));
        let id = marker.id();
        publish(client, marker, "a marker").await;
        let next = seen.next(wait, "a marker").await;
        assert_ne!(
            next.event().id(),
            gone,
            "the event was delivered again before marker {n}"
        );
        assert_eq!(next.event().id(), id, "marker {n} is the next delivery");
    }
}
