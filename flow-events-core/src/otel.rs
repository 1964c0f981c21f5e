//! OpenTelemetry spans and trace context across the broker (feature `otel`).
//!
//! The decorator opens `tracing` spans that `tracing-opentelemetry` turns
//! into OpenTelemetry spans, with the messaging semantic conventions:
//!
//! - `publish` (kind producer), around each [`EventSink::publish`](crate::EventSink::publish)
//!   call, child of the caller's current span. Its context goes into the
//!   event's headers through the global propagator (W3C `traceparent` and
//!   `tracestate` with `opentelemetry_sdk`'s `TraceContextPropagator`), before
//!   the event is sent or buffered, so every send of the event carries it. An
//!   event that already carries a context keeps it; the span links to it.
//! - `send` (kind producer), when the drain sends a buffered event later:
//!   a new trace, linked to the context the event carries (its publish span).
//! - `process` (kind consumer), around each handler call, child of the
//!   context the message carries. A backend reads it from its own message
//!   headers and hands the span in with [`process_scope`]; without that,
//!   the decorator reads the event's headers.
//!
//! Attributes: `messaging.system`, `messaging.destination.name` and the
//! system's own come from the backend ([`Backend::message_attributes`]);
//! `messaging.message.id`, `messaging.operation.type` (`send` or `process`)
//! and `messaging.operation.name` from here. Without a `tracing-opentelemetry`
//! layer the spans are plain `tracing` spans and nothing is injected.
//!
//! The application sets the propagator and the tracer provider:
//!
//! ```ignore
//! opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
//! tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("my-service")))
//!     .init();
//! ```

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::backend::{Backend, DeliveryScope};
use crate::event::Event;
use crate::source::Decision;
use futures_util::future::BoxFuture;

/// `messaging.system`: the messaging system, as the backend names it.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// `messaging.destination.name`: where the message goes (an exchange, a subject).
pub const DESTINATION_NAME: &str = "messaging.destination.name";
/// `messaging.destination.subscription.name`: the subscription consuming it.
pub const SUBSCRIPTION_NAME: &str = "messaging.destination.subscription.name";
/// `messaging.message.id`: the event id.
pub const MESSAGE_ID: &str = "messaging.message.id";
/// `messaging.operation.type`: `send` or `process`.
pub const OPERATION_TYPE: &str = "messaging.operation.type";
/// `messaging.operation.name`: the system's name of the operation.
pub const OPERATION_NAME: &str = "messaging.operation.name";

/// An event's headers read as a propagation carrier.
#[derive(Debug)]
pub struct EventHeaders<'a>(pub &'a Event);

impl Extractor for EventHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers().get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.headers().keys().map(String::as_str).collect()
    }
}

struct EventHeadersMut<'a>(&'a mut Event);

impl Injector for EventHeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.headers_mut().insert(key.to_owned(), value);
    }
}

/// The context `carrier` holds, read by the global propagator; an empty
/// context when it holds none (never the caller's current one).
pub fn extract(carrier: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), carrier)
    })
}

/// Writes `cx` into the event's headers through the global propagator.
pub fn inject(cx: &Context, event: &mut Event) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut EventHeadersMut(event));
    });
}

/// The attributes of `event` on `backend`, `messaging.system` always among them.
fn attributes(backend: &dyn Backend, event: &Event) -> Vec<(&'static str, String)> {
    let mut attributes = backend.message_attributes(event);
    if !attributes.iter().any(|(k, _)| *k == MESSAGING_SYSTEM) {
        attributes.push((MESSAGING_SYSTEM, backend.info().name.to_owned()));
    }
    attributes
}

/// `"{operation} {destination}"`, or the operation alone.
fn span_name(operation: &str, attributes: &[(&'static str, String)]) -> String {
    match attributes.iter().find(|(k, _)| *k == DESTINATION_NAME) {
        Some((_, destination)) => format!("{operation} {destination}"),
        None => operation.to_owned(),
    }
}

fn set_attributes(span: &tracing::Span, attributes: Vec<(&'static str, String)>) {
    for (key, value) in attributes {
        span.set_attribute(key, value);
    }
}

/// The span of a publish call, its context written into the event's headers
/// (or, when the event carries a context already, linked to it).
pub(crate) fn publish_span(backend: &dyn Backend, event: &mut Event) -> tracing::Span {
    let attributes = attributes(backend, event);
    let span = tracing::info_span!(
        "flow_events.publish",
        otel.name = %span_name("publish", &attributes),
        otel.kind = "producer",
        messaging.message.id = %event.id(),
    );
    if !send_attributes_and_link(&span, attributes, event) {
        inject(&span.context(), event);
    }
    span
}

/// The span of the drain's send of a buffered event, linked to the context
/// the event carries.
pub(crate) fn drain_span(backend: &dyn Backend, event: &Event) -> tracing::Span {
    let attributes = attributes(backend, event);
    let span = tracing::info_span!(
        parent: None,
        "flow_events.drain",
        otel.name = %span_name("send", &attributes),
        otel.kind = "producer",
        messaging.message.id = %event.id(),
    );
    send_attributes_and_link(&span, attributes, event);
    span
}

/// Gives a producer `span` the attributes of a send and links it to the
/// context `event` carries; whether it carries one.
fn send_attributes_and_link(
    span: &tracing::Span,
    attributes: Vec<(&'static str, String)>,
    event: &Event,
) -> bool {
    span.set_attribute(OPERATION_TYPE, "send");
    span.set_attribute(OPERATION_NAME, "publish");
    set_attributes(span, attributes);
    let carried = extract(&EventHeaders(event));
    let carried = carried.span();
    let context = carried.span_context();
    let valid = context.is_valid();
    if valid {
        span.add_link(context.clone());
    }
    valid
}

/// The span of a handler call for `event`, child of `parent` (the context the
/// message carries), with `attributes` from the backend and the
/// `subscription`'s name.
pub fn process_span(
    attributes: Vec<(&'static str, String)>,
    event: &Event,
    subscription: &str,
    parent: Context,
) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "flow_events.process",
        otel.name = %span_name("process", &attributes),
        otel.kind = "consumer",
        messaging.message.id = %event.id(),
        event_type = %event.event_type(),
        subscription = %subscription,
    );
    if parent.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer, where there is no parent to set.
        let _ = span.set_parent(parent);
    }
    span.set_attribute(OPERATION_TYPE, "process");
    span.set_attribute(OPERATION_NAME, "process");
    span.set_attribute(SUBSCRIPTION_NAME, subscription.to_owned());
    set_attributes(&span, attributes);
    span
}

/// The default handling span: the parent read from the event's headers.
pub(crate) fn default_process_span(
    backend: &dyn Backend,
    event: &Event,
    subscription: &str,
) -> tracing::Span {
    let parent = extract(&EventHeaders(event));
    process_span(attributes(backend, event), event, subscription, parent)
}

/// A [`DeliveryScope`] that runs the handler inside `span` (made with
/// [`process_span`]): a backend attaches it to a delivery with
/// [`IncomingDelivery::with_scope`](crate::IncomingDelivery::with_scope).
pub fn process_scope(span: tracing::Span) -> impl DeliveryScope {
    SpanScope(span)
}

struct SpanScope(tracing::Span);

impl DeliveryScope for SpanScope {
    fn enter<'a>(self: Box<Self>, handling: BoxFuture<'a, Decision>) -> BoxFuture<'a, Decision> {
        Box::pin(handling.instrument(self.0))
    }
}
