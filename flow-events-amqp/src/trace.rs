//! W3C trace context across the broker (feature `trace-context`): one trace
//! id follows an event from service to service, without OpenTelemetry.
//!
//! - Publishing inside a trace (a current [`TraceContext`]): an event
//!   without a `traceparent` header gets the current one, in the publishing
//!   task, before it is sent or buffered, so a buffered or republished event
//!   keeps it. Every message carries a `traceparent` message header: the
//!   event's, or, for an event published outside any trace, a trace of its
//!   own whose id is the event id (the same on every send). An event
//!   published outside any trace arrives unchanged.
//! - Consuming: the handler runs inside a `tracing` span `flow_events.handle`
//!   with the fields `trace_id`, `span_id`, `parent_span_id`, `event_id`,
//!   `event_type` and `queue`, and with a current context that continues the
//!   incoming trace, so an event the handler publishes carries the same
//!   trace id, with the handler's span as its parent.
//!
//! ```
//! use flow_events_amqp::trace::TraceContext;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let incoming = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
//! let handler = incoming.child();
//! handler
//!     .scope(async {
//!         // Events published here carry handler's trace id, with handler's
//!         // span as their parent.
//!         let current = TraceContext::current().unwrap();
//!         assert_eq!(current.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
//!         assert_ne!(current.span_id(), "00f067aa0ba902b7");
//!     })
//!     .await;
//! assert!(TraceContext::current().is_none());
//! # }
//! ```

use std::fmt;
use std::future::Future;

use flow_events_core::{Decision, DeliveryScope, Event};
use futures_util::future::BoxFuture;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use tracing::Instrument;

/// The header that carries the trace context (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";

/// The `sampled` trace flag.
const SAMPLED: u8 = 0x01;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A W3C trace context: a trace id, the id of the span that is the parent
/// of what comes next, and the trace flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl TraceContext {
    /// A new trace with random ids, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(fastrand::u128(..)).to_be_bytes(),
            span_id: nonzero_u64(fastrand::u64(..)).to_be_bytes(),
            flags: SAMPLED,
        }
    }

    /// The trace of an event published outside any trace: its trace id is
    /// the event id (a UUID v7, so random in its last bits, as W3C asks),
    /// its span id derived from it. Sampled.
    pub fn for_event(event: &Event) -> Self {
        let id = event.id().as_uuid().as_u128();
        // The high half is mostly the timestamp: mix it with the random low half.
        let span = (id as u64) ^ ((id >> 64) as u64).rotate_left(29);
        Self {
            trace_id: nonzero_u128(id).to_be_bytes(),
            span_id: nonzero_u64(span).to_be_bytes(),
            flags: SAMPLED,
        }
    }

    /// The context of a new span in the same trace, with the same flags.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(fastrand::u64(..)).to_be_bytes(),
            ..*self
        }
    }

    /// Reads a `traceparent` value: version `00` exactly, or a later version
    /// with at least the same fields (read as version `00`). `None` for
    /// anything else, all-zero ids included.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let value = traceparent.trim();
        let bytes = value.as_bytes();
        if bytes.len() < 55 || !bytes.is_ascii() {
            return None;
        }
        let version = hex::<1>(&value[0..2])?[0];
        let exact = version == 0;
        if version == 0xff
            || (exact && bytes.len() != 55)
            || (!exact && bytes.len() > 55 && bytes[55] != b'-')
            || bytes[2] != b'-'
            || bytes[35] != b'-'
            || bytes[52] != b'-'
        {
            return None;
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let span_id = hex::<8>(&value[36..52])?;
        let flags = hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The context of `event`'s `traceparent` header, if valid.
    pub fn of(event: &Event) -> Option<Self> {
        event
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| Self::parse(v))
    }

    /// The `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        self.to_string()
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The context of the current task, set by [`TraceContext::scope`] (and,
    /// for a handler, by the consumer).
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|c| *c).ok()
    }

    /// Runs `future` with this as the current context. A task spawned from
    /// it does not inherit it: pass it on with another `scope`.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id(),
            self.span_id(),
            self.flags
        )
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

fn nonzero_u128(n: u128) -> u128 {
    if n == 0 { 1 } else { n }
}

fn nonzero_u64(n: u64) -> u64 {
    if n == 0 { 1 } else { n }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from `2 * N` lowercase hex digits.
fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = nibble(digits[2 * i])? << 4 | nibble(digits[2 * i + 1])?;
    }
    Some(out)
}

/// Inside a trace, gives an event without a `traceparent` header the
/// current one.
pub(crate) fn stamp(event: &mut Event) {
    if event.headers().contains_key(TRACEPARENT) {
        return;
    }
    if let Some(context) = TraceContext::current() {
        event
            .headers_mut()
            .insert(TRACEPARENT.to_owned(), context.traceparent());
    }
}

