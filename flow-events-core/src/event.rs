//! The event envelope: id, type, JSON payload (kept as its encoded text),
//! timestamp and headers.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::event_id::EventId;
pub use crate::event_type::{EventType, InvalidEventType, MAX_EVENT_TYPE_LEN};

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
    #[serde(serialize_with = "crate::event_time::serialize")]
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

    /// The event's JSON encoding: what `serde_json::to_vec` gives, written
    /// in one go into a buffer sized for it at once.
    ///
    /// ```
    /// use flow_events_core::Event;
    /// let event = Event::try_new("order.created", 42).unwrap().with_header("k", "v");
    /// assert_eq!(event.encode(), serde_json::to_vec(&event).unwrap());
    /// assert_eq!(event.encode().len(), event.encoded_len());
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        // What the envelope takes at most unless a header needs escapes:
        // the buffer is allocated once, at about the size it ends with.
        let headers: usize = if self.headers.is_empty() {
            0
        } else {
            HEADERS_KEY_BYTES
                + self
                    .headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + HEADER_BYTES)
                    .sum::<usize>()
        };
        let capacity =
            ENVELOPE_BYTES + self.event_type.as_str().len() + self.data.get().len() + headers;
        let mut json = Vec::with_capacity(capacity);
        crate::event_json::write(self, &mut json);
        json
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

/// The envelope's bytes around the type and the payload: the keys and
/// punctuation (78 bytes), the id and a timestamp of up to 30 (to the
/// nanosecond; only years past 9999 write more).
const ENVELOPE_BYTES: usize = 108;

/// The bytes of the `headers` key and its braces, when there are headers.
const HEADERS_KEY_BYTES: usize = 13;

/// The bytes around one header's key and value (`"k":"v",`).
const HEADER_BYTES: usize = 6;

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
#[path = "event_tests.rs"]
mod tests;
