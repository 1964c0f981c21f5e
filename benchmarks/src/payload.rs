//! The messages: persistent, about 1 KiB of JSON each, the same for every client.

use std::sync::Arc;

use flow_events_core::Event;
use lapin::BasicProperties;
use lapin::types::ShortString;
use serde_json::value::RawValue;

/// The event type, and so the routing key the queue is bound with.
pub(crate) const EVENT_TYPE: &str = "bench.event";

/// Size of every message body in bytes (the JSON of an event).
pub(crate) const BODY_BYTES: usize = 1024;

/// `delivery_mode` 2: persistent.
const PERSISTENT: u8 = 2;

/// Makes the events and raw messages of the runs.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    /// The events' payload, encoded once: `{"pad":"xxx..."}`.
    data: Arc<RawValue>,
    body: Vec<u8>,
}

impl Payload {
    /// A payload whose events encode to `BODY_BYTES` bytes.
    pub(crate) fn new() -> Self {
        let data = |pad: &str| -> Arc<RawValue> {
            serde_json::value::to_raw_value(&serde_json::json!({ "pad": pad }))
                .unwrap_or_else(|e| panic!("the benchmark's payload encodes: {e}"))
                .into()
        };
        let empty = Self {
            data: data(""),
            body: Vec::new(),
        };
        let fixed = empty.event().encoded_len();
        let pad = "x".repeat(BODY_BYTES.saturating_sub(fixed));
        let mut payload = Self {
            data: data(&pad),
            body: Vec::new(),
        };
        payload.body = serde_json::to_vec(&payload.event()).unwrap_or_default();
        payload
    }

    /// A new event (fresh id and time) of a payload encoded once, before the
    /// runs, as the raw clients' body is: making it copies the payload's
    /// JSON text (an application that holds its payload as `serde_json`
    /// values pays for encoding them as well, on any client).
    pub(crate) fn event(&self) -> Event {
        Event::try_new(EVENT_TYPE, &*self.data)
            .unwrap_or_else(|e| panic!("the benchmark's event type is valid: {e}"))
    }

    /// A body of `BODY_BYTES` bytes for the raw clients.
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// The properties a raw lapin publish carries: those of the wire contract
    /// (a fresh message id, type, content type, persistent, timestamp, app id).
    pub(crate) fn raw_properties() -> BasicProperties {
        let now = chrono::Utc::now().timestamp();
        BasicProperties::default()
            .with_message_id(ShortString::from(uuid::Uuid::now_v7().to_string()))
            .with_type(ShortString::from(EVENT_TYPE))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(u64::try_from(now).unwrap_or(0))
            .with_app_id(ShortString::from("flow-events-bench"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_bodies_are_one_kib() {
        let p = Payload::new();
        assert_eq!(p.body().len(), BODY_BYTES);
        let sizes: Vec<usize> = (0..50).map(|_| p.event().encoded_len()).collect();
        // The timestamp prints fewer digits when it ends in zeros.
        assert!(
            sizes
                .iter()
                .all(|n| (BODY_BYTES - 6..=BODY_BYTES).contains(n)),
            "{sizes:?}"
        );
    }
}
