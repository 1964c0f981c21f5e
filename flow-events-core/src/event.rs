//! The event envelope: id, type, JSON payload, timestamp and headers.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest event type accepted, in bytes (the AMQP short-string limit).
pub const MAX_EVENT_TYPE_LEN: usize = 255;

/// A stable, unique, time-ordered event id (UUID v7).
///
/// The id survives republishing: a consumer that sees the same id twice is seeing
/// the same event twice (at-least-once delivery), and may de-duplicate on it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A new time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (for example one read from a message).
    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID behind the id.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

impl std::str::FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Why a string is not a valid event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEventType {
    /// The type is the empty string.
    #[error("event type is empty")]
    Empty,
    /// The type is longer than [`MAX_EVENT_TYPE_LEN`] bytes.
    #[error("event type is {len} bytes long, the limit is {MAX_EVENT_TYPE_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The type contains a character that is not allowed (whitespace, `*` or `#`).
    #[error(
        "event type {value:?} contains {found:?}, which is not allowed (no whitespace, '*' or '#')"
    )]
    InvalidChar {
        /// The type as given.
        value: String,
        /// The offending character.
        found: char,
    },
    /// The type has an empty word (a leading, trailing or doubled `.`).
    #[error("event type {value:?} has an empty word (leading, trailing or doubled '.')")]
    EmptyWord {
        /// The type as given.
        value: String,
    },
}

