//! The event envelope: id, type, JSON payload (kept as its encoded text),
//! timestamp and headers.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
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

/// Why an event could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEventReason {
    /// The event type is not valid.
    #[error(transparent)]
    Type(#[from] InvalidEventType),
    /// The payload could not be encoded as JSON (the serializer's message).
    #[error("the payload cannot be encoded as JSON: {0}")]
    Data(String),
}

/// An event could not be built: the reason, and the payload handed back.
///
/// `Debug` shows the reason only, never the payload.
#[derive(Clone, thiserror::Error)]
#[error("invalid event: {reason}")]
pub struct InvalidEvent<T = serde_json::Value> {
    /// Why the event was refused.
    pub reason: InvalidEventReason,
    /// The payload that was to be sent, handed back.
    pub data: T,
}

impl<T> fmt::Debug for InvalidEvent<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidEvent")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// One event: a stable id, a type (the routing key), a JSON payload, a timestamp
/// and optional string headers.
///
/// The payload is kept as its JSON text, encoded once and validated: no
/// `serde_json::Value` tree is held per event, so a pending event costs about
/// its encoded size. [`Event::data_as`] reads it into a type of yours,
/// [`Event::data`] into a `serde_json::Value`, [`Event::raw_data`] gives the text.
///
/// Serialises to `{"id", "type", "data", "timestamp", "headers"}` with an RFC 3339
/// timestamp; `headers` is left out when empty. The payload's text is written as it
/// is, so what a constructor took in is what goes on the wire.
///
/// ```
/// use flow_events_core::Event;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order { order_id: u64 }
///
/// let event = Event::try_new("order.created", Order { order_id: 42 }).unwrap();
/// assert_eq!(event.event_type().as_str(), "order.created");
/// assert_eq!(event.raw_data().get(), r#"{"order_id":42}"#);
/// assert_eq!(event.data_as::<Order>().unwrap().order_id, 42);
/// assert_eq!(event.data()["order_id"], 42);
/// let json = serde_json::to_string(&event).unwrap();
/// let back: Event = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, event);
/// ```
#[derive(Clone, Serialize, Deserialize)]
pub struct Event {
    id: EventId,
    #[serde(rename = "type")]
    event_type: EventType,
    #[serde(deserialize_with = "deserialize_data")]
    data: Box<RawValue>,
    timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

impl fmt::Debug for Event {
    /// The envelope and the payload's size, never the payload: a `Debug` of
    /// an event may reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("event_type", &self.event_type)
            .field("data_bytes", &self.data.get().len())
            .field("timestamp", &self.timestamp)
            .field("headers", &self.headers)
            .finish()
    }
}

impl PartialEq for Event {
    /// Equal parts, the payload compared as text.
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.event_type == other.event_type
            && self.data.get() == other.data.get()
            && self.timestamp == other.timestamp
            && self.headers == other.headers
    }
}

impl Event {
    /// A new event of `event_type` with a fresh id and the current time (to the
    /// microsecond, which every JSON reader, Python's included, parses).
    pub fn new(event_type: EventType, data: serde_json::Value) -> Self {
        Self::with_raw(event_type, value_to_raw(&data))
    }

    /// Validates `event_type`, encodes `data` once and builds the event; on
    /// error the payload is handed back.
    pub fn try_new<T: Serialize>(event_type: &str, data: T) -> Result<Self, InvalidEvent<T>> {
        let event_type = match EventType::new(event_type) {
            Ok(t) => t,
            Err(reason) => {
                return Err(InvalidEvent {
                    reason: reason.into(),
                    data,
                });
            }
        };
        match serde_json::value::to_raw_value(&data) {
            Ok(raw) => Ok(Self::with_raw(event_type, raw)),
            Err(e) => Err(InvalidEvent {
                reason: InvalidEventReason::Data(e.to_string()),
                data,
            }),
        }
    }