/// The `traceparent` message header for an event without one: the current
/// context's (a plain session used inside a trace), else the event's own
/// trace. `None` when the event has the header (it travels with the others).
pub(crate) fn message_header(event: &Event) -> Option<String> {
    if event.headers().contains_key(TRACEPARENT) {
        return None;
    }
    let context = TraceContext::current().unwrap_or_else(|| TraceContext::for_event(event));
    Some(context.traceparent())
}

/// The incoming context of a delivery: the message's `traceparent` header
/// (as other clients set it), else the event's, else the event's own trace.
fn incoming(properties: &BasicProperties, event: &Event) -> TraceContext {
    let header = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(TRACEPARENT))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        });
    header
        .as_deref()
        .and_then(TraceContext::parse)
        .or_else(|| TraceContext::of(event))
        .unwrap_or_else(|| TraceContext::for_event(event))
}

/// Runs a handler's call inside the span of its delivery, with the handler's
/// context as the current one.
pub(crate) struct HandleScope {
    context: TraceContext,
    span: tracing::Span,
}

impl HandleScope {
    pub(crate) fn new(properties: &BasicProperties, event: &Event, queue: &str) -> Self {
        let parent = incoming(properties, event);
        let context = parent.child();
        let span = tracing::info_span!(
            "flow_events.handle",
            trace_id = %context.trace_id(),
            span_id = %context.span_id(),
            parent_span_id = %parent.span_id(),
            event_id = %event.id(),
            event_type = %event.event_type(),
            queue = %queue,
        );
        Self { context, span }
    }
}

impl DeliveryScope for HandleScope {
    fn enter<'a>(self: Box<Self>, handling: BoxFuture<'a, Decision>) -> BoxFuture<'a, Decision> {
        let Self { context, span } = *self;
        Box::pin(CURRENT.scope(context, handling.instrument(span)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, LongString};

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn event() -> Event {
        Event::try_new("order.created", serde_json::json!({})).expect("event")
    }

    #[test]
    fn parses_and_formats() {
        let c = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id(), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert_eq!(c.traceparent(), EXAMPLE);
        assert_eq!(format!("{c:?}"), format!("TraceContext({EXAMPLE})"));
        let unsampled = TraceContext::parse(&EXAMPLE.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled());
        // A later version may add fields after the flags.
        let later = format!("{}-extra", EXAMPLE.replacen("00", "01", 1));
        assert_eq!(
            TraceContext::parse(&later).map(|c| c.trace_id()),
            Some(c.trace_id())
        );
    }

    #[test]
    fn refuses_what_is_not_a_traceparent() {
        for bad in [
            "",
            "00-abc",
            &EXAMPLE.to_uppercase(),
            &EXAMPLE.replacen("00", "ff", 1),
            &format!("{EXAMPLE}-extra"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_eq!(child.flags(), root.flags());
        assert_ne!(TraceContext::new_root().trace_id(), root.trace_id());
    }

    #[test]
    fn an_event_outside_any_trace_is_its_own_trace() {
        let e = event();
        let c = TraceContext::for_event(&e);
        assert_eq!(c.trace_id(), e.id().as_uuid().simple().to_string());
        assert_eq!(c, TraceContext::for_event(&e.clone()));
        assert_eq!(TraceContext::parse(&c.traceparent()), Some(c));
    }

    #[tokio::test]
    async fn only_an_event_published_inside_a_trace_is_stamped() {
        let mut outside = event();
        stamp(&mut outside);
        assert!(outside.headers().is_empty());
        assert_eq!(
            message_header(&outside),
            Some(TraceContext::for_event(&outside).traceparent())
        );
        let root = TraceContext::new_root();
        let mut inside = event();
        root.scope(async { stamp(&mut inside) }).await;
        assert_eq!(TraceContext::of(&inside), Some(root));
        assert_eq!(message_header(&inside), None);
        let plain = event();
        let header = root.scope(async { message_header(&plain) }).await;
        assert_eq!(header, Some(root.traceparent()));
        // A header already there is kept.
        let mut given = event().with_header(TRACEPARENT, EXAMPLE);
        root.scope(async { stamp(&mut given) }).await;
        assert_eq!(given.headers()[TRACEPARENT], EXAMPLE);
    }

    #[test]
    fn the_message_header_wins_over_the_body() {
        let e = event().with_header(TRACEPARENT, TraceContext::new_root().traceparent());
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(EXAMPLE)),
        );
        let p = BasicProperties::default().with_headers(headers);
        assert_eq!(incoming(&p, &e).traceparent(), EXAMPLE);
        assert_eq!(
            Some(incoming(&BasicProperties::default(), &e)),
            TraceContext::of(&e)
        );
    }
}
