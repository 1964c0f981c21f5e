//! The wire format: the subject and headers of an event (its body is
//! core's, the same JSON on every broker).

use async_nats::HeaderMap;
use flow_events_core::{BackendError, Event};

/// The header JetStream de-duplicates on: the event id.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The header carrying the event type.
pub const TYPE_HEADER: &str = "Flow-Event-Type";
/// The header carrying the event time (RFC 3339, microseconds).
pub const TIME_HEADER: &str = "Flow-Event-Time";
/// The `Content-Type` header of every message.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";
/// The content type of every body.
pub const CONTENT_TYPE: &str = "application/json";

/// The subject of an event of type `event_type`: `<prefix>.<event type>`.
///
/// A word that is exactly `>` is a NATS wildcard, which no message subject
/// may hold: such an event is refused. (`*` and `#` are not valid in event
/// types at all.)
pub(crate) fn subject(prefix: &str, event: &Event) -> Result<String, BackendError> {
    let event_type = event.event_type().as_str();
    // Looked for whole only when the type holds a `>` at all (one pass
    // over its bytes on every publish, instead of splitting it).
    if event_type.contains('>') && event_type.split('.').any(|w| w == ">") {
        return Err(BackendError::event_refused(format!(
            "event {} ({event_type}): the word '>' is a NATS wildcard and cannot be in a subject",
            event.id()
        )));
    }
    let mut subject = String::with_capacity(prefix.len() + 1 + event_type.len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(event_type);
    Ok(subject)
}

/// Whether `name` can be a NATS header name: printable ASCII without `:`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Whether `value` can be a NATS header value: no line breaks or other
/// control characters (UTF-8 is carried as it is).
fn valid_value(value: &str) -> bool {
    !value.chars().any(char::is_control)
}

/// The headers of `event`: its id as `Nats-Msg-Id`, its type and time, the
/// content type, and each event header that NATS can carry. The body holds
/// every header in any case; one that is not a valid NATS header (a name
/// with `:` or a space, a value with a line break) is left out of the
/// message headers only.
pub(crate) fn headers(event: &Event) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in event.headers() {
        if valid_name(name) && valid_value(value) {
            headers.insert(name.as_str(), value.as_str());
        }
    }
    headers.insert(MSG_ID_HEADER, event.id().to_string().as_str());
    headers.insert(TYPE_HEADER, event.event_type().as_str());
    headers.insert(
        TIME_HEADER,
        event
            .timestamp()
            .to_rfc3339_opts(chrono_secs_format(), true)
            .as_str(),
    );
    headers.insert(CONTENT_TYPE_HEADER, CONTENT_TYPE);
    headers
}

/// Microseconds, as the event timestamps have.
fn chrono_secs_format() -> chrono::SecondsFormat {
    chrono::SecondsFormat::Micros
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event::try_new("order.created", serde_json::json!({"n": 1}))
            .unwrap()
            .with_header("traceparent", "00-abc-def-01")
            .with_header("bad name", "x")
            .with_header("multi", "line\nbreak")
            .with_header("note", "héllo 世界")
    }

    #[test]
    fn headers_follow_the_contract() {
        let e = event();
        let h = headers(&e);
        assert_eq!(h.get(MSG_ID_HEADER).unwrap().as_str(), e.id().to_string());
        assert_eq!(h.get(TYPE_HEADER).unwrap().as_str(), "order.created");
        let time =
            chrono::DateTime::parse_from_rfc3339(h.get(TIME_HEADER).unwrap().as_str()).unwrap();
        assert_eq!(time, e.timestamp());
        assert_eq!(h.get(CONTENT_TYPE_HEADER).unwrap().as_str(), CONTENT_TYPE);
        assert_eq!(h.get("traceparent").unwrap().as_str(), "00-abc-def-01");
        assert_eq!(h.get("note").unwrap().as_str(), "héllo 世界");
        assert!(h.iter().all(|(n, _)| AsRef::<str>::as_ref(n) != "bad name"));
        assert!(h.get("multi").is_none());
    }

    #[test]
    fn subjects() {
        assert_eq!(subject("p.q", &event()).unwrap(), "p.q.order.created");
        let wild = Event::try_new("order.>", serde_json::json!({})).unwrap();
        assert!(subject("p", &wild).unwrap_err().refuses_event());
        let inner = Event::try_new("a>b.c", serde_json::json!({})).unwrap();
        assert_eq!(subject("p", &inner).unwrap(), "p.a>b.c");
    }
}