    /// An event whose payload is the JSON text `json`, as it is (a request
    /// body, say). The text is validated (one JSON value that a
    /// `serde_json::Value` can hold: numbers in range, nesting at most 128
    /// deep) without building a tree, and copied once.
    ///
    /// ```
    /// use flow_events_core::{Event, EventType};
    /// let t = EventType::new("order.created").unwrap();
    /// let event = Event::from_json(t.clone(), br#"{"order_id": 42}"#).unwrap();
    /// assert_eq!(event.raw_data().get(), r#"{"order_id": 42}"#);
    /// assert!(Event::from_json(t.clone(), b"{\"order_id\": ").is_err());
    /// assert!(Event::from_json(t, b"1e400").is_err());
    /// ```
    pub fn from_json(event_type: EventType, json: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: &RawValue = serde_json::from_slice(json)?;
        validate(raw.get())?;
        Ok(Self::with_raw(event_type, raw.to_owned()))
    }

    fn with_raw(event_type: EventType, data: Box<RawValue>) -> Self {
        Self {
            id: EventId::new(),
            event_type,
            data,
            timestamp: Utc::now().trunc_subsecs(6),
            headers: BTreeMap::new(),
        }
    }

    /// Rebuilds an event from all its parts.
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
            data: value_to_raw(&data),
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

    /// The payload read into a `serde_json::Value`, parsed on each call.
    ///
    /// Prefer [`Event::data_as`] with a type of yours, which builds no tree.
    /// A payload given to [`Event::try_new`] that a `Value` cannot hold (nested
    /// more than 128 deep) reads as `null` here; [`Event::raw_data`] has it.
    pub fn data(&self) -> serde_json::Value {
        self.data_as().unwrap_or(serde_json::Value::Null)
    }

    /// The payload read into `T`; borrowed strings point into the event.
    pub fn data_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.data.get())
    }

    /// The payload's JSON text.
    pub fn raw_data(&self) -> &RawValue {
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

    /// Takes the payload out of the event, read into a `serde_json::Value`
    /// (see [`Event::data`]).
    pub fn into_data(self) -> serde_json::Value {
        self.data()
    }

    /// Takes the payload's JSON text out of the event.
    pub fn into_raw_data(self) -> Box<RawValue> {
        self.data
    }

    /// Checks that the event's JSON encoding is at most `limit` bytes; `Err`
    /// gives its size.
    pub fn check_size(&self, limit: usize) -> Result<(), usize> {
        match self.encoded_len() {
            n if n <= limit => Ok(()),
            n => Err(n),
        }
    }

    /// The size of the event's JSON encoding in bytes.
    ///
    /// Cheap: the payload is already encoded, so only the envelope is written
    /// (to a byte counter, which never fails).
    pub fn encoded_len(&self) -> usize {
        let mut counter = ByteCounter(0);
        // Writing to a counter never fails, and every part always serialises.
        let _ = serde_json::to_writer(&mut counter, self);
        counter.0
    }
}

/// The JSON text of a `Value`.
fn value_to_raw(value: &serde_json::Value) -> Box<RawValue> {
    // A `Value` always serialises (its keys are strings, its numbers finite);
    // `null` only to satisfy the signature.
    serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// The payload read from the wire: kept as text, validated like [`Event::from_json`].
fn deserialize_data<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Box<RawValue>, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    validate(raw.get()).map_err(serde::de::Error::custom)?;
    Ok(raw)
}

/// Checks that `json` is a value a `serde_json::Value` can hold, building nothing.
fn validate(json: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Valid>(json).map(|_| ())
}

/// Accepts any JSON value `serde_json::Value` accepts, keeping nothing: numbers
/// are parsed (so an out-of-range one is refused), strings decoded (so a lone
/// surrogate is refused), and serde_json's nesting limit applies.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValidVisitor)
    }
}

struct ValidVisitor;

