//! The request body of `POST /events`: its content type, and the event read
//! from it without building a JSON tree (the payload stays the body's text).

use std::borrow::Cow;
use std::fmt;

use axum::http::{HeaderMap, StatusCode, header};
use flow_events_core::{Event, EventType};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::ApiError;

/// A JSON `Content-Type` is required: `application/json` or `…+json`.
pub(super) fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ))
    }
}

/// The request body, read without building a tree: the type as a string,
/// the payload as a slice of the body.
struct EventBody<'a> {
    event_type: Cow<'a, str>,
    data: Option<&'a RawValue>,
}

const BODY_SHAPE: &str = "a JSON object: {\"type\": \"order.created\", \"data\": {...}}";

impl<'de> serde::Deserialize<'de> for EventBody<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventBodyVisitor)
    }
}

struct EventBodyVisitor;

impl<'de> Visitor<'de> for EventBodyVisitor {
    type Value = EventBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(BODY_SHAPE)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut event_type = None;
        let mut data = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "type" if event_type.is_none() => {
                    event_type = Some(map.next_value::<TypeString<'de>>()?.0);
                }
                "data" if data.is_none() => data = Some(map.next_value::<&'de RawValue>()?),
                "type" | "data" => {
                    return Err(de::Error::custom(format!("duplicate field {key:?}")));
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown field {other:?}; expected \"type\" and \"data\""
                    )));
                }
            }
        }
        let event_type = event_type.ok_or_else(|| de::Error::custom("missing field \"type\""))?;
        Ok(EventBody { event_type, data })
    }
}

/// The value of `type`: a string, or the error that says so at once.
struct TypeString<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for TypeString<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TypeString<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"type\" to be a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TypeString(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TypeString(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Validates the request body and builds the event, its payload kept as the
/// body's JSON text. A missing `data` is `{}`.
pub(super) fn parse_event(body: &[u8]) -> Result<Event, ApiError> {
    let parsed: EventBody<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::bad_request(format!("{e} (the body must be {BODY_SHAPE})"))
        } else {
            ApiError::bad_request(format!("invalid JSON: {e}"))
        }
    })?;
    let event_type = EventType::new(parsed.event_type.into_owned())
        .map_err(|e| ApiError::bad_request(format!("invalid \"type\": {e}")))?;
    let data = parsed.data.map_or("{}", RawValue::get);
    Event::from_json(event_type, data.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("invalid \"data\": {e}")))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    fn error(body: &str) -> ApiError {
        parse_event(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn parses_type_and_keeps_the_data_text() {
        let e = parse_event(br#"{"type": "order.created", "data": {"id": 1}}"#).unwrap();
        assert_eq!(e.event_type().as_str(), "order.created");
        assert_eq!(e.raw_data().get(), r#"{"id": 1}"#);
        assert_eq!(e.data(), json!({"id": 1}));
        let e = parse_event(br#"{"data": [1, "x"], "type": "order.created"}"#).unwrap();
        assert_eq!(e.raw_data().get(), r#"[1, "x"]"#);
        let e = parse_event(br#"{"type": "order.created"}"#).unwrap();
        assert_eq!(e.data(), json!({}));
        let e = parse_event(br#"{"type": "a\u002eb"}"#).unwrap();
        assert_eq!(e.event_type().as_str(), "a.b");
    }

    #[test]
    fn refuses_bad_bodies_saying_why() {
        for (body, says) in [
            ("", "invalid JSON"),
            ("{", "invalid JSON"),
            ("[1]", "JSON object"),
            ("\"x\"", "JSON object"),
            ("{}", "missing field \"type\""),
            (r#"{"type": 1}"#, "to be a string"),
            (r#"{"type": ""}"#, "event type is empty"),
            (r#"{"type": "order created"}"#, "not allowed"),
            (r#"{"type": "order.*"}"#, "not allowed"),
            (r#"{"type": "a..b"}"#, "empty word"),
            (
                r#"{"type": "a", "payload": {}}"#,
                "unknown field \"payload\"",
            ),
            (r#"{"type": "a", "type": "b"}"#, "duplicate field"),
            (r#"{"type": "a", "data": [1e400]}"#, "invalid"),
            (r#"{"type": "a", "data": {}} x"#, "invalid JSON"),
        ] {
            let e = error(body);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(e.message.contains(says), "{body}: {}", e.message);
        }
    }

    #[test]
    fn content_type_must_be_json() {
        let mut h = HeaderMap::new();
        assert_eq!(
            check_content_type(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            check_content_type(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
