//! OpenTelemetry across RabbitMQ (feature `otel`): the handler of each
//! delivery runs in a consumer span whose parent is the context the message
//! headers carry (`traceparent` and `tracestate`, read by the global
//! propagator), whoever published it: flow-events, or another language's
//! OpenTelemetry client. Publishing needs nothing here: the decorator writes
//! the context into the event's headers, which travel as message headers.
//!
//! The span's attributes follow the messaging semantic conventions for
//! RabbitMQ: `messaging.system` `rabbitmq`, `messaging.destination.name` (the
//! exchange), `messaging.rabbitmq.destination.routing_key`, and from the
//! decorator the message id, the operation and the queue.

use flow_events_core::{Event, IncomingDelivery, otel};
use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::Extractor;

use crate::wire;

/// Message headers read as a propagation carrier: string values only.
struct Headers<'a>(Option<&'a FieldTable>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0?.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .map(|h| h.inner().keys().map(|k| k.as_str()).collect())
            .unwrap_or_default()
    }
}

/// The consumer span of a delivery of `event` from `exchange` with
/// `routing_key` to `queue`: child of the context its message `headers` carry.
pub(crate) fn process_span(
    headers: Option<&FieldTable>,
    exchange: &str,
    routing_key: &str,
    event: &Event,
    queue: &str,
) -> tracing::Span {
    let parent = otel::extract(&Headers(headers));
    let attributes = wire::message_attributes(exchange, routing_key);
    otel::process_span(attributes, event, queue, parent)
}

/// Runs the handler of `incoming` in `span`.
pub(crate) fn in_span(incoming: IncomingDelivery, span: tracing::Span) -> IncomingDelivery {
    incoming.with_scope(otel::process_scope(span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{LongString, ShortString};

    #[test]
    fn reads_string_headers_only() {
        let mut h = FieldTable::default();
        h.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from("00-abc")),
        );
        h.insert(
            "tracestate".into(),
            AMQPValue::ShortString(ShortString::from("k=v")),
        );
        h.insert("x-flow-attempt".into(), AMQPValue::LongUInt(2));
        let headers = Headers(Some(&h));
        assert_eq!(headers.get("traceparent"), Some("00-abc"));
        assert_eq!(headers.get("tracestate"), Some("k=v"));
        assert_eq!(headers.get("x-flow-attempt"), None);
        assert_eq!(headers.keys().len(), 3);
        assert_eq!(Headers(None).get("traceparent"), None);
    }
}
