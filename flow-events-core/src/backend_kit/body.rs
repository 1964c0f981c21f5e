//! Reading an event back from a message body: the JSON that
//! [`Event::encode`] writes, the same on every broker.

use crate::event::Event;

/// The event a body holds, or why it holds none, without quoting the body
/// (it may hold secrets): a consumer dead-letters such a message with this
/// reason.
///
/// ```
/// use flow_events_core::Event;
/// use flow_events_core::backend_kit::decode_body;
/// let event = Event::try_new("order.created", serde_json::json!({"id": 7})).unwrap();
/// assert_eq!(decode_body(&event.encode()).unwrap(), event);
/// assert!(decode_body(b"{\"password\": \"hunter2\"}").unwrap_err().contains("not an event"));
/// ```
pub fn decode_body(body: &[u8]) -> Result<Event, String> {
    serde_json::from_slice::<Event>(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON that is not an event",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        format!(
            "body of {} bytes is {what} (line {}, column {})",
            body.len(),
            e.line(),
            e.column()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_with_headers_and_any_text() {
        let e = Event::try_new("invoice.paid", serde_json::json!({"note": "héllo 世界"}))
            .unwrap()
            .with_header("tenant", "acme");
        assert_eq!(decode_body(&e.encode()).unwrap(), e);
    }

    #[test]
    fn decode_errors_do_not_quote_the_body() {
        let err = decode_body(br#"{"password": "hunter2"}"#).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("not an event"), "{err}");
        assert!(decode_body(b"hunter2").unwrap_err().contains("not JSON"));
        assert!(decode_body(b"{\"id\":").unwrap_err().contains("truncated"));
    }
}
