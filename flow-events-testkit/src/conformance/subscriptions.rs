//! A subscription's life: closing stops its handler, and its events wait
//! for it while it is closed.

use flow_events_core::{Event, EventId};
use serde_json::json;

use super::Harness;
use super::support::{Scope, collect_acking, publish, subscribe};

/// After `SubscriptionHandle::close` has returned, its handler is not called
/// again, while another subscription goes on receiving.
pub async fn closed_subscription_stops_receiving<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("close");
    let client = harness.client().await;
    let (h_closed, mut seen_closed) = collect_acking();
    let (h_open, mut seen_open) = collect_acking();
    let closing = subscribe(&client, scope.subscription("closing", "order.*"), h_closed).await;
    let open = subscribe(&client, scope.subscription("open", "order.*"), h_open).await;

    let before = scope.event("order.created", json!({ "n": 1 }));
    publish(&client, before.clone(), "the first event").await;
    assert_eq!(
        seen_closed.next(wait, "the first event").await.event().id(),
        before.id()
    );
    assert_eq!(
        seen_open.next(wait, "the first event").await.event().id(),
        before.id()
    );

    closing.close().await;
    let after = scope.event("order.created", json!({ "n": 2 }));
    publish(&client, after.clone(), "the second event").await;
    // The open subscription getting it shows it went through the broker.
    assert_eq!(
        seen_open.next(wait, "the second event").await.event().id(),
        after.id()
    );
    let late: Vec<EventId> = seen_closed
        .seen_now()
        .iter()
        .map(|d| d.event().id())
        .collect();
    assert!(
        late.is_empty(),
        "a closed subscription's handler was called: {late:?}"
    );

    open.close().await;
    harness.cleanup(scope.names()).await;
}

/// A subscription is durable: events published while it has no consumer wait
/// for it and arrive, in order, when it is subscribed again.
pub async fn subscription_keeps_events_while_closed<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("durable");
    let client = harness.client().await;
    let subscription = scope.subscription("orders", "order.*");

    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, subscription.clone(), handler).await;
    let first = scope.event("order.created", json!({ "n": 0 }));
    publish(&client, first.clone(), "the first event").await;
    assert_eq!(
        seen.next(wait, "the first event").await.event().id(),
        first.id()
    );
    handle.close().await;

    let waiting: Vec<Event> = (1..=3)
        .map(|n| scope.event("order.created", json!({ "n": n })))
        .collect();
    for event in &waiting {
        publish(&client, event.clone(), "an event while closed").await;
    }

    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, subscription, handler).await;
    let got = seen.take(waiting.len(), wait, "the waiting events").await;
    let got: Vec<EventId> = got.iter().map(|d| d.event().id()).collect();
    let expected: Vec<EventId> = waiting.iter().map(Event::id).collect();
    assert_eq!(got, expected, "the events published while closed, in order");

    handle.close().await;
    harness.cleanup(scope.names()).await;
}
