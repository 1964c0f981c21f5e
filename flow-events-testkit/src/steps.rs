//! Steps that the session-level tests of every backend take again and again,
//! each named for what it checks: an event sent and confirmed, a
//! subscription made, the next delivery within a bound, a stream that ends.
//! Each panics with what went wrong.

use std::time::Duration;

use flow_events_core::{
    DeliveryStream, Event, IncomingDelivery, Session, Subscription, TopicPattern,
};
use futures_util::StreamExt;

/// A subscription `name` to `pattern`; both must be valid.
pub fn subscription(name: &str, pattern: &str) -> Subscription {
    let pattern = TopicPattern::new(pattern).unwrap_or_else(|e| panic!("pattern {pattern:?}: {e}"));
    Subscription::new(name, pattern).unwrap_or_else(|e| panic!("subscription {name:?}: {e}"))
}

/// An event of `event_type` whose payload is `{"n": n}`.
pub fn numbered(event_type: &str, n: impl Into<serde_json::Value>) -> Event {
    Event::try_new(event_type, serde_json::json!({ "n": n.into() }))
        .unwrap_or_else(|e| panic!("event {event_type:?}: {e}"))
}

/// Sends `event` on `session` and waits for the broker's confirm; panics
/// when either fails.
pub async fn publish_confirmed(session: &(impl Session + ?Sized), event: &Event) {
    let confirmation = session
        .send(event)
        .await
        .unwrap_or_else(|e| panic!("sending {}: {e}", event.event_type()));
    confirmation
        .await
        .unwrap_or_else(|e| panic!("the confirm of {}: {e}", event.event_type()));
}

/// Starts consuming `subscription` on `session`; panics when it cannot.
pub async fn subscribed(
    session: &(impl Session + ?Sized),
    subscription: &Subscription,
) -> DeliveryStream {
    session
        .subscribe(subscription)
        .await
        .unwrap_or_else(|e| panic!("subscribing {}: {e}", subscription.name()))
}

/// The next delivery of `stream`, which must come within `limit`.
pub async fn next_delivery(stream: &mut DeliveryStream, limit: Duration) -> IncomingDelivery {
    tokio::time::timeout(limit, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery within {limit:?}"))
        .unwrap_or_else(|| panic!("the stream ended while a delivery was awaited"))
}

/// Whether `stream` has ended; it must end or deliver within `limit`.
pub async fn stream_ends(stream: &mut DeliveryStream, limit: Duration) -> bool {
    tokio::time::timeout(limit, stream.next())
        .await
        .unwrap_or_else(|_| panic!("the stream neither ended nor delivered within {limit:?}"))
        .is_none()
}