impl<'de> serde::de::Visitor<'de> for ValidVisitor {
    type Value = Valid;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_str<E>(self, _: &str) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_unit<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_none<E>(self) -> Result<Valid, E> {
        Ok(Valid)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Valid, D::Error> {
        Valid::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_key::<Valid>()?.is_some() {
            map.next_value::<Valid>()?;
        }
        Ok(Valid)
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
        assert!(matches!(
            err.reason,
            InvalidEventReason::Type(InvalidEventType::InvalidChar { .. })
        ));
    }

    #[test]
    fn try_new_hands_back_a_payload_that_cannot_be_encoded() {
        // serde_json refuses map keys that are not strings.
        let data: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
        let err = Event::try_new("a", data.clone()).unwrap_err();
        assert_eq!(err.data, data);
        assert!(matches!(err.reason, InvalidEventReason::Data(_)), "{err}");
    }

    #[test]
    fn debug_shows_the_envelope_not_the_payload() {
        let e = Event::try_new("a.b", serde_json::json!({"secret": "s3cr3t"})).unwrap();
        let text = format!("{e:?}");
        assert!(
            text.contains("a.b") && text.contains("data_bytes: 19"),
            "{text}"
        );
        assert!(!text.contains("s3cr3t"), "{text}");
        let err = Event::try_new("a b", serde_json::json!({"secret": "s3cr3t"})).unwrap_err();
        assert!(!format!("{err:?} {err}").contains("s3cr3t"));
    }

    #[test]
    fn typed_payloads_are_encoded_once_and_read_back() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Order<'a> {
            id: u64,
            note: &'a str,
        }
        let e = Event::try_new("order.created", Order { id: 7, note: "hi" }).unwrap();
        assert_eq!(e.raw_data().get(), r#"{"id":7,"note":"hi"}"#);
        assert_eq!(
            e.data_as::<Order<'_>>().unwrap(),
            Order { id: 7, note: "hi" }
        );
        assert_eq!(e.data(), serde_json::json!({"id": 7, "note": "hi"}));
        assert_eq!(e.clone().into_data()["note"], "hi");
    }

    /// The wire format is the one of the `Value` payloads before: the same bytes.
    #[test]
    fn encoding_is_byte_for_byte_the_envelope() {
        let id: EventId = "01a219ad-bc7d-74c2-b81d-e16adffe2f1b".parse().unwrap();
        let at = DateTime::parse_from_rfc3339("2026-01-01T12:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let headers = [("k".to_owned(), "v".to_owned())].into_iter().collect();
        let data = serde_json::json!({"b": 1, "a": [1, 2.5, "ü\n"], "c": null});
        let e = Event::from_parts(id, EventType::new("a.b").unwrap(), data, at, headers);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":"01a219ad-bc7d-74c2-b81d-e16adffe2f1b","type":"a.b","data":{"a":[1,2.5,"ü\n"],"b":1,"c":null},"timestamp":"2026-01-01T12:00:00.123456Z","headers":{"k":"v"}}"#
        );
    }

    #[test]
    fn from_json_keeps_the_text_and_validates_it() {
        let t = EventType::new("a").unwrap();
        let e = Event::from_json(t.clone(), b" {\"x\": [1, 2]} ").unwrap();
        assert_eq!(e.raw_data().get(), r#"{"x": [1, 2]}"#);
        assert_eq!(e.data()["x"][1], 2);
        let deep_ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(Event::from_json(t.clone(), deep_ok.as_bytes()).is_ok());
        let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let lone_surrogate = r#""\ud800""#;
        for bad in [
            "",
            "{",
            "{} x",
            "[1,]",
            "1e400",
            "{\"a\": -1e999}",
            lone_surrogate,
            too_deep.as_str(),
        ] {
            assert!(
                Event::from_json(t.clone(), bad.as_bytes()).is_err(),
                "{bad:?} was accepted"
            );
        }
        assert!(Event::from_json(t, b"\"\xff\"").is_err());
    }

    #[test]
    fn decoding_refuses_a_payload_a_value_cannot_hold() {
        let wire = r#"{"id":"01a219ad-bc7d-74c2-b81d-e16adffe2f1b","type":"a","data":[1e400],"timestamp":"2026-01-01T00:00:00Z"}"#;
        assert!(serde_json::from_str::<Event>(wire).is_err());
        let fine = wire.replace("1e400", "1e300");
        let e: Event = serde_json::from_str(&fine).unwrap();
        assert_eq!(e.raw_data().get(), "[1e300]");
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
