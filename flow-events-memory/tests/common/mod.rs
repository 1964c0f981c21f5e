//! What the memory backend's session tests share: a session on a broker,
//! what a stream holds right now, and settling in bulk.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{Backend, Decision, DeliveryStream, Event, IncomingDelivery, Session};
use flow_events_memory::MemoryBroker;
use futures_util::{FutureExt, StreamExt};

/// The longest wait for something that must come.
pub const WAIT: Duration = Duration::from_secs(5);

/// An event of `event_type` whose payload names its type.
pub fn event(event_type: &str) -> Event {
    Event::try_new(event_type, serde_json::json!({ "type": event_type })).expect("a valid event")
}

/// A session on `broker`.
pub async fn connect(broker: &MemoryBroker) -> Arc<dyn Session> {
    broker.backend().connect().await.expect("the broker is up")
}

/// Everything the stream holds right now, without waiting.
pub fn ready(stream: &mut DeliveryStream) -> Vec<IncomingDelivery> {
    let mut out = Vec::new();
    while let Some(Some(d)) = stream.next().now_or_never() {
        out.push(d);
    }
    out
}

/// The event types of `deliveries`, in order.
pub fn types(deliveries: &[IncomingDelivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.delivery.event().event_type().to_string())
        .collect()
}

/// Acks every one of `deliveries`.
pub async fn ack_all(deliveries: Vec<IncomingDelivery>) {
    for d in deliveries {
        d.acker.settle(Decision::Ack).await.expect("settled");
    }
}
