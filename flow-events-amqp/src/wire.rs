//! The wire format: the message properties of an event, and reading them
//! back from a delivery (the body is core's, the same JSON on every broker).

use flow_events_core::{BackendError, DeadLetter, Event, dead_letter};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The header that counts deliveries of an event on classic queues, where the
/// broker does not count them: a retried event is published again with it
/// raised by one. Absent means the first attempt.
pub const ATTEMPT_HEADER: &str = "x-flow-attempt";

/// The header in which quorum queues count earlier deliveries.
pub(crate) const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// The `content_type` of every message.
pub const CONTENT_TYPE: &str = "application/json";

/// The `messaging.system` of OpenTelemetry's semantic conventions for RabbitMQ.
pub const MESSAGING_SYSTEM: &str = "rabbitmq";

/// The OpenTelemetry attribute of the routing key (semantic conventions).
pub const ROUTING_KEY_ATTRIBUTE: &str = "messaging.rabbitmq.destination.routing_key";

/// The OpenTelemetry messaging attributes of a message published to
/// `exchange` with `routing_key`.
pub(crate) fn message_attributes(exchange: &str, routing_key: &str) -> Vec<(&'static str, String)> {
    vec![
        ("messaging.system", MESSAGING_SYSTEM.to_owned()),
        ("messaging.destination.name", exchange.to_owned()),
        (ROUTING_KEY_ATTRIBUTE, routing_key.to_owned()),
    ]
}

/// `delivery_mode` 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Room kept in the properties frame for everything but the headers.
const OTHER_PROPERTIES_BYTES: usize = 1024;

/// Bytes the headers may take so that the properties fit in one frame of
/// `frame_max` bytes (0: the broker set no limit): a larger header frame
/// makes the broker close the whole connection.
pub(crate) fn max_header_bytes(frame_max: u32) -> usize {
    let frame_max = if frame_max == 0 { 131_072 } else { frame_max };
    usize::try_from(frame_max)
        .unwrap_or(usize::MAX)
        .saturating_sub(OTHER_PROPERTIES_BYTES)
}

/// The message properties of `event`.
pub(crate) fn properties(
    event: &Event,
    app_id: &ShortString,
    max_header_bytes: usize,
) -> Result<BasicProperties, BackendError> {
    let mut headers = FieldTable::default();
    let mut header_bytes = 0usize;
    for (key, value) in event.headers() {
        let name = ShortString::try_new(key.as_str()).map_err(|_| {
            BackendError::event_refused(format!(
                "event {}: header name of {} bytes, the limit is 255",
                event.id(),
                key.len()
            ))
        })?;
        header_bytes += key.len() + value.len() + 6;
        headers.insert(
            name,
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    if header_bytes > max_header_bytes {
        return Err(BackendError::event_refused(format!(
            "event {}: headers take {header_bytes} bytes, the limit is {max_header_bytes}",
            event.id()
        )));
    }
    let kind = ShortString::try_new(event.event_type().as_str()).map_err(|_| {
        BackendError::event_refused(format!("event {}: event type too long", event.id()))
    })?;
    let timestamp = u64::try_from(event.timestamp().timestamp()).unwrap_or(0);
    Ok(BasicProperties::default()
        .with_message_id(ShortString::from(event.id().to_string()))
        .with_type(kind)
        .with_content_type(ShortString::from(CONTENT_TYPE))
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(timestamp)
        .with_app_id(app_id.clone())
        .with_headers(headers))
}

/// `properties` with the attempt header set to `attempt`.
#[cfg(test)]
pub(crate) fn with_attempt(properties: &BasicProperties, attempt: u32) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongUInt(attempt),
    );
    properties.clone().with_headers(headers)
}

