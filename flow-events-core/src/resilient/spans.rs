//! The decorator's spans: OpenTelemetry ones with the `otel` feature (see
//! [`crate::otel`]), none without it.

use crate::backend::Backend;
use crate::event::Event;

/// The span of a publish call; with `otel`, its context goes into the event's headers.
#[cfg_attr(not(feature = "otel"), allow(unused_variables))]
pub(crate) fn publish(backend: &dyn Backend, event: &mut Event) -> tracing::Span {
    #[cfg(feature = "otel")]
    return crate::otel::publish_span(backend, event);
    #[cfg(not(feature = "otel"))]
    tracing::Span::none()
}

/// The span of the drain's send of a buffered event.
#[cfg_attr(not(feature = "otel"), allow(unused_variables))]
pub(crate) fn drain(backend: &dyn Backend, event: &Event) -> tracing::Span {
    #[cfg(feature = "otel")]
    return crate::otel::drain_span(backend, event);
    #[cfg(not(feature = "otel"))]
    tracing::Span::none()
}

/// The span of a handler call, for a delivery the backend gave no scope.
#[cfg_attr(not(feature = "otel"), allow(unused_variables))]
pub(crate) fn process(backend: &dyn Backend, event: &Event, subscription: &str) -> tracing::Span {
    #[cfg(feature = "otel")]
    return crate::otel::default_process_span(backend, event, subscription);
    #[cfg(not(feature = "otel"))]
    tracing::Span::none()
}