/// A validated event type such as `order.created`; it becomes the routing key.
///
/// Words are separated by `.`; no word is empty, and the type has no whitespace,
/// `*` or `#` (those are pattern wildcards), and at most 255 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    /// Validates `value` as an event type.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidEventType> {
        let value = value.into();
        if value.is_empty() {
            return Err(InvalidEventType::Empty);
        }
        if value.len() > MAX_EVENT_TYPE_LEN {
            return Err(InvalidEventType::TooLong { len: value.len() });
        }
        if let Some(found) = value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '*' || *c == '#')
        {
            return Err(InvalidEventType::InvalidChar { value, found });
        }
        if value.split('.').any(str::is_empty) {
            return Err(InvalidEventType::EmptyWord { value });
        }
        Ok(Self(value))
    }

    /// The type as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for EventType {
    type Error = InvalidEventType;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for EventType {
    type Error = InvalidEventType;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for EventType {
    type Err = InvalidEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// An event could not be built: the reason, and the payload handed back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid event: {reason}")]
pub struct InvalidEvent {
    /// Why the event type was refused.
    pub reason: InvalidEventType,
    /// The payload that was to be sent, handed back.
    pub data: serde_json::Value,
}

/// One event: a stable id, a type (the routing key), a JSON payload, a timestamp
/// and optional string headers.
///
/// Serialises to `{"id", "type", "data", "timestamp", "headers"}` with an RFC 3339
/// timestamp; `headers` is left out when empty.
///
/// ```
/// use flow_events_core::Event;
/// let event = Event::try_new("order.created", serde_json::json!({"order_id": 42})).unwrap();
/// assert_eq!(event.event_type().as_str(), "order.created");
/// let json = serde_json::to_string(&event).unwrap();
/// let back: Event = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, event);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    id: EventId,
    #[serde(rename = "type")]
    event_type: EventType,
    data: serde_json::Value,
    timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

impl Event {
    /// A new event of `event_type` with a fresh id and the current time (to the
    /// microsecond, which every JSON reader, Python's included, parses).
    pub fn new(event_type: EventType, data: serde_json::Value) -> Self {
        Self {
            id: EventId::new(),
            event_type,
            data,
            timestamp: Utc::now().trunc_subsecs(6),
            headers: BTreeMap::new(),
        }
    }

    /// Validates `event_type` and builds the event; on error the payload is handed back.
    pub fn try_new(event_type: &str, data: serde_json::Value) -> Result<Self, InvalidEvent> {
        match EventType::new(event_type) {
            Ok(t) => Ok(Self::new(t, data)),
            Err(reason) => Err(InvalidEvent { reason, data }),
        }
    }

    /// Rebuilds an event from all its parts (used by backends when decoding).
    pub fn from_parts(
        id: EventId,
        event_type: EventType,
        data: serde_json::Value,
        timestamp: DateTime<Utc>,
        headers: BTreeMap<String, String>,
    ) -> Self {
        Self {
            id,
            event_type,
            data,
            timestamp,
            headers,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the id (for example to publish the same logical event again).
    pub fn with_id(mut self, id: EventId) -> Self {
        self.id = id;
        self
    }

    /// The event id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The JSON payload.
    pub fn data(&self) -> &serde_json::Value {
        &self.data
    }

    /// When the event was created.
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }

    /// The headers.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// Mutable access to the headers.
    pub fn headers_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.headers
    }

    /// Takes the payload out of the event.
    pub fn into_data(self) -> serde_json::Value {
        self.data
    }

    /// Checks that the event's JSON encoding is at most `limit` bytes; `Err`
    /// gives its size. Cheap for events well under the limit: an upper bound is
    /// computed first, and the exact size only when the bound is above the limit.
    pub fn check_size(&self, limit: usize) -> Result<(), usize> {
        // Envelope: keys, punctuation, id, timestamp, with room to spare.
        let mut bound = 128 + quoted_bound(self.event_type.as_str()) + value_bound(&self.data);
        for (k, v) in &self.headers {
            bound += quoted_bound(k) + quoted_bound(v) + 2;
        }
        if bound <= limit {
            return Ok(());
        }
        match self.encoded_len() {
            n if n <= limit => Ok(()),
            n => Err(n),
        }
    }

    /// The size of the event's JSON encoding in bytes.
    ///
    /// Used to enforce a maximum event size. Serialising a `serde_json::Value` to a
    /// byte counter cannot fail.
    pub fn encoded_len(&self) -> usize {
        let mut counter = ByteCounter(0);
        // Writing to a counter never fails and a Value always serialises.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }
}

/// At most the length of `s` as a JSON string (every byte escaped as `\u00XX`).
fn quoted_bound(s: &str) -> usize {
    2 + 6 * s.len()
}

/// At most the length of `v`'s JSON encoding.
fn value_bound(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => quoted_bound(s),
        Value::Array(items) => 2 + items.iter().map(|i| value_bound(i) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| quoted_bound(k) + 2 + value_bound(v))
                .sum::<usize>()
        }
    }
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_types() {
        for t in ["order.created", "a", "user-profile.updated_v2", "ü.ß"] {
            assert!(EventType::new(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn invalid_types() {
        assert_eq!(EventType::new(""), Err(InvalidEventType::Empty));
        assert!(matches!(
            EventType::new("a".repeat(256)),
            Err(InvalidEventType::TooLong { len: 256 })
        ));
        assert!(EventType::new("a".repeat(255)).is_ok());
        for (t, c) in [
            ("order created", ' '),
            ("order.*", '*'),
            ("#", '#'),
            ("a\tb", '\t'),
        ] {
            match EventType::new(t) {
                Err(InvalidEventType::InvalidChar { found, .. }) => assert_eq!(found, c),
                other => panic!("{t:?}: {other:?}"),
            }
        }
        for t in [".a", "a.", "a..b"] {
            assert!(matches!(
                EventType::new(t),
                Err(InvalidEventType::EmptyWord { .. })
            ));
        }
    }

    #[test]
    fn try_new_hands_back_the_payload() {
        let err = Event::try_new("bad type", serde_json::json!({"k": 1})).unwrap_err();
        assert_eq!(err.data, serde_json::json!({"k": 1}));
        assert!(matches!(err.reason, InvalidEventType::InvalidChar { .. }));
    }

    #[test]
    fn serde_round_trip_and_shape() {
        let event = Event::try_new("order.created", serde_json::json!({"n": "ünï"}))
            .unwrap()
            .with_header("traceparent", "00-abc");
        let json = serde_json::to_value(&event).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["data", "headers", "id", "timestamp", "type"]);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        assert_eq!(
            event.encoded_len(),
            serde_json::to_vec(&event).unwrap().len()
        );
    }

    #[test]
    fn check_size_agrees_with_the_encoding() {
        let samples = [
            serde_json::json!(null),
            serde_json::json!({"a": [1, 2.5, -3e300, true, null], "ü\"\n": "\u{1}x\"y"}),
            serde_json::json!("x".repeat(1000)),
        ];
        for data in samples {
            let e = Event::try_new("a.b", data).unwrap().with_header("k", "v\"");
            let exact = e.encoded_len();
            assert_eq!(e.check_size(exact), Ok(()));
            assert_eq!(e.check_size(exact - 1), Err(exact));
            assert_eq!(e.check_size(usize::MAX), Ok(()));
        }
    }

    #[test]
    fn timestamp_has_at_most_microseconds() {
        let e = Event::try_new("a", serde_json::Value::Null).unwrap();
        let json = serde_json::to_value(&e).unwrap();
        let ts = json["timestamp"].as_str().unwrap();
        let fraction = ts
            .split('.')
            .nth(1)
            .map_or(0, |f| f.trim_end_matches('Z').len());
        assert!(fraction <= 6, "{ts}");
    }

    #[test]
    fn deserialising_validates_the_type() {
        let json = serde_json::json!({
            "id": EventId::new(), "type": "a b", "data": null,
            "timestamp": "2026-01-01T00:00:00Z"
        });
        assert!(serde_json::from_value::<Event>(json).is_err());
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
    }
}