/// The headers the broker adds on its way (delivery count, dead-lettering
/// history): a copy published again leaves them out, so that they describe
/// the copy and not the original.
fn broker_header(name: &str) -> bool {
    name == DELIVERY_COUNT_HEADER
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// The headers of `properties` without the broker's own.
fn own_headers(properties: &BasicProperties) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(h) = properties.headers() {
        for (k, v) in h.inner() {
            if !broker_header(k.as_str()) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers
}

/// A text header value.
pub(crate) fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The properties of the copy of a delivery published for attempt
/// `attempt`: the attempt header raised, the original routing key and the
/// time of the first failure kept (set now when not there yet).
pub(crate) fn retry_copy(
    properties: &BasicProperties,
    attempt: u32,
    routing_key: &str,
) -> BasicProperties {
    let mut headers = own_headers(properties);
    headers.insert(
        ShortString::from(ATTEMPT_HEADER),
        AMQPValue::LongUInt(attempt),
    );
    for (name, value) in [
        (dead_letter::ROUTING_KEY_HEADER, routing_key.to_owned()),
        (
            dead_letter::FIRST_FAILED_AT_HEADER,
            dead_letter::timestamp(chrono::Utc::now()),
        ),
    ] {
        if !headers.contains_key(name) {
            headers.insert(
                ShortString::from(name),
                AMQPValue::LongString(LongString::from(value)),
            );
        }
    }
    properties.clone().with_headers(headers)
}

/// The original routing key of a delivery: the one a retry copy carries,
/// else the one it came with.
pub(crate) fn original_routing_key(properties: &BasicProperties, routing_key: &str) -> String {
    header_text(properties, dead_letter::ROUTING_KEY_HEADER)
        .unwrap_or_else(|| routing_key.to_owned())
}

/// The properties of the dead-lettered copy of a delivery: its headers and
/// the `x-flow-*` account of why it is there.
pub(crate) fn dead_letter_copy(
    properties: &BasicProperties,
    mut account: DeadLetter,
) -> BasicProperties {
    let mut headers = own_headers(properties);
    if let Some(first) = header_text(properties, dead_letter::FIRST_FAILED_AT_HEADER)
        .as_deref()
        .and_then(dead_letter::parse_timestamp)
    {
        account = account.with_first_failed_at(first);
    }
    for (name, value) in account.headers() {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    properties.clone().with_headers(headers)
}

/// An integer header value, whatever integer type the publisher chose.
fn header_int(headers: Option<&FieldTable>, name: &str) -> Option<u64> {
    let value = headers?.inner().get(name)?;
    let n: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    };
    u64::try_from(n).ok()
}

/// The attempt (from 1) and the redelivered flag of a delivery.
///
/// The attempt of the copy is the [`ATTEMPT_HEADER`] (1 when absent: a
/// retry publishes a copy with it raised), plus the deliveries of this copy
/// before this one: on quorum queues the broker counts them in
/// `x-delivery-count`; elsewhere one more when the broker flags the message
/// as redelivered (it was delivered before and not settled, for example when
/// a consumer's connection dropped), a lower bound, since the broker says
/// "again", not how often.
pub(crate) fn attempt(properties: &BasicProperties, broker_redelivered: bool) -> (u32, bool) {
    let headers = properties.headers().as_ref();
    let to_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let base = header_int(headers, ATTEMPT_HEADER).map_or(1, to_u32).max(1);
    let earlier = match header_int(headers, DELIVERY_COUNT_HEADER) {
        Some(count) => to_u32(count),
        None => u32::from(broker_redelivered),
    };
    let attempt = base.saturating_add(earlier);
    (attempt, broker_redelivered || attempt > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::try_new("order.created", serde_json::json!({"n": 1}))
            .unwrap()
            .with_header("traceparent", "00-abc")
    }

    #[test]
    fn properties_follow_the_contract() {
        let e = event();
        let p = properties(&e, &ShortString::from("billing"), 4096).unwrap();
        assert_eq!(
            p.message_id().as_ref().unwrap().as_str(),
            e.id().to_string()
        );
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "order.created");
        assert_eq!(p.content_type().as_ref().unwrap().as_str(), CONTENT_TYPE);
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.timestamp(), Some(e.timestamp().timestamp() as u64));
        assert_eq!(p.app_id().as_ref().unwrap().as_str(), "billing");
        let h = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            h.get("traceparent"),
            Some(&AMQPValue::LongString("00-abc".into()))
        );
    }

    #[test]
    fn oversized_headers_are_refused() {
        let e = event().with_header("k".repeat(256), "v");
        let err = properties(&e, &ShortString::from("a"), 4096).unwrap_err();
        assert!(err.refuses_event());
        let e = event().with_header("big", "v".repeat(4000));
        assert!(
            properties(&e, &ShortString::from("a"), max_header_bytes(4096))
                .unwrap_err()
                .refuses_event()
        );
        assert_eq!(max_header_bytes(0), 131_072 - 1024);
    }

    #[test]
    fn attempts() {
        let p = BasicProperties::default();
        assert_eq!(attempt(&p, false), (1, false));
        assert_eq!(attempt(&p, true), (2, true));
        let retried = with_attempt(&p, 2);
        assert_eq!(attempt(&retried, false), (2, true));
        assert_eq!(attempt(&retried, true), (3, true));
        let mut h = FieldTable::default();
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        let quorum = BasicProperties::default().with_headers(h);
        assert_eq!(attempt(&quorum, true), (3, true));
        let mut h = FieldTable::default();
        h.insert(ATTEMPT_HEADER.into(), AMQPValue::LongString("4".into()));
        let from_python = BasicProperties::default().with_headers(h);
        assert_eq!(attempt(&from_python, false), (4, true));
    }
}
